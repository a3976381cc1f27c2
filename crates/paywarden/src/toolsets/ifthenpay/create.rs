//! Creations (references, payment requests) through the pipeline, and their replays.

use super::*;

impl IfthenpayService {
    /// A creation through the safety layer: read-only, policy, then the idempotent write.
    pub(super) async fn create(
        &self,
        identity: &Identity,
        tool: &str,
        args: &Value,
        key: ResolvedKey,
        creation: Creation,
    ) -> Result<ToolOutcome, ServiceError> {
        let caller = Self::pipeline_caller(identity, &key.entity);
        let refuse = |outcome: ToolOutcome| {
            let caller = caller.clone();
            async move {
                self.pipeline
                    .read(&caller, TOOLSET, tool, args, || async { Ok(outcome) })
                    .await
            }
        };
        if self.pipeline.safety().config.read_only {
            return refuse(self.error(
                "read_only",
                &format!("{tool} is refused: this paywarden runs in read-only mode, where no payment request is created."),
            ))
            .await;
        }
        let amount = creation.amount();
        let input = PolicyInput {
            toolset: TOOLSET.into(),
            tool: tool.into(),
            entity: key.entity.clone(),
            moves_money: true,
            amount_minor: Some(amount.minor_units()),
            currency: Some(amount.currency().code().to_string()),
            transaction_age_days: None,
            moved_today_minor: self
                .pipeline
                .store()
                .moved_today(&key.entity, amount.currency().code())
                .await?,
            client: caller.client_name.clone(),
        };
        let verdict = match self.pipeline.safety().policy.evaluate(&input) {
            Ok(v) => v,
            Err(e) => {
                return refuse(self.error(
                    "policy_error",
                    &format!("{tool} is refused: the policy could not be evaluated ({e}); nothing was created."),
                ))
                .await
            }
        };
        // A denial keeps this toolset's wording; `confirm` and `human` go through the gate
        // below, as every toolset's money-moving calls do.
        if verdict.decision == Decision::Deny {
            return refuse(self.error(
                "denied_by_policy",
                &format!(
                    "{tool} is denied by policy rule {:?}: {}. Nothing was created; do not retry.",
                    verdict.rule, verdict.message
                ),
            ))
            .await;
        }
        // One order id, one request, per entity and tool: the idempotency key names the entity
        // (the pipeline also stores it per entity). An order id this entity already used under
        // a key of another form (before 0006 rewrote them, or with two keys) is refused too.
        let idempotency_key = creation_key(tool, &key.entity, creation.order_id());
        let store = self.pipeline.store();
        if store
            .idempotency_key(&key.entity, &idempotency_key)
            .await?
            .is_none()
            && store
                .ifthenpay_order_used(&key.entity, tool, creation.order_id())
                .await?
        {
            return refuse(self.order_id_conflict(creation.order_id())).await;
        }
        let control = |name: &str| args.get(name).and_then(Value::as_str);
        let call = Call {
            toolset: TOOLSET,
            tool,
            arguments: args,
            binding: binding_hash(tool, args),
            idempotency_key: None,
            confirmation_token: control("confirmation_token"),
            approval_id: control("approval_id"),
            argument_names: ("confirmation_token", "approval_id"),
            floor: Decision::Allow,
            output_defaults: json!({}),
        };
        // The gate: `confirm` previews with a single-use token, `human` stores an approval
        // only an operator decides; the call executes only on their return.
        let op = Create {
            service: self,
            tool,
            key: &key,
            creation,
        };
        let outcome = self.pipeline.run(&caller, call, &op).await?;
        Ok(self.finish(outcome, args))
    }

