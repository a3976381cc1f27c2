//! The six back-office operations: validation, check on fresh state, preview, gate, execution.

use super::*;

impl OppService {
    /// Validates raw back-office parameters for `operation`.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] naming the bad field and the expected form.
    pub fn validate_backoffice(
        operation: Operation,
        params: BackofficeParams,
    ) -> Result<BackofficeCommand, ServiceError> {
        let reference_id = validate_id("referenceId", &params.reference_id)?;
        let amount = parse_amount(params.amount.as_deref(), params.currency.as_deref())?;
        if operation == Operation::Rebill && amount.is_none() {
            return Err(invalid(
                "perform_rebill needs amount and currency: the additional amount to charge, e.g. amount \"5.00\", currency \"EUR\"",
            ));
        }
        let idempotency_key = match params.idempotency_key {
            Some(k) if k.trim().is_empty() || k.len() > 255 => {
                return Err(invalid("idempotencyKey must be 1 to 255 characters"))
            }
            other => other,
        };
        let confirmation_token = match params.confirmation_token {
            Some(t) if t.trim().is_empty() || t.len() > 100 => {
                return Err(invalid(
                    "confirmationToken must be the token a preview returned (pwc_...)",
                ))
            }
            other => other,
        };
        let approval_id = match params.approval_id {
            Some(a) if a.trim().is_empty() || a.len() > 100 => {
                return Err(invalid(
                    "approvalId must be the id an approval request returned (apr_...)",
                ))
            }
            other => other,
        };
        Ok(BackofficeCommand {
            operation,
            reference_id,
            amount,
            merchant_transaction_id: validate_merchant_reference(params.merchant_transaction_id)?,
            idempotency_key,
            confirmation_token,
            approval_id,
        })
    }

    /// Runs a back-office tool through the whole pipeline: validation, idempotency (a retry
    /// replays the first outcome), OPP's state rules and the refund window, policy
    /// (allow / confirm / human / deny), then, under a per-transaction lease, the rules again
    /// on fresh provider state and the OPP call, then audit.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for malformed arguments (audited);
    /// [`ServiceError::Store`] when paywarden's database fails. Rejections, previews and
    /// approval requests are outcomes, not errors.
    pub async fn backoffice(
        &self,
        caller: &Caller,
        operation: Operation,
        arguments: &serde_json::Value,
        params: BackofficeParams,
    ) -> Result<ToolOutcome, ServiceError> {
        let tool = tool_of(operation);
        let command = match Self::validate_backoffice(operation, params) {
            Ok(c) => c,
            Err(e) => {
                return self
                    .pipeline
                    .read(caller, TOOLSET, tool, arguments, || async { Err(e) })
                    .await
            }
        };
        if self.pipeline.safety().config.read_only {
            let outcome = self.pipeline.error_outcome(
                "read_only",
                &format!("{tool} is refused: this paywarden runs in read-only mode, where no tool moves money."),
                None,
            );
            return self
                .pipeline
                .read(caller, TOOLSET, tool, arguments, || async { Ok(outcome) })
                .await;
        }
        let binding = binding_hash(tool, arguments);
        // With no key of its own, a confirmed or approved call is keyed by its token or
        // approval, so a retry of it can never move money twice.
        let key = derived_key(
            command.idempotency_key.as_deref(),
            command.confirmation_token.as_deref(),
            command.approval_id.as_deref(),
        );
        let mut command = command;
        if let Some(key) = &key {
            // The key reaches OPP in OPP's own form, the merchant reference, unless the caller
            // chose one: that is how an unknown outcome is looked up before any retry.
            if command.merchant_transaction_id.is_none() {
                command.merchant_transaction_id =
                    Some(derived_merchant_reference(&caller.entity_id, key));
            }
        }
        // Operations that reached OPP after their key was released are recorded and reported
        // first; then an unknown outcome of this key is resolved at OPP before anything is sent.
        self.pipeline.check_late(self, caller, TOOLSET).await;
        if let Some(key) = &key {
            self.pipeline.reconcile(self, caller, key, &binding).await?;
        }
        self.pipeline
            .write(caller, TOOLSET, tool, arguments, key.as_deref(), || {
                self.decide(caller, command, arguments, binding, key.clone())
            })
            .await
    }

