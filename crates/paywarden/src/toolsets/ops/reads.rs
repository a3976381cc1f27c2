//! The ops reads: customers, payments, order history, revenue.

use super::*;

impl OpsService {
    /// `lookup_customer`: the orders-database record merged with the live Stripe customer.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for a malformed e-mail; [`ServiceError::Store`].
    pub async fn lookup_customer(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: EmailParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.read(caller, "lookup_customer", arguments, || async {
            let email = validate_email(&params.email)?;
            let (output, text) = match self.customer_profile(caller, &email).await? {
                Ok(found) => found,
                Err(outcome) => return Ok(outcome),
            };
            self.ok_serialized(&output, &text)
        })
        .await
    }

    /// The profile behind `lookup_customer` and `customer://{email}`.
    ///
    /// # Errors
    /// [`ServiceError::Store`]; `Ok(Err(outcome))` when the customer is unknown.
    pub async fn customer_profile(
        &self,
        caller: &Caller,
        email: &str,
    ) -> Result<Result<(LookupCustomerOutput, String), ToolOutcome>, ServiceError> {
        let customer = match self.customer_or_outcome(caller, email).await? {
            Ok(c) => c,
            Err(o) => return Ok(Err(o)),
        };
        let orders = self
            .pipeline
            .store()
            .orders_of(&caller.entity_id, &customer.id)
            .await?;
        let mut ltv: BTreeMap<String, i64> = BTreeMap::new();
        for o in &orders {
            *ltv.entry(o.currency.clone()).or_default() += o.amount_cents - o.refunded_cents;
        }
        let lifetime_value: Vec<AmountView> = ltv
            .into_iter()
            .map(|(currency, cents)| {
                let (amount, currency) = money(cents, &currency);
                AmountView {
                    currency,
                    amount_cents: cents,
                    amount,
                }
            })
            .collect();
        let stripe = match &customer.stripe_customer_id {
            None => StripeCustomerView {
                status: "not_linked".into(),
                id: None,
                email: None,
                name: None,
                error: None,
            },
            Some(id) => match self.stripe.customer(id).await {
                Ok(c) => StripeCustomerView {
                    status: "ok".into(),
                    id: Some(c.id),
                    email: c.email,
                    name: c.name,
                    error: None,
                },
                Err(StripeError::NotFound { .. }) => StripeCustomerView {
                    status: "missing".into(),
                    id: Some(id.clone()),
                    email: None,
                    name: None,
                    error: Some("Stripe has no such customer (deleted?)".into()),
                },
                Err(e) => StripeCustomerView {
                    status: "unavailable".into(),
                    id: Some(id.clone()),
                    email: None,
                    name: None,
                    error: Some(e.to_string()),
                },
            },
        };
        let count = |s: OrderStatus| orders.iter().filter(|o| o.status == s).count();
        let output = LookupCustomerOutput {
            customer: customer_view(&customer),
            order_count: orders.len(),
            paid_count: count(OrderStatus::Paid),
            refunded_count: count(OrderStatus::Refunded),
            partially_refunded_count: count(OrderStatus::PartiallyRefunded),
            lifetime_value: lifetime_value.clone(),
            stripe: stripe.clone(),
            sandbox: self.pipeline.sandbox(),
        };
        let text = format!(
            "Customer {} <{}> (internal id {}): {} orders ({} paid, {} refunded, {} partially refunded); lifetime value {}; Stripe {} ({}).",
            customer.name,
            customer.email,
            customer.id,
            output.order_count,
            output.paid_count,
            output.refunded_count,
            output.partially_refunded_count,
            lifetime_value
                .iter()
                .map(|a| format!("{} {}", a.amount, a.currency))
                .collect::<Vec<_>>()
                .join(", "),
            stripe.id.as_deref().unwrap_or("-"),
            stripe.status
        );
        Ok(Ok((output, text)))
    }

