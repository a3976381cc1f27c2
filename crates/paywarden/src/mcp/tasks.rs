//! Tasks (the `io.modelcontextprotocol/tasks` extension, SEP-2663, as rmcp 3.9 implements it)
//! for calls whose result waits: an approval pending a person, an ifthenpay MB WAY request or
//! Multibanco/Payshop/PIX reference awaiting payment, a Stripe refund that is `pending`, an OPP
//! transaction in a pending result family.
//!
//! When the client declared the extension (per request in 2026-07-28, at `initialize` before)
//! and such a call returns, paywarden stores a task (`tasks` table) and answers
//! `resultType: "task"`. rmcp's in-memory `TaskManager` runs futures; these tasks run nothing:
//! `tasks/get` computes the status from the stored state each time (the `approvals` row,
//! `ifthenpay_requests.status`, `refund_log.status`, the OPP transaction), so whatever updates
//! that state (an operator on the approval page, an ifthenpay callback, Stripe's settlement)
//! moves the task, across restarts and replicas. A `completed` task carries the tool's normal
//! result (`tasks/get` is also how SEP-2663 returns it: there is no `tasks/result`).
//! `tasks/cancel` withdraws an approval or stops waiting on an unpaid reference (ifthenpay has
//! no cancel: it expires unpaid), and is refused, saying why, where the provider allows no
//! cancel (an MB WAY request, a pending Stripe refund, a pending OPP transaction). Another
//! entity's task id is unknown (-32602), as a missing one.

use rmcp::{
    model::{
        CallToolResult, ContentBlock, CreateTaskResult, DetailedTask, ElicitRequest,
        ElicitRequestParams, GetTaskResult, InputRequest, InputRequests, JsonObject, Task,
        TaskPayload, TaskStatus,
    },
    service::RequestContext,
    ErrorData as McpError, RoleServer,
};

use super::PaywardenMcp;
use crate::{
    service::Caller,
    store::{StoreError, StoredTask, TaskKind},
};

/// Suggested polling interval, milliseconds.
const POLL_INTERVAL_MS: u64 = 2_000;

/// The ifthenpay tools whose request waits for the shopper.
const IFTHENPAY_WAITING: &[&str] = &[
    "mbway_request_payment",
    "multibanco_create_reference",
    "payshop_create_reference",
    "pix_create_payment",
];

fn internal(e: StoreError) -> McpError {
    tracing::error!(error = %e, "task store failure");
    McpError::internal_error(
        "paywarden's database failed; the task is unchanged. Retry later.",
        None,
    )
}

fn unknown_task(task_id: &str) -> McpError {
    // rmcp's TaskManager answers the same (SEP-2663: an unknown taskId is -32602).
    McpError::invalid_params(format!("unknown task: {task_id}"), None)
}

fn result_object(result: &CallToolResult) -> JsonObject {
    match serde_json::to_value(result) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => JsonObject::new(),
    }
}

/// Where a task stands now, computed from the stored state.
struct Now {
    payload: TaskPayload,
    message: Option<String>,
}

impl Now {
    fn working(message: String) -> Self {
        Self {
            payload: TaskPayload::Working,
            message: Some(message),
        }
    }

    fn completed(result: &CallToolResult, message: Option<String>) -> Self {
        Self {
            payload: TaskPayload::Completed {
                result: result_object(result),
            },
            message,
        }
    }
}

