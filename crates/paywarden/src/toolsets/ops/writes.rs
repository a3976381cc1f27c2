//! The ops writes that move no money now: review flags and payment links.

use super::*;

impl OpsService {
    /// `flag_for_review`: records a charge for a person to look at (moves no money).
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`]; [`ServiceError::Store`].
    pub async fn flag_for_review(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: FlagParams,
    ) -> Result<ToolOutcome, ServiceError> {
        let tool = "flag_for_review";
        let validated = validate_stripe_id("charge_id", &params.charge_id).and_then(|charge_id| {
            let note = params.note.trim().to_string();
            if note.is_empty() || note.chars().count() > 2000 {
                return Err(invalid(
                    "note must say, in 1 to 2000 characters, what a person should look at",
                ));
            }
            Ok((charge_id, note))
        });
        // A write (moves no money): refused in read-only mode, as the catalogue says.
        let (charge_id, note) = match self.admit_write(caller, tool, arguments, validated).await {
            Ok(v) => v,
            Err(refused) => return refused,
        };
        let note = note.as_str();
        self.read(caller, tool, arguments, || async {
            let store = self.pipeline.store();
            let Some(order) = store.order_by_charge(&caller.entity_id, &charge_id).await? else {
                return Ok(self.not_found(&format!(
                    "No order found with charge ID `{charge_id}`. Use the PaymentIntent id (pi_...) that list_payments or get_order_history shows."
                )));
            };
            let by = actor_label(caller);
            let flag = store.flag_for_review(&caller.entity_id, &order, note, &by).await?;
            let output = FlagOutput {
                flag_id: flag.id.clone(),
                order_id: flag.order_id,
                charge_id: flag.stripe_charge_id,
                note: flag.note,
                flagged_by: flag.flagged_by,
                status: flag.status,
            };
            let text = format!("Charge `{charge_id}` flagged for review (flag {}). Note: {note}", flag.id);
            let structured = serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
            Ok(self.ok(
                structured,
                text,
                AuditFacts { transaction_id: Some(charge_id.clone()), ..AuditFacts::default() },
            ))
        })
        .await
    }

    /// `create_payment_link`: a Stripe product, a one-time price and a payment link for it.
    /// It asks the customer for money and pays nothing out; with an `idempotency_key`, a retry
    /// returns the first link.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for no amount, a zero quantity, an unknown currency
    /// or an empty description; [`ServiceError::Store`].
    pub async fn create_payment_link(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: PaymentLinkParams,
    ) -> Result<ToolOutcome, ServiceError> {
        let tool = "create_payment_link";
        let validated = (|| {
            let currency = currency_of(params.currency.as_deref().unwrap_or("usd"))?;
            if params.amount_cents <= 0 {
                return Err(invalid(format!(
                    "amount_cents {} must be a positive number of minor units (4999 = 49.99)",
                    params.amount_cents
                )));
            }
            let amount = Money::from_minor(params.amount_cents, currency)
                .map_err(|e| invalid(e.to_string()))?;
            let quantity = params.quantity.unwrap_or(1);
            if !(1..=999).contains(&quantity) {
                return Err(invalid(format!(
                    "quantity {quantity} must be between 1 and 999"
                )));
            }
            let description = params.description.trim().to_string();
            if description.is_empty() || description.chars().count() > 250 {
                return Err(invalid(
                    "description must name what is sold, 1 to 250 characters",
                ));
            }
            if let Some(k) = &params.idempotency_key {
                if k.trim().is_empty() || k.len() > 200 {
                    return Err(invalid("idempotency_key must be 1 to 200 characters"));
                }
            }
            Ok((amount, quantity, description))
        })();
        let (amount, quantity, description) =
            match self.admit_write(caller, tool, arguments, validated).await {
                Ok(v) => v,
                Err(refused) => return refused,
            };
        // The policy decides a payment link like any call that asks for money (the built-in
        // rule `payment-links` allows it: the payer approves each payment); a verdict of
        // confirm or human goes through the gate, as for every other toolset.
        let defaults = serde_json::json!({
            "amount_cents": amount.minor_units(),
            "amount": amount.to_decimal_string(),
            "currency": amount.currency().code(),
            "quantity": quantity,
            "description": description,
        });
        let call = Call {
            toolset: TOOLSET,
            tool,
            arguments,
            binding: binding_hash(tool, arguments),
            idempotency_key: params.idempotency_key.as_deref(),
            confirmation_token: params.confirmation_token.as_deref(),
            approval_id: params.approval_id.as_deref(),
            argument_names: ("confirmation_token", "approval_id"),
            floor: Decision::Allow,
            output_defaults: defaults,
        };
        let op = PaymentLink {
            service: self,
            amount,
            quantity,
            description,
        };
        self.pipeline.run(caller, call, &op).await
    }
}

/// `create_payment_link` as the pipeline runs it ([`Operation`]): a creation, with no provider
/// state to check before it and no reconciliation (Stripe deduplicates a retry by its own
/// Idempotency-Key).
struct PaymentLink<'a> {
    service: &'a OpsService,
    amount: Money,
    quantity: u32,
    description: String,
}

impl Operation for PaymentLink<'_> {
    type Checked = ();
    type Error = StripeError;
    type Reconciler = NotReconciled;

    fn reconciler(&self) -> Option<&NotReconciled> {
        None
    }

    async fn check(&self, _: &Caller) -> Checked<()> {
        Ok(Ok(()))
    }

    fn assess(&self, caller: &Caller, _: &()) -> Assessment {
        let total = self
            .amount
            .minor_units()
            .saturating_mul(i64::from(self.quantity));
        let (total_text, currency_code) = money(total, self.amount.currency().code());
        Assessment {
            preview: PreviewView {
                tool: "create_payment_link".into(),
                operation: "Stripe payment link (asks a payer for money)".into(),
                entity: caller.entity_id.clone(),
                reference_id: "new payment link".into(),
                reference_payment_type: "payment_link".into(),
                amount: total_text,
                amount_minor: total,
                currency: currency_code,
                from: "whoever pays through the link".into(),
                to: format!("merchant entity {} (Stripe balance)", caller.entity_id),
                sandbox: self.service.pipeline.sandbox(),
            },
            transaction_age_days: None,
        }
    }

    fn lease(&self, _: &Caller, _: &()) -> Option<TransactionLease> {
        None
    }

    async fn recheck(&self, _: &Caller, _: (), _: Option<&str>) -> Checked<()> {
        Ok(Ok(()))
    }

    fn intent(&self, _: &Caller, _: &(), _: &str) -> Option<Intent> {
        None
    }

    async fn send(&self, caller: &Caller, _: (), key: Option<&str>) -> Sent<StripeError> {
        self.service
            .send_payment_link(caller, key, self.amount, self.quantity, &self.description)
            .await
    }

    fn failure(&self, error: StripeError) -> Stop {
        self.service
            .stripe_failure("create_payment_link", &error, StripeCall::Create)
    }
}

impl OpsService {
    /// Creates the product, the price and the payment link at Stripe, each with its own
    /// `Idempotency-Key` derived from the call's key.
    pub(super) async fn send_payment_link(
        &self,
        caller: &Caller,
        key: Option<&str>,
        amount: Money,
        quantity: u32,
        description: &str,
    ) -> Sent<StripeError> {
        let stripe_key = |step: &str| {
            key.map(|k| format!("{}-{step}", stripe_idempotency_key(&caller.entity_id, k)))
        };
        let product = match self
            .stripe
            .create_product(description, stripe_key("product").as_deref())
            .await
        {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let price = match self
            .stripe
            .create_price(&product.id, amount, stripe_key("price").as_deref())
            .await
        {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let mut metadata = BTreeMap::new();
        metadata.insert("paywarden_entity".to_string(), caller.entity_id.clone());
        let link = match self
            .stripe
            .create_payment_link(
                &[(price.id.as_str(), quantity)],
                &metadata,
                stripe_key("link").as_deref(),
            )
            .await
        {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let output = PaymentLinkOutput {
            status: "created".into(),
            url: Some(link.url.clone()),
            payment_link_id: Some(link.id.clone()),
            product_id: Some(product.id),
            price_id: Some(price.id),
            confirmation: None,
            approval: None,
            amount_cents: amount.minor_units(),
            amount: amount.to_decimal_string(),
            currency: amount.currency().code().to_string(),
            quantity,
            description: description.to_string(),
            sandbox: self.pipeline.sandbox(),
            idempotent_replay: false,
        };
        let text = format!(
            "Payment link created: {}\nAmount: {} {} x {quantity} | Description: {description}",
            link.url,
            amount.to_decimal_string(),
            amount.currency().code()
        );
        let structured = serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
        Ok(Ok((
            self.ok(
                structured,
                text,
                AuditFacts {
                    transaction_id: Some(link.id),
                    ..AuditFacts::default()
                },
            ),
            Settlement::Final,
        )))
    }
}