    /// `list_payments`: the customer's most recent Stripe PaymentIntents, with refunded
    /// amounts from their charges and the internal order each paid.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`]; [`ServiceError::Store`].
    pub async fn list_payments(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: ListPaymentsParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.read(caller, "list_payments", arguments, || async {
            let who =
                CustomerRef::from_params(params.email.as_deref(), params.customer.as_deref())?;
            let limit = params.limit.unwrap_or(5);
            if !(1..=100).contains(&limit) {
                return Err(invalid(format!("limit {limit} must be between 1 and 100")));
            }
            let customer = match self.customer_ref_or_outcome(caller, &who).await? {
                Ok(c) => c,
                Err(o) => return Ok(o),
            };
            let email = customer.email.clone();
            let Some(stripe_id) = customer.stripe_customer_id.clone() else {
                return Ok(
                    self.not_found(&format!("Customer '{email}' has no linked Stripe account."))
                );
            };
            let page = match self
                .stripe
                .payment_intents(Some(&stripe_id), u8::try_from(limit).unwrap_or(100), None)
                .await
            {
                Ok(p) => p,
                Err(e) => return Ok(self.stripe_failure("list_payments", &e, StripeCall::Read).0),
            };
            let mut payments = Vec::new();
            for pi in &page.data {
                payments.push(self.payment_view(caller, pi).await?);
            }
            let output = ListPaymentsOutput {
                customer: customer_view(&customer),
                payments,
                has_more: page.has_more,
                sandbox: self.pipeline.sandbox(),
            };
            let lines: Vec<String> = output
                .payments
                .iter()
                .map(|p| {
                    format!(
                        "- {} {} | {} | {} | intent {} | charge {} | refunded {}",
                        p.amount,
                        p.currency,
                        p.status,
                        p.created,
                        p.payment_intent_id,
                        p.charge_id.as_deref().unwrap_or("-"),
                        p.amount_refunded_cents
                            .map_or("?".into(), |c| money(c, &p.currency).0)
                    )
                })
                .collect();
            let text = format!(
                "Recent payments for {} ({email}), newest first:\n{}",
                customer.name,
                if lines.is_empty() {
                    "(none)".to_string()
                } else {
                    lines.join("\n")
                }
            );
            self.ok_serialized(&output, &text)
        })
        .await
    }

    pub(super) async fn payment_view(
        &self,
        caller: &Caller,
        pi: &PaymentIntent,
    ) -> Result<PaymentView, ServiceError> {
        let refunded = match &pi.latest_charge {
            Some(ch) => self
                .stripe
                .charge(ch)
                .await
                .ok()
                .map(|c| c.amount_refunded.minor_units()),
            None => None,
        };
        let order = self
            .pipeline
            .store()
            .order_by_charge(&caller.entity_id, &pi.id)
            .await?;
        Ok(PaymentView {
            payment_intent_id: pi.id.clone(),
            charge_id: pi.latest_charge.clone(),
            amount_cents: pi.amount.minor_units(),
            amount: pi.amount.to_decimal_string(),
            currency: pi.amount.currency().code().to_string(),
            status: pi.status.as_str().to_string(),
            amount_refunded_cents: refunded,
            created: stamp(pi.created),
            order_id: order.map(|o| o.id),
        })
    }

