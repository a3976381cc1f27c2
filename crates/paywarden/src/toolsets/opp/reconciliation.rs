//! How an OPP operation whose answer was lost is found at OPP and recorded.

use super::*;

impl Reconciler for OppService {
    type Op = Transaction;

    fn found(op: &Transaction) -> Found {
        Found {
            transaction_id: op.id.clone(),
            succeeded: op.result.is_success(),
        }
    }

    /// The operations on `intent.reference_id` of exactly its type, amount and currency that
    /// carry the key's derived reference (as `customParameters[PAYWARDEN_REF]`, or, from OPP
    /// answers without custom parameters, as the merchant reference paywarden chose). A
    /// caller's own `merchantTransactionId` never identifies an operation: it may be reused.
    async fn find(&self, caller: &Caller, intent: &Intent) -> Result<Vec<Transaction>, String> {
        let payment_type: PaymentType = intent
            .operation
            .parse()
            .map_err(|_| format!("unknown OPP payment type {:?}", intent.operation))?;
        let found = match self
            .client
            .query_by_id(
                &Self::credentials(caller),
                &intent.reference_id,
                true,
                &[payment_type],
            )
            .await
        {
            Ok(found) => found,
            Err(OppError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.to_string()),
        };
        Ok(found
            .into_iter()
            .filter(|t| {
                let marked = match t.custom_parameters.get(REFERENCE_PARAMETER) {
                    Some(m) => *m == intent.marker,
                    None => {
                        t.custom_parameters.is_empty()
                            && t.merchant_transaction_id.as_deref() == Some(intent.marker.as_str())
                    }
                };
                marked
                    && t.payment_type == payment_type
                    && t.referenced_id.as_deref() == Some(intent.reference_id.as_str())
                    && t.amount.currency().code() == intent.currency
                    && intent
                        .amount_minor
                        .is_none_or(|a| t.amount.minor_units() == a)
            })
            .collect())
    }

    async fn record(
        &self,
        caller: &Caller,
        intent: &Intent,
        tx: &Transaction,
    ) -> Result<ToolOutcome, ServiceError> {
        if !tx.result.is_success() {
            return Ok(self.rejection_outcome(
                &intent.tool,
                &tx.result,
                "OPP refused the operation (found at OPP after its answer was lost)",
                Some(tx),
                true,
            ));
        }
        self.pipeline
            .store()
            .record_movement(
                &caller.entity_id,
                TOOLSET,
                &intent.tool,
                &intent.reference_id,
                &tx.id,
                tx.amount.minor_units(),
                tx.amount.currency().code(),
            )
            .await?;
        let output = BackofficeOutput {
            status: "executed".into(),
            transaction: Some(tx.view()),
            balances: None,
            confirmation: None,
            approval: None,
            sandbox: self.pipeline.sandbox(),
            idempotent_replay: false,
            receipt: None,
        };
        let structured = serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
        let text = self.pipeline.decorate(&format!(
            "{}: paywarden had not heard OPP's answer, and OPP shows it went through: {} {} {} -> transaction {} (result {} {}).\n{structured}",
            intent.tool,
            tx.payment_type.description(),
            tx.amount.to_decimal_string(),
            tx.amount.currency().code(),
            tx.id,
            tx.result.code,
            tx.result.description
        ));
        Ok(ToolOutcome {
            structured_json: None,
            structured,
            is_error: false,
            text,
            audit: AuditFacts {
                outcome: "ok".into(),
                result_code: Some(tx.result.code.clone()),
                provider_request_id: tx.ndc.clone(),
                transaction_id: Some(tx.id.clone()),
                receipt: None,
            },
        })
    }
}
