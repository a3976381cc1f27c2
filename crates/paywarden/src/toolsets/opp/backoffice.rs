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
        let op = Backoffice {
            service: self,
            command,
        };
        let command = &op.command;
        let call = Call {
            toolset: TOOLSET,
            tool,
            arguments,
            binding: binding_hash(tool, arguments),
            idempotency_key: command.idempotency_key.as_deref(),
            confirmation_token: command.confirmation_token.as_deref(),
            approval_id: command.approval_id.as_deref(),
            argument_names: ("confirmationToken", "approvalId"),
            floor: Decision::Allow,
            output_defaults: serde_json::json!({ "balances": null }),
        };
        self.pipeline.run(caller, call, &op).await
    }

    /// Reads the referenced transaction's payment from OPP and applies OPP's state rules and
    /// the refund window. `Ok(Err(outcome))` is a refusal to return as is.
    pub(super) async fn check(
        &self,
        caller: &Caller,
        command: &BackofficeCommand,
    ) -> Checked<CheckedBackoffice> {
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
        Ok(Ok(CheckedBackoffice {
            target,
            linked,
            amount,
        }))
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

    pub(super) fn approval_view(&self, approval: &Approval) -> ApprovalView {
        self.pipeline.approval_view(approval)
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
        // OPP's pending groups (`000.200`, `800.400.5`, `100.400.500`): accepted, outcome not
        // known yet; the balances hold its amount as if it succeeds (`ledger_record`).
        let pending = created.result.is_pending();
        let output = BackofficeOutput {
            status: if pending { "pending" } else { "executed" }.into(),
            transaction: Some(created.view()),
            balances: Some(balances.clone()),
            confirmation: None,
            approval: None,
            sandbox: self.pipeline.sandbox(),
            idempotent_replay: false,
            receipt: None,
        };
        let summary = format!(
            "{tool} {}: {} {} on {} {} -> new {} transaction {} (result {} {}). {} now: captured {} {cur}, refunded {} {cur}, capturable {} {cur}, refundable {} {cur}.",
            if pending {
                "is PENDING at OPP (its outcome is not known yet; the balances below hold its amount as if it succeeds; OPP settles it within about half an hour, a later get_transactions or the task shows the result; do not send it again)"
            } else {
                "succeeded"
            },
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
                structured_json: None,
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

/// One back-office operation as the pipeline runs it ([`PipelineOperation`]).
pub(super) struct Backoffice<'a> {
    pub(super) service: &'a OppService,
    pub(super) command: BackofficeCommand,
}

/// What the check read at OPP: the referenced transaction, its linked transactions, and the
/// amount that would move.
pub(super) struct CheckedBackoffice {
    target: Transaction,
    linked: Vec<Transaction>,
    amount: Money,
}

impl PipelineOperation for Backoffice<'_> {
    type Checked = CheckedBackoffice;
    type Error = OppError;
    type Reconciler = OppService;

    fn reconciler(&self) -> Option<&OppService> {
        Some(self.service)
    }

    fn check(&self, caller: &Caller) -> impl Future<Output = Checked<CheckedBackoffice>> + Send {
        self.service.check(caller, &self.command)
    }

    fn assess(&self, caller: &Caller, checked: &CheckedBackoffice) -> Assessment {
        Assessment {
            preview: self.service.preview(
                caller,
                &self.command,
                &checked.target,
                &checked.linked,
                checked.amount,
            ),
            transaction_age_days: checked
                .target
                .timestamp
                .map(|t| (Utc::now() - t).num_days()),
        }
    }

    fn lease(&self, caller: &Caller, _: &CheckedBackoffice) -> Option<TransactionLease> {
        self.lease_before_check(caller)
    }

    /// The referenced transaction, named by the arguments (`referenceId`); the check again
    /// under it ([`PipelineOperation::recheck`]) is the check itself.
    fn lease_before_check(&self, _: &Caller) -> Option<TransactionLease> {
        let command = &self.command;
        Some(TransactionLease {
            resource: command.reference_id.clone(),
            // The lease outlives the provider timeout, so a crashed holder cannot block forever.
            duration: ChronoDuration::milliseconds(
                i64::try_from(self.service.client.timeout().as_millis())
                    .unwrap_or(i64::MAX / 4)
                    * 3
                    + 5_000,
            ),
            busy: format!(
                "{}: another operation on {} has been running for 30 s; nothing was sent. Retry with the same idempotencyKey.",
                tool_of(command.operation),
                command.reference_id
            ),
        })
    }

    /// OPP's rules again on fresh provider state, under the transaction's lease.
    fn recheck(
        &self,
        caller: &Caller,
        _: CheckedBackoffice,
        _: Option<&str>,
    ) -> impl Future<Output = Checked<CheckedBackoffice>> + Send {
        self.service.check(caller, &self.command)
    }

    /// With an idempotency key, the operation carries paywarden's derived reference of the key
    /// (`customParameters[PAYWARDEN_REF]`), recorded on the key first, so an outcome paywarden
    /// never hears is found at OPP later.
    fn intent(&self, caller: &Caller, checked: &CheckedBackoffice, key: &str) -> Option<Intent> {
        let command = &self.command;
        Some(Intent {
            toolset: TOOLSET.into(),
            tool: tool_of(command.operation).into(),
            reference_id: command.reference_id.clone(),
            operation: command.operation.payment_type().code().into(),
            amount_minor: sent_amount(command, checked.amount).map(|m| m.minor_units()),
            currency: checked.amount.currency().code().into(),
            marker: derived_merchant_reference(&caller.entity_id, key),
            settle_window_ms: 0,
            extra: serde_json::Value::Null,
        })
    }

    /// Sends the operation and records what OPP executed. Once sent, no failure says that
    /// nothing was sent.
    async fn send(
        &self,
        caller: &Caller,
        checked: CheckedBackoffice,
        key: Option<&str>,
    ) -> Sent<OppError> {
        let command = &self.command;
        let service = self.service;
        let tool = tool_of(command.operation);
        let CheckedBackoffice {
            target,
            linked,
            amount,
        } = checked;
        let tree: Vec<_> = linked.iter().map(Transaction::ledger_record).collect();
        let marker = key.map(|k| derived_merchant_reference(&caller.entity_id, k));
        let request = BackofficeRequest {
            payment_type: command.operation.payment_type(),
            amount: sent_amount(command, amount),
            // The key reaches OPP in OPP's own form, the merchant reference, unless the caller
            // chose one: that is how an unknown outcome is looked up before any retry.
            merchant_transaction_id: command
                .merchant_transaction_id
                .clone()
                .or_else(|| marker.clone()),
            custom_parameters: marker
                .iter()
                .map(|m| (REFERENCE_PARAMETER.to_string(), m.clone()))
                .collect(),
        };
        let created = match service
            .client
            .backoffice(
                &OppService::credentials(caller),
                &command.reference_id,
                &request,
            )
            .await
        {
            Ok(created) => created,
            Err(e) => return Ok(Err(e)),
        };
        match service
            .executed(caller, command, &target, &tree, &created)
            .await
        {
            Ok(done) => Ok(Ok(done)),
            // OPP executed it but paywarden could not record it: the key stays blocked as an
            // unknown outcome, and the retry finds the operation at OPP and records it.
            Err(e) => {
                tracing::error!(error = %e, transaction = %created.id, "OPP executed an operation paywarden could not record yet");
                Ok(Ok((
                    service.pipeline.error_outcome(
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
                )))
            }
        }
    }

    fn failure(&self, error: OppError) -> Stop {
        let tool = tool_of(self.command.operation);
        match error {
            OppError::Rejected {
                result,
                transaction,
            } => (
                self.service.rejection_outcome(
                    tool,
                    &result,
                    "OPP refused the operation",
                    transaction.as_deref(),
                    true,
                ),
                Settlement::Final,
            ),
            e => self.service.provider_failure(tool, e, false),
        }
    }

    fn receipt_provider(&self) -> Option<&'static str> {
        Some("opp")
    }
}

/// The amount sent: explicit (OPP requires one) except for a reversal, which voids the whole
/// authorisation.
fn sent_amount(command: &BackofficeCommand, amount: Money) -> Option<Money> {
    (command.operation != Operation::Reversal).then_some(amount)
}

#[cfg(test)]
mod future_size_tests {
    use super::*;

    /// The size of the future `OppService::backoffice` returns, without calling it.
    fn backoffice_future_size<A, B, C, D, F: std::future::Future>(
        _: fn(&'static OppService, A, B, C, D) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// rmcp's tool router boxes each call's future, so its whole state is allocated and copied
    /// once per call. The pipeline's lease wrappers take the future they run boxed: an `async
    /// fn` keeps its arguments apart from its locals, so a future passed inline was held twice
    /// at each wrapper, and a refund's future was 114,776 bytes in a release build
    /// (docs/performance.md, "Spawned futures boxed").
    #[test]
    fn a_back_office_operations_future_holds_its_pipeline_once() {
        let size = backoffice_future_size(OppService::backoffice);
        assert!(size <= 16 * 1024, "the back-office future is {size} bytes");
    }
}