impl PaywardenMcp {
    /// Whether the client declared the tasks extension for this request.
    pub(super) fn wants_tasks(context: &RequestContext<RoleServer>) -> bool {
        context
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks())
    }

    /// What `result` of `tool` waits on, if anything.
    async fn waits_on(
        &self,
        caller: &Caller,
        tool: &str,
        arguments: &JsonObject,
        result: &CallToolResult,
    ) -> Result<Option<(TaskKind, String)>, McpError> {
        if result.is_error == Some(true) {
            return Ok(None);
        }
        let Some(out) = result.structured_value() else {
            return Ok(None);
        };
        if out["status"] == "approval_pending" {
            return Ok(out["approval"]["id"]
                .as_str()
                .map(|id| (TaskKind::Approval, id.to_string())));
        }
        if tool == "issue_refund" && out["status"] == "pending" {
            return Ok(out["refund"]["stripe_refund_id"]
                .as_str()
                .map(|id| (TaskKind::StripeRefund, id.to_string())));
        }
        if IFTHENPAY_WAITING.contains(&tool) {
            let Some(order) = arguments.get("order_id").and_then(|o| o.as_str()) else {
                return Ok(None);
            };
            // The request is recorded under the caller's entity, or `key:<id>` of the key it
            // passed when ifthenpay's entity list does not name the caller.
            let mut entities = vec![caller.entity_id.clone()];
            for argument in ["mbway_key", "mb_key", "payshop_key", "pix_key"] {
                if let Some(key) = arguments.get(argument).and_then(|k| k.as_str()) {
                    entities.push(format!("key:{}", self.state.ifthenpay.key_id(key)));
                }
            }
            for entity in entities {
                let row = self
                    .state
                    .ifthenpay
                    .pipeline()
                    .store()
                    .ifthenpay_request_for_order(&entity, tool, order)
                    .await
                    .map_err(internal)?;
                if let Some(row) = row.filter(|r| r.status == "pending") {
                    return Ok(Some((TaskKind::Ifthenpay, row.id.to_string())));
                }
            }
            return Ok(None);
        }
        if let (Some(code), Some(id)) = (out["result"]["code"].as_str(), out["id"].as_str()) {
            if crate::model::ResultInfo::new(code, "").is_pending() {
                return Ok(Some((TaskKind::Opp, id.to_string())));
            }
        }
        Ok(None)
    }

    /// Stores a task for `result` when it waits on something and returns its handle; `None`
    /// when the result is final.
    ///
    /// # Errors
    /// An internal error when the task cannot be stored.
    pub(super) async fn task_for(
        &self,
        caller: &Caller,
        tool: &str,
        arguments: &JsonObject,
        result: &CallToolResult,
    ) -> Result<Option<CreateTaskResult>, McpError> {
        let Some((kind, subject)) = self.waits_on(caller, tool, arguments, result).await? else {
            return Ok(None);
        };
        let stored = self
            .state
            .ops
            .pipeline()
            .store()
            .create_task(
                &caller.entity_id,
                tool,
                kind,
                &subject,
                &serde_json::Value::Object(result_object(result)),
                None,
            )
            .await
            .map_err(internal)?;
        let task = base_task(&stored, TaskStatus::Working)
            .with_status_message(seed_message(kind, &subject));
        Ok(Some(CreateTaskResult::new(task)))
    }

    /// `tasks/get`: the caller's task, its status computed from the stored state.
    ///
    /// # Errors
    /// -32602 for an unknown task (or another entity's); an internal error when the database
    /// fails.
    pub(super) async fn get_stored_task(
        &self,
        task_id: &str,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let caller = self.caller(&context)?;
        let mut stored = self.stored_task(&caller, task_id).await?;
        let audit_context = context.clone();
        let now = self.task_now(&caller, &stored, context).await?;
        let status = now.payload.status();
        if stored.cancelled_at.is_none() {
            // A status read is audited once per change of status, not once per poll (a client
            // polls every couple of seconds); the change also moves `lastUpdatedAt`. What the
            // task did meanwhile is on the record anyway: an approved request runs through the
            // pipeline (audited as the movement it is), and the events that settle a reference
            // or a refund are audited when they arrive.
            let label = status_label(status);
            let (final_result, note) = match &now.payload {
                TaskPayload::Completed { result } => (
                    Some(serde_json::Value::Object(result.clone())),
                    now.message.as_deref(),
                ),
                TaskPayload::Failed { error } => (
                    Some(serde_json::Value::Object(error.clone())),
                    now.message.as_deref(),
                ),
                _ => (None, None),
            };
            let changed = self
                .state
                .ops
                .pipeline()
                .store()
                .note_task_status(
                    &caller.entity_id,
                    &stored.id,
                    &label,
                    final_result.as_ref(),
                    note,
                )
                .await
                .map_err(internal)?;
            if let Some(at) = changed {
                stored.updated_at = at;
                let arguments = serde_json::json!({ "taskId": task_id, "status": label });
                self.audit_request(
                    &audit_context,
                    "tasks/get",
                    arguments,
                    &Ok::<(), McpError>(()),
                )
                .await?;
            }
        } else {
            // Nothing is written for a cancelled task's status, and the cancellation may still
            // wait for its fsync: answer "cancelled" only once it is durable.
            self.state
                .ops
                .pipeline()
                .store()
                .written()
                .await
                .map_err(|e| internal(StoreError::from(e)))?;
        }
        let mut task = base_task(&stored, status);
        task.status_message = now.message;
        Ok(GetTaskResult::new(DetailedTask::new(task, now.payload)))
    }

    async fn stored_task(&self, caller: &Caller, task_id: &str) -> Result<StoredTask, McpError> {
        self.state
            .ops
            .pipeline()
            .store()
            .task(&caller.entity_id, task_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| unknown_task(task_id))
    }

    /// Where `stored` stands now.
    async fn task_now(
        &self,
        caller: &Caller,
        stored: &StoredTask,
        context: RequestContext<RoleServer>,
    ) -> Result<Now, McpError> {
        if stored.cancelled_at.is_some() {
            return Ok(Now {
                payload: TaskPayload::Cancelled,
                message: stored.status_note.clone(),
            });
        }
        let first: CallToolResult =
            serde_json::from_value(stored.result.clone()).unwrap_or_else(|_| {
                CallToolResult::error(vec![ContentBlock::text("the stored result is unreadable")])
            });
        // A finished task's final result was stored when it finished: served as it was,
        // nothing is looked up (or executed) again.
        match stored.last_status.as_deref() {
            Some("completed") => return Ok(Now::completed(&first, stored.status_note.clone())),
            Some("failed") => {
                return Ok(Now {
                    payload: TaskPayload::Failed {
                        error: result_object(&first),
                    },
                    message: stored.status_note.clone(),
                })
            }
            _ => {}
        }
        match stored.kind {
            TaskKind::Approval => self.approval_now(caller, stored, &first, &context).await,
            TaskKind::Ifthenpay => self.ifthenpay_now(stored, first).await,
            TaskKind::StripeRefund => self.refund_now(caller, stored, first).await,
            TaskKind::Opp => self.opp_now(caller, stored, first).await,
        }
    }

    async fn approval_now(
        &self,
        caller: &Caller,
        stored: &StoredTask,
        first: &CallToolResult,
        context: &RequestContext<RoleServer>,
    ) -> Result<Now, McpError> {
        let id = stored.subject.clone();
        // Still pending (not expired): nothing to run or report, read from the row alone (a
        // get_approval per poll would audit every poll).
        let row = self
            .state
            .ops
            .pipeline()
            .store()
            .approval(&id)
            .await
            .map_err(internal)?;
        let still_pending = row
            .as_ref()
            .is_some_and(|a| a.status == crate::store::ApprovalStatus::Pending);
        let arguments = serde_json::json!({ "approvalId": id });
        if !still_pending {
            // Executes an approved request once (the approval's own single use), else reports it.
            let result =
                super::render(self.resolve_approval(caller, &arguments, id.clone()).await)?;
            let pending = result
                .structured_value()
                .is_some_and(|s| s["status"] == "approval_pending");
            if !pending {
                return Ok(Now::completed(&result, None));
            }
        }
        let approval = first
            .structured_value()
            .map(|s| s["approval"].clone())
            .unwrap_or_default();
        let url = approval["url"].as_str().unwrap_or_default().to_string();
        let message = format!(
            "waiting for an operator to approve or deny {id} on the approval page ({url}); the agent cannot approve it"
        );
        let url_mode = context
            .client_capabilities()
            .is_some_and(|c| c.elicitation.as_ref().is_some_and(|e| e.url.is_some()));
        if !url_mode || url.is_empty() {
            return Ok(Now::working(message));
        }
        let mut requests = InputRequests::new();
        requests.insert(
            super::APPROVAL_QUESTION.to_string(),
            InputRequest::Elicitation(ElicitRequest::new(
                ElicitRequestParams::UrlElicitationParams {
                    meta: None,
                    message: super::opp::approval_page_message(&approval),
                    url,
                    elicitation_id: id,
                },
            )),
        );
        Ok(Now {
            payload: TaskPayload::InputRequired {
                input_requests: requests,
            },
            message: Some(message),
        })
    }

    async fn ifthenpay_now(
        &self,
        stored: &StoredTask,
        first: CallToolResult,
    ) -> Result<Now, McpError> {
        let row = match stored.subject.parse::<i64>() {
            Ok(id) => self
                .state
                .ifthenpay
                .pipeline()
                .store()
                .ifthenpay_request_row(id)
                .await
                .map_err(internal)?,
            Err(_) => None,
        };
        let Some(row) = row else {
            return Ok(Now {
                payload: TaskPayload::Failed {
                    error: result_object(&CallToolResult::error(vec![])),
                },
                message: Some("the ifthenpay request this task followed is gone".into()),
            });
        };
        let what = match row.method.as_str() {
            "MBWAY" => "MB WAY request",
            "MB" => "Multibanco reference",
            "PAYSHOP" => "Payshop reference",
            _ => "PIX payment",
        };
        match row.status.as_str() {
            "pending" => Ok(Now::working(format!(
                "{what} {} for order {} awaiting payment ({})",
                row.request_id
                    .as_deref()
                    .or(row.reference.as_deref())
                    .unwrap_or_default(),
                row.order_id,
                match row.method.as_str() {
                    "MBWAY" => "the shopper accepts or rejects it in the MB WAY app; it expires 4 minutes after it was sent",
                    "MB" => "paid at a Multibanco ATM or in home banking with the entity and reference; ifthenpay's callback marks it paid",
                    "PAYSHOP" => "paid in cash at a Payshop agent or CTT post office with the reference; ifthenpay's callback marks it paid",
                    _ => "paid with the PIX QR code (or its copy-and-paste code) in the shopper's bank app; ifthenpay's callback marks it paid",
                }
            ))),
            "paid" => {
                let mut result = first;
                if let Some(out) = result
                    .structured_value_mut()
                    .filter(|o| o.get("status").is_some())
                {
                    out["status"] = "paid".into();
                }
                let note = format!(
                    "Paid: {what} for order {} was paid at {}.",
                    row.order_id,
                    row.paid_at.as_deref().unwrap_or("?")
                );
                result.content.push(ContentBlock::text(note.clone()));
                Ok(Now::completed(&result, Some(note)))
            }
            other => {
                let note = format!(
                    "Not paid: {what} for order {} is {other}; nothing was received.",
                    row.order_id
                );
                let result = CallToolResult::error(vec![ContentBlock::text(note.clone())]);
                Ok(Now::completed(&result, Some(note)))
            }
        }
    }

    async fn refund_now(
        &self,
        caller: &Caller,
        stored: &StoredTask,
        first: CallToolResult,
    ) -> Result<Now, McpError> {
        let status = self
            .state
            .ops
            .pipeline()
            .store()
            .refund_status_of(&caller.entity_id, &stored.subject)
            .await
            .map_err(internal)?
            .unwrap_or_else(|| "pending".into());
        match status.as_str() {
            "pending" | "requires_action" => Ok(Now::working(format!(
                "Stripe refund {} is {status}; paywarden follows it until Stripe settles it",
                stored.subject
            ))),
            "succeeded" => {
                let mut result = first;
                if let Some(out) = result.structured_value_mut() {
                    out["status"] = "executed".into();
                    out["refund"]["status"] = "succeeded".into();
                }
                Ok(Now::completed(
                    &result,
                    Some(format!("Stripe refund {} succeeded", stored.subject)),
                ))
            }
            other => {
                let note = format!(
                    "Stripe refund {} {other}: no money went back, and paywarden undid its booking (the order's refunded amount and the daily total).",
                    stored.subject
                );
                let result = CallToolResult::error(vec![ContentBlock::text(note.clone())]);
                Ok(Now::completed(&result, Some(note)))
            }
        }
    }

    /// An OPP transaction answered pending: looked up at OPP (OPP's `GET /v1/query/{id}`, as
    /// get_transactions does, unaudited: the task audits its status changes) on each poll. Still pending: `working`. Settled: `completed` with
    /// the tool's first result, its transaction's result updated (`executed`, or `rejected` as
    /// an error when OPP declined it in the end, its balances, which held the declined amount,
    /// dropped: get_transactions gives fresh ones).
    async fn opp_now(
        &self,
        caller: &Caller,
        stored: &StoredTask,
        first: CallToolResult,
    ) -> Result<Now, McpError> {
        let found = self
            .state
            .opp
            .transaction_for_task(caller, &stored.subject)
            .await;
        let found = match found {
            Ok(Some(t)) => t,
            Ok(None) | Err(_) => {
                return Ok(Now::working(format!(
                    "OPP transaction {} is pending; OPP could not be asked for it just now (the next poll asks again)",
                    stored.subject
                )))
            }
        };
        let code = found.result.code.as_str();
        if found.result.is_pending() {
            return Ok(Now::working(format!(
                "OPP transaction {} is pending ({code}); OPP settles it within about half an hour",
                stored.subject
            )));
        }
        let succeeded = found.result.is_success();
        let transaction = serde_json::to_value(found.view()).unwrap_or_default();
        let note = format!(
            "OPP transaction {}, pending at first, {}: result {code} \"{}\".",
            stored.subject,
            if succeeded {
                "succeeded"
            } else {
                "was declined in the end; nothing moved"
            },
            transaction["result"]["description"]
                .as_str()
                .unwrap_or_default()
        );
        let mut settled = first;
        if let Some(out) = settled.structured_value_mut() {
            for field in ["result", "resultFamily", "resultCategory", "timestamp"] {
                out[field] = transaction[field].clone();
            }
            out["status"] = if succeeded { "executed" } else { "rejected" }.into();
            if !succeeded {
                // They held the declined transaction's amount.
                out["balances"] = serde_json::Value::Null;
            }
        }
        settled.content.push(ContentBlock::text(note.clone()));
        settled.is_error = Some(!succeeded);
        Ok(Now::completed(&settled, Some(note)))
    }

    /// `tasks/cancel`: withdraw an approval, stop waiting on an unpaid reference (it expires
    /// unpaid), or refuse where the provider allows no cancel, saying so.
    ///
    /// # Errors
    /// -32602 for an unknown task or one already finished; -32600 (invalid request) naming
    /// the provider's rule when it cannot be cancelled; internal errors of the database.
    pub(super) async fn cancel_stored_task(
        &self,
        task_id: &str,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // On the audit record, whatever it did.
        let audit_context = context.clone();
        let result = self.cancel_unaudited(task_id, context).await;
        let arguments = serde_json::json!({ "taskId": task_id });
        self.audit_request(&audit_context, "tasks/cancel", arguments, &result)
            .await?;
        result
    }

    async fn cancel_unaudited(
        &self,
        task_id: &str,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&context)?;
        let stored = self.stored_task(&caller, task_id).await?;
        if stored.kind == TaskKind::Approval && stored.cancelled_at.is_none() {
            // Never through `task_now`: working out an approval task's state executes an
            // approved request, and a cancel must not be what moves the money.
            return self.cancel_approval_task(&caller, &stored).await;
        }
        let now = self.task_now(&caller, &stored, context).await?;
        if now.payload.status().is_terminal() {
            return Err(McpError::invalid_params(
                format!(
                    "task {task_id} is already {}: there is nothing to cancel",
                    serde_json::to_value(now.payload.status())
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                ),
                None,
            ));
        }
        let store = self.state.ops.pipeline().store();
        let note = match stored.kind {
            TaskKind::Approval => {
                match store
                    .decide_approval(
                        &stored.subject,
                        false,
                        &format!("agent:{}", caller.entity_id),
                        Some("withdrawn by the agent (tasks/cancel)"),
                    )
                    .await
                {
                    Ok(_) => format!(
                        "approval {} withdrawn: it can no longer be approved or executed; nothing moved",
                        stored.subject
                    ),
                    Err(crate::store::ApprovalError::Store(e)) => return Err(internal(e)),
                    Err(e) => {
                        return Err(McpError::invalid_request(
                            format!("approval {} cannot be withdrawn now: {e}", stored.subject),
                            None,
                        ))
                    }
                }
            }
            TaskKind::Ifthenpay if stored.tool == "mbway_request_payment" => {
                return Err(McpError::invalid_request(
                    "ifthenpay offers no way to withdraw an MB WAY request: it stays on the shopper's phone until it expires, 4 minutes after it was sent. The task keeps following it.",
                    None,
                ))
            }
            TaskKind::Ifthenpay => format!(
                "ifthenpay has no cancel for {}: paywarden stops waiting and lets it expire unpaid. If the shopper pays before it expires, the payment still arrives (see payments_list).",
                if stored.tool == "pix_create_payment" {
                    "a PIX payment"
                } else {
                    "a payment reference"
                }
            ),
            TaskKind::StripeRefund => {
                return Err(McpError::invalid_request(
                    "Stripe cancels only refunds awaiting customer action (requires_action); a pending card refund cannot be cancelled. The task keeps following it.",
                    None,
                ))
            }
            TaskKind::Opp => {
                return Err(McpError::invalid_request(
                    "OPP offers no cancel for a pending transaction; the task keeps following it. Once it succeeds, reverse or refund it.",
                    None,
                ))
            }
        };
        store
            .cancel_task(&caller.entity_id, task_id, &note)
            .await
            .map_err(internal)?;
        Ok(())
    }

    /// `tasks/cancel` of an approval task, read from the approval row alone (nothing runs): a
    /// pending approval is withdrawn; an approved one that has not run is refused (an operator's
    /// decision stands; it runs only when the agent asks for the task's result); a decided,
    /// expired or executed one has nothing to cancel.
    async fn cancel_approval_task(
        &self,
        caller: &Caller,
        stored: &StoredTask,
    ) -> Result<(), McpError> {
        use crate::store::ApprovalStatus;
        let store = self.state.ops.pipeline().store();
        let id = &stored.subject;
        let approval = store
            .approval(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| unknown_task(&stored.id))?;
        match approval.status {
            ApprovalStatus::Pending => {}
            ApprovalStatus::Approved => {
                return Err(McpError::invalid_request(
                    format!(
                        "approval {id} was approved by an operator and has not run: a task cannot withdraw an operator's decision. Nothing moved; it runs only when you ask for the task's result (tasks/get). Ask the operator to deny it instead."
                    ),
                    None,
                ))
            }
            other => {
                return Err(McpError::invalid_params(
                    format!(
                        "task {} is already finished (approval {id} is {}): there is nothing to cancel",
                        stored.id,
                        serde_json::to_value(other)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    ),
                    None,
                ))
            }
        }
        let note = match store
            .decide_approval(
                id,
                false,
                &format!("agent:{}", caller.entity_id),
                Some("withdrawn by the agent (tasks/cancel)"),
            )
            .await
        {
            Ok(_) => format!(
                "approval {id} withdrawn by the agent: it can no longer be approved or executed; nothing moved"
            ),
            Err(crate::store::ApprovalError::Store(e)) => return Err(internal(e)),
            Err(e) => {
                return Err(McpError::invalid_request(
                    format!("approval {id} cannot be withdrawn now: {e}"),
                    None,
                ))
            }
        };
        store
            .cancel_task(&caller.entity_id, &stored.id, &note)
            .await
            .map_err(internal)?;
        Ok(())
    }

    /// `tasks/update`: paywarden's tasks ask nothing a client can answer (an approval is an
    /// operator's), so responses are accepted and ignored (SEP-2663: unknown keys are ignored).
    ///
    /// # Errors
    /// -32602 for an unknown task.
    pub(super) async fn update_stored_task(
        &self,
        task_id: &str,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&context)?;
        self.stored_task(&caller, task_id).await.map(|_| ())
    }
}

/// The wire name of `status` (`working`, `input_required`, `completed`, `failed`,
/// `cancelled`).
fn status_label(status: TaskStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn base_task(stored: &StoredTask, status: TaskStatus) -> Task {
    let mut task = Task::new(
        stored.id.clone(),
        status,
        stored.created_at.clone(),
        stored.updated_at.clone(),
    )
    .with_poll_interval_ms(POLL_INTERVAL_MS);
    task.ttl_ms = stored.ttl_ms.and_then(|t| u64::try_from(t).ok());
    task
}

fn seed_message(kind: TaskKind, subject: &str) -> String {
    match kind {
        TaskKind::Approval => format!("waiting for an operator to decide {subject}"),
        TaskKind::Ifthenpay => "waiting for the shopper to pay".into(),
        TaskKind::StripeRefund => format!("Stripe refund {subject} is pending"),
        TaskKind::Opp => format!("OPP transaction {subject} is pending"),
    }
}