    /// Reads the referenced transaction's payment from OPP and applies OPP's state rules and
    /// the refund window. `Ok(Err(outcome))` is a refusal to return as is.
    pub(super) async fn check(
        &self,
        caller: &Caller,
        command: &BackofficeCommand,
    ) -> Result<
        Result<(Transaction, Vec<Transaction>, Money), (ToolOutcome, Settlement)>,
        ServiceError,
    > {
        let tool = tool_of(command.operation);
        let credentials = Self::credentials(caller);
        let linked = match self
            .client
            .query_by_id(&credentials, &command.reference_id, true, &[])
            .await
        {
            Ok(linked) => linked,
            Err(OppError::NotFound { .. }) => {
                let (code, description) =
                    paywarden_domain::result_code::codes::REFERENCE_NOT_EXISTING;
                return Ok(Err((
                    self.rejection_outcome(
                        tool,
                        &ResultInfo::new(code, description),
                        &format!(
                            "no transaction {} exists for entity {}",
                            command.reference_id, caller.entity_id
                        ),
                        None,
                        false,
                    ),
                    Settlement::Final,
                )));
            }
            Err(e) => return Ok(Err(self.provider_failure(tool, e, true))),
        };
        let Some(target) = linked
            .iter()
            .find(|t| t.id == command.reference_id)
            .cloned()
        else {
            let (code, description) = paywarden_domain::result_code::codes::REFERENCE_NOT_EXISTING;
            return Ok(Err((
                self.rejection_outcome(
                    tool,
                    &ResultInfo::new(code, description),
                    &format!(
                        "OPP's answer did not include transaction {}",
                        command.reference_id
                    ),
                    None,
                    false,
                ),
                Settlement::Final,
            )));
        };
        let tree: Vec<_> = linked.iter().map(Transaction::ledger_record).collect();
        let amount = match ledger::evaluate(
            command.operation,
            &target.ledger_record(),
            &tree,
            command.amount,
        ) {
            Ok(amount) => amount,
            Err(rejection) => {
                return Ok(Err((
                    self.rejection_outcome(
                        tool,
                        &ResultInfo::new(rejection.code, rejection.description),
                        &rejection.reason,
                        None,
                        false,
                    ),
                    Settlement::Final,
                )))
            }
        };
        if command.operation == Operation::Refund {
            let window = self.pipeline.safety().config.refund_window_days;
            if let Some(at) = target.timestamp {
                let age = Utc::now() - at;
                if age > ChronoDuration::days(window) {
                    return Ok(Err((
                        self.pipeline.error_outcome(
                            "refund_window",
                            &format!(
                                "{tool} is refused: {} {} was made {} days ago, past the {window}-day refund window. paywarden refuses refunds of older payments whatever is asked; handle this case outside the agent.",
                                target.payment_type.code(),
                                target.id,
                                age.num_days()
                            ),
                            None,
                        ),
                        Settlement::Final,
                    )));
                }
            }
        }
        Ok(Ok((target, linked, amount)))
    }

    pub(super) fn preview(
        &self,
        caller: &Caller,
        command: &BackofficeCommand,
        target: &Transaction,
        linked: &[Transaction],
        amount: Money,
    ) -> PreviewView {
        // The card of the payment's initial transaction names the shopper.
        let card = linked
            .iter()
            .filter(|t| t.card.is_some())
            .find(|t| {
                matches!(
                    t.payment_type,
                    PaymentType::Preauthorization | PaymentType::Debit
                )
            })
            .and_then(|t| t.card.clone());
        let shopper = match card {
            Some(c) => format!(
                "the shopper's card {}****{}{}",
                c.bin.as_deref().unwrap_or(""),
                c.last4_digits.as_deref().unwrap_or("????"),
                c.holder.map(|h| format!(" ({h})")).unwrap_or_default()
            ),
            None => "the shopper".to_string(),
        };
        let merchant = format!("merchant entity {}", caller.entity_id);
        let (from, to) = match command.operation {
            Operation::Capture | Operation::Rebill => (shopper, merchant),
            Operation::Refund | Operation::Chargeback => (merchant, shopper),
            Operation::ChargebackReversal => (shopper, merchant),
            Operation::Reversal => (
                format!("{shopper} (the authorisation hold is released)"),
                "nobody: nothing is settled".to_string(),
            ),
        };
        PreviewView {
            tool: tool_of(command.operation).to_string(),
            operation: format!(
                "{} ({})",
                command.operation.payment_type().description(),
                command.operation.payment_type().code()
            ),
            entity: caller.entity_id.clone(),
            reference_id: target.id.clone(),
            reference_payment_type: target.payment_type.code().to_string(),
            amount: amount.to_decimal_string(),
            amount_minor: amount.minor_units(),
            currency: amount.currency().code().to_string(),
            from,
            to,
            sandbox: self.pipeline.sandbox(),
        }
    }

