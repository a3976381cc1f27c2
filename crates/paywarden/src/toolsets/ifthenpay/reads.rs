//! The ifthenpay reads: MB WAY status and the payments list.

use super::*;

impl IfthenpayService {
    pub(super) async fn mbway_status(
        &self,
        key: &ResolvedKey,
        request_id: &str,
    ) -> Result<ToolOutcome, crate::store::StoreError> {
        let Some(client) = &self.client else {
            return Ok(self.unconfigured());
        };
        // With a key the server holds, only the caller's own requests: ifthenpay would answer
        // for any request of the merchant account, other tenants' included.
        if key.held
            && self
                .pipeline
                .store()
                .ifthenpay_request_of(&key.entity, "MBWAY", request_id)
                .await?
                .is_none()
        {
            return Ok(self.error(
                "not_found",
                "No MB WAY request with this request_id was made by this entity with this server's key. Use the request_id that mbway_request_payment returned to you.",
            ));
        }
        match client.mbway_status(&key.key, request_id).await {
            Ok(status) => {
                let state = status.state;
                let message = match state {
                    crate::connectors::ifthenpay::MbwayState::Paid => {
                        "Payment approved".to_string()
                    }
                    crate::connectors::ifthenpay::MbwayState::Rejected => {
                        "Payment rejected by the customer".to_string()
                    }
                    crate::connectors::ifthenpay::MbwayState::Expired => {
                        "Payment request expired: not approved within 4 minutes".to_string()
                    }
                    crate::connectors::ifthenpay::MbwayState::Declined => {
                        "Payment declined or cancelled".to_string()
                    }
                    crate::connectors::ifthenpay::MbwayState::Pending => {
                        "Waiting for the customer to approve in the MB WAY app".to_string()
                    }
                    crate::connectors::ifthenpay::MbwayState::Unknown => status.message.clone(),
                };
                let fmt =
                    |t: Option<NaiveDateTime>| t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string());
                let out = MbwayStatusOutput {
                    status: state.as_str().to_string(),
                    status_code: status.code.clone(),
                    message,
                    created_at: fmt(status.created_at),
                    updated_at: fmt(status.updated_at),
                    sandbox: self.sandbox,
                };
                if state != crate::connectors::ifthenpay::MbwayState::Pending
                    && state != crate::connectors::ifthenpay::MbwayState::Unknown
                {
                    self.pipeline
                        .store()
                        .set_ifthenpay_status(&key.entity, request_id, state.as_str())
                        .await?;
                }
                let mut outcome = self.success(&out, Some(request_id.to_string()));
                outcome.audit.result_code = Some(status.code);
                Ok(outcome)
            }
            Err(e) => Ok(self.provider_failure(e).0),
        }
    }

    pub(super) async fn payments_list(
        &self,
        key: &ResolvedKey,
        query: &PaymentsQuery,
    ) -> Result<ToolOutcome, crate::store::StoreError> {
        let Some(client) = &self.client else {
            return Ok(self.unconfigured());
        };
        match client.payments_read(&key.key, query).await {
            Ok(mut records) => {
                if key.held {
                    // ifthenpay's backoffice lists the whole merchant account: keep the
                    // payments of this entity's own requests.
                    let own = self
                        .pipeline
                        .store()
                        .ifthenpay_requests(&key.entity)
                        .await?;
                    records.retain(|r| owns(&own, r));
                }
                let payments: Vec<PaymentView> = records
                    .into_iter()
                    .map(|r| {
                        let method = if r.entity.len() == 5
                            && r.entity.bytes().all(|b| b.is_ascii_digit())
                        {
                            "MB".to_string()
                        } else {
                            r.entity.to_ascii_uppercase()
                        };
                        PaymentView {
                            order_id: r.order_id,
                            amount: r.amount.to_decimal_string(),
                            status: "paid".into(),
                            entity: r.entity,
                            method,
                            reference: r.reference,
                            request_id: r.request_id,
                            payment_date: r
                                .payment_date
                                .map(|d| d.format("%d-%m-%Y %H:%M:%S").to_string()),
                        }
                    })
                    .collect();
                let out = PaymentsListOutput {
                    count: payments.len() as u64,
                    payments,
                    sandbox: self.sandbox,
                };
                Ok(self.success(&out, None))
            }
            Err(e) => Ok(self.provider_failure(e).0),
        }
    }
}
