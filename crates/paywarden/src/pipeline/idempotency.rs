//! Idempotency: a keyed call runs once; a retry replays; the key is settled with what happened.

use super::*;

impl Pipeline {
    /// Runs a money-moving call under an optional idempotency key: a new key proceeds, a retry
    /// returns the first outcome (marked as a replay) without calling `run`, the same key with
    /// other arguments is a tool error. `run` returns the outcome and whether the provider's
    /// answer is unknown (a timeout), in which case the key is kept blocked.
    ///
    /// The key is claimed first (one insert); only when it is already taken by a call whose
    /// outcome is unknown (or whose holder's lease ran out) is `reconcile` run, which looks the
    /// key up and resolves it at the provider ([`Pipeline::reconcile`]), and the claim tried
    /// once more. A first call under a new key thus makes no lookup before its claim.
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails; `reconcile`'s error as it returns it.
    #[allow(clippy::too_many_arguments)]
    pub async fn write<F, Fut, R, RFut>(
        &self,
        caller: &Caller,
        toolset: &str,
        tool: &str,
        arguments: &serde_json::Value,
        idempotency_key: Option<&str>,
        reconcile: R,
        run: F,
    ) -> Result<ToolOutcome, ServiceError>
    where
        F: FnOnce(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<(ToolOutcome, Settlement), ServiceError>>,
        R: FnOnce(String) -> RFut,
        RFut: std::future::Future<Output = Result<(), ServiceError>>,
    {
        let started = Instant::now();
        let Some(key) = idempotency_key else {
            let ran = run(None).await;
            let sent = matches!(ran, Ok((_, Settlement::Final | Settlement::Unknown)));
            let mut result = ran.map(|(outcome, _)| outcome);
            let sealed = match &mut result {
                Ok(outcome) => {
                    self.seal_receipt(caller, toolset, tool, arguments, outcome, started)
                        .await
                }
                Err(_) => false,
            };
            if sealed {
                return result;
            }
            if let Err(e) = self
                .audit(caller, toolset, tool, arguments, &result, started, false)
                .await
            {
                // Without a key there is no intent to tell whether anything was sent.
                return Err(match e {
                    ServiceError::Store(source) if sent => self.unrecorded(source),
                    other => other,
                });
            }
            return result;
        };
        let hash = safety::binding_hash(tool, arguments);
        let holder = uuid::Uuid::new_v4().to_string();
        let claim = || {
            self.store.begin_idempotent(
                &caller.entity_id,
                key,
                (toolset, tool),
                &hash,
                &holder,
                self.key_lease(),
            )
        };
        let mut begin = claim().await;
        if matches!(begin, Err(IdempotencyError::Unknown { .. })) {
            // Taken by a call whose outcome is unknown: resolved at the provider first (which
            // may settle the key or release it), then claimed again.
            Box::pin(reconcile(key.to_string())).await?;
            begin = claim().await;
        }
        let result = match begin {
            Ok(Begin::Proceed) => {
                let ran = self
                    .with_lease(
                        &caller.entity_id,
                        key,
                        &holder,
                        Box::pin(run(Some(holder.clone()))),
                    )
                    .await;
                return self
                    .settle_key(
                        caller,
                        (toolset, tool, arguments),
                        key,
                        &holder,
                        ran,
                        started,
                    )
                    .await;
            }
            Ok(Begin::Replay { response, is_error }) => {
                let mut structured = response
                    .get("structured")
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                if let serde_json::Value::Object(map) = &mut structured {
                    map.insert("idempotentReplay".into(), serde_json::Value::Bool(true));
                }
                let stored = crate::store::stored_text(&response).unwrap_or_default();
                let text: &str = &stored;
                let mut audit: AuditFacts = AuditFacts {
                    outcome: "replay".into(),
                    ..AuditFacts::default()
                };
                if let Some(a) = response.get("audit") {
                    audit.result_code = a
                        .get("result_code")
                        .and_then(|v| v.as_str())
                        .map(String::from);
                    audit.provider_request_id = a
                        .get("provider_request_id")
                        .and_then(|v| v.as_str())
                        .map(String::from);
                    audit.transaction_id = a
                        .get("transaction_id")
                        .and_then(|v| v.as_str())
                        .map(String::from);
                }
                let text = text
                    .strip_prefix(&*self.banner)
                    .map(|t| t.trim_start_matches('\n'))
                    .unwrap_or(text);
                Ok(ToolOutcome {
                    structured_json: None,
                    structured,
                    is_error,
                    text: self.decorate(&format!(
                        "Idempotent replay of key {key:?}: this is the first call's outcome; no money moved again.\n{text}"
                    )),
                    audit,
                })
            }
            Err(IdempotencyError::Store(e)) => Err(ServiceError::Store(e)),
            Err(e) => Ok(self.error_outcome("idempotency_key_conflict", &e.to_string(), None)),
        };
        self.audit(caller, toolset, tool, arguments, &result, started, true)
            .await?;
        result
    }
}

impl Pipeline {
    /// Settles a keyed call's key with what its run produced: a final outcome is audited, then
    /// stored (a process dying in between leaves the key to reconciliation, which writes the
    /// audit row only if it is missing); an unknown outcome blocks the key for the settle
    /// window; nothing sent releases it. A run that failed after the request may have reached
    /// the provider keeps the key blocked too.
    pub(super) async fn settle_key(
        &self,
        caller: &Caller,
        call: (&str, &str, &serde_json::Value),
        key: &str,
        holder: &str,
        ran: Result<(ToolOutcome, Settlement), ServiceError>,
        started: Instant,
    ) -> Result<ToolOutcome, ServiceError> {
        let (toolset, tool, arguments) = call;
        let entity = caller.entity_id.as_str();
        // Only a toolset that reconciles unknown outcomes gets a settle window; another's
        // unknown outcome waits for an operator.
        let settle_after = reconcile::RECONCILED_TOOLSETS.contains(&toolset).then(|| {
            chrono::Utc::now()
                + chrono::Duration::from_std(self.settle_window)
                    .unwrap_or(chrono::Duration::minutes(1))
        });
        let (mut outcome, settlement) = match ran {
            Ok(ran) => ran,
            Err(e) => {
                let kept = if e.may_have_reached_provider() {
                    self.store
                        .mark_idempotent_unknown(entity, key, settle_after)
                        .await
                } else {
                    self.store.abandon_idempotent(entity, key, holder).await
                };
                if let Err(store) = kept {
                    tracing::error!(error = %store, key, "could not settle the idempotency key after a failed call; its lease will run out and it will be reconciled");
                }
                let result = Err(e);
                if let Err(audit) = self
                    .audit(caller, toolset, tool, arguments, &result, started, true)
                    .await
                {
                    tracing::error!(error = %audit, "could not audit a failed call");
                }
                return result;
            }
        };
        // An executed movement's receipt names its audit row: sealing appends that row, signs
        // and stores the receipt, before the key completes (so a replay returns the receipt).
        let sealed = settlement == Settlement::Final
            && self
                .seal_receipt(caller, toolset, tool, arguments, &mut outcome, started)
                .await;
        let result = Ok(outcome);
        let stored = match (settlement, &result) {
            (Settlement::Final, Ok(outcome)) => {
                let audited = if sealed {
                    Ok(())
                } else {
                    self.audit(caller, toolset, tool, arguments, &result, started, true)
                        .await
                        .map(|_| ())
                };
                match audited {
                    Ok(()) => self
                        .store
                        .complete_idempotent(
                            entity,
                            key,
                            holder,
                            &outcome.key_record(),
                            outcome.is_error,
                            outcome.audit.transaction_id.as_deref(),
                        )
                        .await
                        .map_err(ServiceError::from),
                    Err(e) => Err(e),
                }
            }
            (Settlement::Unknown, _) => match self
                .store
                .mark_idempotent_unknown(entity, key, settle_after)
                .await
            {
                Ok(()) => self
                    .audit(caller, toolset, tool, arguments, &result, started, true)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e.into()),
            },
            _ => match self.store.abandon_idempotent(entity, key, holder).await {
                Ok(()) => self
                    .audit(caller, toolset, tool, arguments, &result, started, true)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e.into()),
            },
        };
        match stored {
            Ok(()) => result,
            Err(ServiceError::Store(source)) if settlement != Settlement::NotSent => {
                // Whether the request may have left: the call records its intent before sending.
                let sent = match self.store.idempotency_key(entity, key).await {
                    Ok(Some(record)) => record.intent.is_some(),
                    Ok(None) => false,
                    Err(_) => true,
                };
                Err(if sent {
                    self.unrecorded(source)
                } else {
                    ServiceError::Store(source)
                })
            }
            Err(e) => Err(e),
        }
    }
}