    pub(super) async fn decide(
        &self,
        caller: &Caller,
        command: BackofficeCommand,
        arguments: &serde_json::Value,
        binding: String,
        key: Option<String>,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = tool_of(command.operation);
        let (target, linked, amount) = match self.check(caller, &command).await? {
            Ok(checked) => checked,
            Err(refusal) => return Ok(refusal),
        };
        let moved_today = self
            .pipeline
            .store()
            .moved_today(&caller.entity_id, amount.currency().code())
            .await?;
        let policy = PolicyInput {
            toolset: TOOLSET.into(),
            tool: tool.into(),
            entity: caller.entity_id.clone(),
            moves_money: true,
            amount_minor: Some(amount.minor_units()),
            currency: Some(amount.currency().code().to_string()),
            transaction_age_days: target.timestamp.map(|t| (Utc::now() - t).num_days()),
            moved_today_minor: moved_today,
            client: caller.client_name.clone(),
        };
        let preview = self.preview(caller, &command, &target, &linked, amount);
        let gate = self
            .pipeline
            .gate(GateRequest {
                caller,
                toolset: TOOLSET,
                tool,
                arguments,
                binding: &binding,
                preview,
                policy,
                floor: Decision::Allow,
                confirmation_token: command.confirmation_token.as_deref(),
                approval_id: command.approval_id.as_deref(),
                argument_names: ("confirmationToken", "approvalId"),
                output_defaults: serde_json::json!({ "balances": null }),
                key: key.as_deref(),
            })
            .await?;
        match gate {
            Gate::Stop(outcome, settlement) => Ok((outcome, settlement)),
            Gate::Execute(claims) => {
                let (mut outcome, settlement) = self
                    .execute_locked(caller, &command, key.as_deref())
                    .await?;
                self.pipeline
                    .attach_receipt(&claims, &mut outcome, settlement, "opp");
                self.pipeline
                    .finish_gated(&claims, &outcome, settlement)
                    .await
                    .map_err(|e| match (e, settlement) {
                        (ServiceError::Store(source), Settlement::Final | Settlement::Unknown) => {
                            self.pipeline.unrecorded(source)
                        }
                        (e, _) => e,
                    })?;
                Ok((outcome, settlement))
            }
        }
    }

    pub(super) fn approval_view(&self, approval: &Approval) -> ApprovalView {
        self.pipeline.approval_view(approval)
    }