    /// `get_order_history`: the customer's orders from the orders database, with refunds.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`]; [`ServiceError::Store`].
    pub async fn get_order_history(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: EmailParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.read(caller, "get_order_history", arguments, || async {
            let email = validate_email(&params.email)?;
            self.refresh_pending_refunds(Some(&caller.entity_id)).await;
            let customer = match self.customer_or_outcome(caller, &email).await? {
                Ok(c) => c,
                Err(o) => return Ok(o),
            };
            let store = self.pipeline.store();
            let mut orders = Vec::new();
            for o in store.orders_of(&caller.entity_id, &customer.id).await? {
                let refunds = store
                    .refund_log(&caller.entity_id, &o.id)
                    .await?
                    .into_iter()
                    .map(|r| RefundLogView {
                        id: r.id,
                        stripe_refund_id: r.stripe_refund_id,
                        amount_cents: r.amount_cents,
                        reason: r.reason,
                        refunded_by: r.refunded_by,
                        created_at: stamp(r.created_at),
                        status: r.status,
                    })
                    .collect();
                orders.push(OrderHistoryEntry {
                    order: order_view(&o),
                    refunds,
                });
            }
            let lines: Vec<String> = orders
                .iter()
                .map(|e| {
                    format!(
                        "- {} {} | {} | {} | order {} | charge {}",
                        e.order.amount,
                        e.order.currency,
                        e.order.status,
                        e.order.created_at,
                        e.order.order_id,
                        e.order.stripe_charge_id.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            let output = OrderHistoryOutput {
                customer: customer_view(&customer),
                orders,
                sandbox: self.pipeline.sandbox(),
            };
            let text = format!(
                "Order history for {} ({email}), newest first:\n{}",
                customer.name,
                if lines.is_empty() {
                    "(none)".to_string()
                } else {
                    lines.join("\n")
                }
            );
            self.ok_serialized(&output, &text)
        })
        .await
    }

    /// The order behind `payment://{charge_id}`, with its refunds and live Stripe status.
    ///
    /// # Errors
    /// [`ServiceError::Store`]; `Ok(None)` when this entity has no such order.
    pub async fn payment_resource(
        &self,
        caller: &Caller,
        charge_id: &str,
    ) -> Result<Option<serde_json::Value>, ServiceError> {
        self.refresh_pending_refunds(Some(&caller.entity_id)).await;
        let store = self.pipeline.store();
        let Some(order) = store.order_by_charge(&caller.entity_id, charge_id).await? else {
            return Ok(None);
        };
        let customer = store
            .customer(&caller.entity_id, &order.customer_id)
            .await?;
        let refunds: Vec<serde_json::Value> = store
            .refund_log(&caller.entity_id, &order.id)
            .await?
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "stripe_refund_id": r.stripe_refund_id, "amount_cents": r.amount_cents,
                    "reason": r.reason, "refunded_by": r.refunded_by, "created_at": stamp(r.created_at),
                })
            })
            .collect();
        let stripe = match self.stripe.payment_intent(charge_id).await {
            Ok(pi) => serde_json::to_value(self.payment_view(caller, &pi).await?)
                .map_err(crate::store::StoreError::from)?,
            Err(e) => serde_json::json!({ "status": "unavailable", "error": e.to_string() }),
        };
        Ok(Some(serde_json::json!({
            "order": order_view(&order),
            "customer": customer.as_ref().map(customer_view),
            "refunds": refunds,
            "stripe": stripe,
            "sandbox": self.pipeline.sandbox(),
        })))
    }

    /// `revenue_summary`: orders paid in the range, net of refunds, per day and currency.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for bad or reversed dates; [`ServiceError::Store`].
    pub async fn revenue_summary(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: RevenueParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.read(caller, "revenue_summary", arguments, || async {
            let start = parse_day("start_date", &params.start_date)?;
            let end = parse_day("end_date", &params.end_date)?;
            if end < start {
                return Err(invalid(format!(
                    "end_date {end} is before start_date {start}; send start_date <= end_date"
                )));
            }
            if (end - start).num_days() > 3660 {
                return Err(invalid(
                    "the range is longer than 10 years; ask for a shorter one",
                ));
            }
            let lines = self
                .pipeline
                .store()
                .revenue(&caller.entity_id, start, end)
                .await?;
            let day = |day: String, currency: &str, orders: i64, gross: i64, refunded: i64| {
                let (net, code) = money(gross - refunded, currency);
                RevenueDay {
                    day,
                    currency: code,
                    orders,
                    gross_cents: gross,
                    refunded_cents: refunded,
                    net_cents: gross - refunded,
                    net,
                }
            };
            let days: Vec<RevenueDay> = lines
                .iter()
                .map(|l| {
                    day(
                        iso_day(l.day),
                        &l.currency,
                        l.orders,
                        l.gross_cents,
                        l.refunded_cents,
                    )
                })
                .collect();
            let mut per_currency: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
            for l in &lines {
                let t = per_currency.entry(l.currency.clone()).or_default();
                t.0 += l.orders;
                t.1 += l.gross_cents;
                t.2 += l.refunded_cents;
            }
            let totals: Vec<RevenueDay> = per_currency
                .iter()
                .map(|(c, (o, g, r))| day("total".into(), c, *o, *g, *r))
                .collect();
            let (start, end) = (iso_day(start), iso_day(end));
            let text = if totals.is_empty() {
                format!("No paid orders found between {start} and {end}.")
            } else {
                format!(
                    "Revenue {start} to {end} (paid orders net of refunds): {}",
                    totals
                        .iter()
                        .map(|t| format!("{} {} over {} orders", t.net, t.currency, t.orders))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            let output = RevenueOutput {
                start_date: start,
                end_date: end,
                days,
                totals,
            };
            self.ok_serialized(&output, &text)
        })
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Writes
    // -----------------------------------------------------------------------------------------
}
