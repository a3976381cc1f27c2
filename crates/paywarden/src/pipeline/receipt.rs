//! Record the movement: the signed receipt of an executed money movement, tied to its audit row.

use super::*;

impl Pipeline {
    /// Marks an executed movement for a receipt: when the gate's `claims` let it run and it
    /// settled as a success (`Final`, not an error), the outcome carries a
    /// [`crate::receipts::ReceiptDraft`] that [`Pipeline::write`] signs once the execution's
    /// audit row exists. `provider` names the provider (`opp`, `stripe`).
    pub fn attach_receipt(
        &self,
        claims: &gate::Claims,
        outcome: &mut ToolOutcome,
        settlement: Settlement,
        provider: &str,
    ) {
        let Some(basis) = &claims.receipt else {
            return;
        };
        if settlement == Settlement::Final && !outcome.is_error {
            outcome.audit.receipt = Some(Box::new(crate::receipts::ReceiptDraft {
                basis: basis.clone(),
                approval_id: claims.approval_id.clone(),
                confirmation: claims.confirmation.clone(),
                provider: provider.into(),
            }));
        }
    }

    /// When `outcome` carries a receipt draft: appends the execution's audit row, signs the
    /// receipt naming that row's `seq` and `hash`, stores it and adds it to the structured
    /// result (`receipt`) and the text. Returns whether the audit row was appended (then the
    /// caller must not append it again). A receipt that cannot be made is logged, never turned
    /// into a failure: the money has moved.
    pub(super) async fn seal_receipt(
        &self,
        caller: &Caller,
        toolset: &str,
        tool: &str,
        arguments: &serde_json::Value,
        outcome: &mut ToolOutcome,
        started: Instant,
    ) -> bool {
        let Some(draft) = outcome.audit.receipt.take() else {
            return false;
        };
        let Some(signer) = &self.receipts else {
            return false;
        };
        let row = match self
            .audit_row(caller, toolset, tool, arguments, Ok(outcome), started)
            .await
        {
            Ok(row) => row,
            Err(error) => {
                tracing::error!(%error, "could not append the audit row of an executed movement; no receipt");
                return false;
            }
        };
        let seq = row.seq;
        match self
            .issue_receipt(
                signer, caller, toolset, tool, arguments, outcome, *draft, row,
            )
            .await
        {
            Ok(receipt) => {
                let id = receipt.id.clone();
                match serde_json::to_value(&receipt) {
                    Ok(value) => {
                        if let serde_json::Value::Object(map) = outcome.structured_mut() {
                            map.insert("receipt".into(), value);
                        }
                        // The text keeps its shape (summary lines, then the structured result
                        // as one JSON line, last), now with the receipt in that JSON too.
                        let note = format!(
                            "Signed receipt {id} (audit entry {seq}): in the result's `receipt`; check it offline with `paywarden receipt verify FILE`."
                        );
                        let summary = outcome
                            .text
                            .find("\n{")
                            .map_or(outcome.text.as_str(), |at| &outcome.text[..at]);
                        outcome.text = format!("{summary}\n{note}\n{}", outcome.structured);
                    }
                    Err(error) => tracing::error!(%error, "could not serialise a receipt"),
                }
            }
            Err(error) => {
                tracing::error!(%error, seq, "could not issue the receipt of an executed movement")
            }
        }
        true
    }

    /// Signs and stores the receipt of `draft`, naming the execution's audit row `row` (its
    /// `seq` and chain hash, as its append returned them).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn issue_receipt(
        &self,
        signer: &crate::receipts::ReceiptSigner,
        caller: &Caller,
        toolset: &str,
        tool: &str,
        arguments: &serde_json::Value,
        outcome: &ToolOutcome,
        draft: crate::receipts::ReceiptDraft,
        row: crate::store::AuditAppended,
    ) -> Result<crate::receipts::Receipt, crate::store::StoreError> {
        let crate::store::AuditAppended { seq, hash } = row;
        let approval = match &draft.approval_id {
            Some(id) => self.store.approval(id).await?,
            None => None,
        };
        let receipt = draft.into_receipt(
            caller,
            toolset,
            tool,
            self.sandbox,
            crate::mask::arguments(&redact(arguments)),
            &outcome.audit,
            crate::receipts::ReceiptAudit { seq, hash },
            approval.as_ref(),
        );
        let receipt = signer.sign(receipt)?;
        self.store
            .insert_receipt(&crate::store::StoredReceipt {
                id: receipt.id.clone(),
                entity_id: receipt.entity.clone(),
                issued_at: receipt.issued_at.clone(),
                tool: receipt.tool.clone(),
                transaction_id: receipt.provider.transaction_id.clone(),
                audit_seq: seq,
                body: serde_json::to_value(&receipt)?,
            })
            .await?;
        Ok(receipt)
    }
}