    /// Rewrites pipeline-made outcomes (replays, key conflicts) into this toolset's shape: JSON
    /// text for results, the plain message for errors.
    pub(super) fn finish(&self, mut outcome: ToolOutcome, args: &Value) -> ToolOutcome {
        // A key used with other arguments is this toolset's order-id conflict; a key still in
        // progress, or whose outcome is unknown, keeps the pipeline's message (it says what
        // happened and what to do).
        let reused = outcome.structured["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("was already used by"));
        if outcome.structured["error"]["kind"] == "idempotency_key_conflict" && reused {
            let order = args
                .get("order_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return self.order_id_conflict(order);
        }
        if outcome.is_error && outcome.text.starts_with("[SANDBOX") {
            // Pipeline-made errors (a key still in progress, an unknown outcome) carry the
            // sandbox banner line; this toolset's errors are the plain message.
            if let Some((_, message)) = outcome.text.split_once('\n') {
                outcome.text = message.to_string();
            }
        }
        if !outcome.is_error
            && matches!(
                outcome.structured.get("status").and_then(Value::as_str),
                Some("confirmation_required" | "approval_pending")
            )
        {
            // The gate's preview or approval request: the text is the JSON, as for every
            // result of this toolset (the instructions are in `confirmation` / `approval`).
            outcome.text = to_json(&outcome.structured);
        }
        if outcome.audit.outcome == "replay" {
            if outcome.is_error {
                outcome.text = outcome
                    .structured
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or(outcome.text);
            } else if let Some(original) = outcome.text.lines().last() {
                // The pipeline prefixes the first call's text (one line of JSON) with a replay
                // note; the text stays the seed's JSON, and says `idempotentReplay: true` as
                // `structuredContent` does.
                outcome.text = replay_text(original, &outcome.structured);
            }
        }
        outcome
    }

    /// The refusal of an order id this entity already used for this tool with other arguments.
    pub(super) fn order_id_conflict(&self, order: &str) -> ToolOutcome {
        self.error(
            "order_id_conflict",
            &format!("order_id {order:?} was already used with other arguments (a different amount or details); a payment request for this order exists already. Use a new order_id for a new request, or resend the original arguments to get the original result."),
        )
    }

    pub(super) async fn execute(
        &self,
        caller: &Caller,
        tool: &str,
        key: &ResolvedKey,
        creation: Creation,
    ) -> Sent<IfthenpayError> {
        let Some(client) = &self.client else {
            return Ok(Ok((self.unconfigured(), Settlement::NotSent)));
        };
        let amount = creation.amount();
        let amount_text = amount.to_decimal_string();
        let method = creation.method();
        let order_id = creation.order_id().to_string();
        let sandbox = self.sandbox;
        // (output as JSON text, request id, Multibanco entity, reference)
        let result: Result<Created, IfthenpayError> = match creation {
            Creation::Multibanco {
                order_id,
                amount,
                expiry_days,
            } => client
                .multibanco_init(&key.key, &order_id, amount, expiry_days)
                .await
                .map(|r| {
                    let out = MultibancoOutput {
                        entity: r.entity.clone(),
                        reference: r.reference.clone(),
                        amount: r.amount.to_decimal_string(),
                        expiry_date: r.expiry_date.map(|d| d.format("%Y%m%d").to_string()),
                        request_id: r.request_id.clone(),
                        sandbox,
                    };
                    (
                        to_json(&out),
                        Some(r.request_id),
                        Some(r.entity),
                        Some(r.reference),
                    )
                }),
            Creation::Mbway {
                order_id,
                amount,
                phone,
                description,
            } => client
                .mbway_init(&key.key, &order_id, amount, &phone, description.as_deref())
                .await
                .map(|request_id| {
                    let out = MbwayRequestOutput {
                        request_id: request_id.clone(),
                        status: "pending".into(),
                        message: "Payment request sent".into(),
                        sandbox,
                    };
                    (to_json(&out), Some(request_id), None, None)
                }),
            Creation::Payshop {
                order_id,
                amount,
                expiry,
            } => client
                .payshop_init(&key.key, &order_id, amount, expiry)
                .await
                .map(|r| {
                    let out = PayshopOutput {
                        reference: r.reference.clone(),
                        request_id: r.request_id.clone(),
                        amount: amount_text.clone(),
                        sandbox,
                    };
                    (to_json(&out), Some(r.request_id), None, Some(r.reference))
                }),
            Creation::Card { body, .. } | Creation::Cofidis { body, .. } => {
                let checkout = if method == "CCARD" {
                    client.creditcard_init(&key.key, &body).await
                } else {
                    client.cofidis_init(&key.key, &body).await
                };
                checkout.map(|c| {
                    let out = CheckoutOutput {
                        payment_url: c.payment_url,
                        request_id: c.request_id.clone(),
                        amount: amount_text.clone(),
                        sandbox,
                    };
                    (to_json(&out), Some(c.request_id), None, None)
                })
            }
            Creation::Pix { body, .. } => client.pix_init(&key.key, &body).await.map(|c| {
                let out = PixOutput {
                    request_id: c.request_id.clone(),
                    payment_url: c.payment_url,
                    qr_code_value: c.qr_code_value,
                    amount: amount_text.clone(),
                    sandbox,
                };
                (to_json(&out), Some(c.request_id), None, None)
            }),
            Creation::Pinpay { body, .. } => client.pinpay_init(&key.key, &body).await.map(|l| {
                let out = PinpayOutput {
                    redirect_url: l.redirect_url,
                    pinpay_url: l.pinpay_url,
                    pin_code: l.pin_code.clone(),
                    amount: amount_text.clone(),
                    sandbox,
                };
                (to_json(&out), None, None, l.pin_code)
            }),
        };
        match result {
            Ok((text, request_id, mb_entity, reference)) => {
                self.pipeline
                    .store()
                    .record_ifthenpay_request(&NewIfthenpayRequest {
                        entity_id: caller.entity_id.clone(),
                        tool: tool.to_string(),
                        method: method.to_string(),
                        key_id: key.id.clone(),
                        order_id,
                        request_id: request_id.clone(),
                        mb_entity,
                        reference,
                        amount_minor: amount.minor_units(),
                        currency: amount.currency().code().to_string(),
                    })
                    .await?;
                let structured: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let mut outcome = self.success(&structured, request_id);
                outcome.text = text;
                Ok(Ok((outcome, Settlement::Final)))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

/// The idempotency key of a creation: one order id, one request, per entity and tool (the key
/// names the entity; the pipeline also stores it per entity).
fn creation_key(tool: &str, entity: &str, order_id: &str) -> String {
    format!("ifthenpay:{tool}:{entity}:{order_id}")
}

/// A creation as the pipeline runs it ([`Operation`]): ifthenpay has no state to read before
/// it (paywarden's own records refuse a reused `order_id`), nothing to lease, and its unknown
/// outcomes wait for an operator.
struct Create<'a> {
    service: &'a IfthenpayService,
    tool: &'a str,
    key: &'a ResolvedKey,
    creation: Creation,
}

impl Operation for Create<'_> {
    type Checked = Creation;
    type Error = IfthenpayError;
    type Reconciler = NotReconciled;

    fn key(&self, _: &Caller, _: &Call<'_>) -> Option<String> {
        Some(creation_key(
            self.tool,
            &self.key.entity,
            self.creation.order_id(),
        ))
    }

    fn reconciler(&self) -> Option<&NotReconciled> {
        None
    }

    async fn check(&self, _: &Caller) -> Checked<Creation> {
        Ok(Ok(self.creation.clone()))
    }

    fn assess(&self, _: &Caller, creation: &Creation) -> Assessment {
        let amount = creation.amount();
        Assessment {
            preview: PreviewView {
                tool: self.tool.into(),
                operation: format!("ifthenpay {} payment request", creation.method()),
                entity: self.key.entity.clone(),
                reference_id: creation.order_id().to_string(),
                reference_payment_type: "order".into(),
                amount: amount.to_decimal_string(),
                amount_minor: amount.minor_units(),
                currency: amount.currency().code().to_string(),
                from: format!("the shopper ({})", creation.method()),
                to: format!("merchant {} through ifthenpay", self.key.entity),
                sandbox: self.service.sandbox,
            },
            transaction_age_days: None,
        }
    }

    fn lease(&self, _: &Caller, _: &Creation) -> Option<TransactionLease> {
        None
    }

    async fn recheck(&self, _: &Caller, creation: Creation, _: Option<&str>) -> Checked<Creation> {
        Ok(Ok(creation))
    }

    fn intent(&self, _: &Caller, _: &Creation, _: &str) -> Option<Intent> {
        None
    }

    fn send(
        &self,
        caller: &Caller,
        creation: Creation,
        _: Option<&str>,
    ) -> impl Future<Output = Sent<IfthenpayError>> + Send {
        self.service.execute(caller, self.tool, self.key, creation)
    }

    fn failure(&self, error: IfthenpayError) -> Stop {
        self.service.provider_failure(error)
    }
}