    /// Holds the per-transaction lease, re-checks OPP's rules on fresh provider state, and
    /// sends the operation. Concurrent operations on one transaction run one after another,
    /// across processes sharing the database.
    pub(super) async fn execute_locked(
        &self,
        caller: &Caller,
        command: &BackofficeCommand,
        key: Option<&str>,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = tool_of(command.operation);
        let store = self.pipeline.store();
        let holder = uuid::Uuid::new_v4().to_string();
        // The lease outlives the provider timeout, so a crashed holder cannot block forever.
        let lease = ChronoDuration::milliseconds(
            i64::try_from(self.client.timeout().as_millis()).unwrap_or(i64::MAX / 4) * 3 + 5_000,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if store
                .try_lock_transaction(&caller.entity_id, &command.reference_id, &holder, lease)
                .await?
            {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Ok((
                    self.pipeline.error_outcome(
                        "busy",
                        &format!("{tool}: another operation on {} has been running for 30 s; nothing was sent. Retry with the same idempotencyKey.", command.reference_id),
                        None,
                    ),
                    Settlement::NotSent,
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        }
        let result = self.execute_unlocked(caller, command, key).await;
        // Past the send, a failure to give the lease back must not hide the outcome: the
        // lease runs out on its own.
        if let Err(e) = store
            .unlock_transaction(&caller.entity_id, &command.reference_id, &holder)
            .await
        {
            tracing::warn!(error = %e, "could not release a transaction lease; it runs out on its own");
        }
        result
    }

    /// Sends the operation. With an idempotency key, the operation carries paywarden's derived
    /// reference of the key (`customParameters[PAYWARDEN_REF]`), and what is sent is recorded on
    /// the key first ([`Intent`]), so an outcome paywarden never hears is found at OPP later.
    /// Once sent, no failure says that nothing was sent.
    pub(super) async fn execute_unlocked(
        &self,
        caller: &Caller,
        command: &BackofficeCommand,
        key: Option<&str>,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = tool_of(command.operation);
        let (target, linked, amount) = match self.check(caller, command).await? {
            Ok(checked) => checked,
            Err(refusal) => return Ok(refusal),
        };
        let tree: Vec<_> = linked.iter().map(Transaction::ledger_record).collect();
        let credentials = Self::credentials(caller);
        // An explicit amount (OPP requires one) except for a reversal, which voids the whole
        // authorisation.
        let sent_amount = (command.operation != Operation::Reversal).then_some(amount);
        let marker = key.map(|k| derived_merchant_reference(&caller.entity_id, k));
        let request = BackofficeRequest {
            payment_type: command.operation.payment_type(),
            amount: sent_amount,
            merchant_transaction_id: command.merchant_transaction_id.clone(),
            custom_parameters: marker
                .iter()
                .map(|m| (REFERENCE_PARAMETER.to_string(), m.clone()))
                .collect(),
        };
        if let (Some(key), Some(marker)) = (key, marker) {
            let intent = Intent {
                toolset: TOOLSET.into(),
                tool: tool.into(),
                reference_id: command.reference_id.clone(),
                operation: command.operation.payment_type().code().into(),
                amount_minor: sent_amount.map(|m| m.minor_units()),
                currency: amount.currency().code().into(),
                marker,
                settle_window_ms: u64::try_from(self.pipeline.settle_window().as_millis())
                    .unwrap_or(u64::MAX),
                extra: serde_json::Value::Null,
            };
            self.pipeline
                .store()
                .record_idempotent_intent(
                    &caller.entity_id,
                    key,
                    &serde_json::to_value(&intent).map_err(crate::store::StoreError::from)?,
                )
                .await?;
        }
        match self
            .client
            .backoffice(&credentials, &command.reference_id, &request)
            .await
        {
            Ok(created) => match self
                .executed(caller, command, &target, &tree, &created)
                .await
            {
                Ok(done) => Ok(done),
                // OPP executed it but paywarden could not record it: the key stays blocked as
                // an unknown outcome, and the retry finds the operation at OPP and records it.
                Err(e) => {
                    tracing::error!(error = %e, transaction = %created.id, "OPP executed an operation paywarden could not record yet");
                    Ok((
                        self.pipeline.error_outcome(
                            "not_recorded",
                            &format!(
                                "{tool}: OPP executed it (transaction {}, {} {}), but paywarden could not record it ({e}). Do not start a new operation: retry this exact call with the same idempotencyKey; paywarden finds it at OPP and records it, and never sends it twice.",
                                created.id,
                                created.amount.to_decimal_string(),
                                created.amount.currency().code()
                            ),
                            Some(&created.result.code),
                        ),
                        Settlement::Unknown,
                    ))
                }
            },
            Err(OppError::Rejected {
                result,
                transaction,
            }) => Ok((
                self.rejection_outcome(
                    tool,
                    &result,
                    "OPP refused the operation",
                    transaction.as_deref(),
                    true,
                ),
                Settlement::Final,
            )),
            Err(e) => Ok(self.provider_failure(tool, e, false)),
        }
    }

    /// Records an operation OPP executed (the movement) and builds the tool's outcome.
    pub(super) async fn executed(
        &self,
        caller: &Caller,
        command: &BackofficeCommand,
        target: &Transaction,
        tree: &[paywarden_domain::TxRecord],
        created: &Transaction,
    ) -> Result<(ToolOutcome, Settlement), crate::store::StoreError> {
        let tool = tool_of(command.operation);
        self.pipeline
            .store()
            .record_movement(
                &caller.entity_id,
                TOOLSET,
                tool,
                &target.id,
                &created.id,
                created.amount.minor_units(),
                created.amount.currency().code(),
            )
            .await?;
        let mut after = tree.to_vec();
        after.push(created.ledger_record());
        let balances = balances_view(target, &after);
        let output = BackofficeOutput {
            status: "executed".into(),
            transaction: Some(created.view()),
            balances: Some(balances.clone()),
            confirmation: None,
            approval: None,
            sandbox: self.pipeline.sandbox(),
            idempotent_replay: false,
            receipt: None,
        };
        let summary = format!(
            "{tool} succeeded: {} {} on {} {} -> new {} transaction {} (result {} {}). {} now: captured {} {cur}, refunded {} {cur}, capturable {} {cur}, refundable {} {cur}.",
            created.payment_type.description(),
            money_text(created.amount),
            target.payment_type.code(),
            target.id,
            created.payment_type.code(),
            created.id,
            created.result.code,
            created.result.description,
            target.id,
            balances.captured,
            balances.refunded,
            balances.capturable,
            balances.refundable,
            cur = balances.currency,
        );
        let structured = serde_json::to_value(&output)?;
        Ok((
            ToolOutcome {
                text: self
                    .pipeline
                    .decorate(&format!("{summary}\n{}", structured)),
                structured,
                is_error: false,
                audit: AuditFacts {
                    outcome: "ok".into(),
                    result_code: Some(created.result.code.clone()),
                    provider_request_id: created.ndc.clone(),
                    transaction_id: Some(created.id.clone()),
                    receipt: None,
                },
            },
            Settlement::Final,
        ))
    }
}
