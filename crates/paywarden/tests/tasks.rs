//! Tasks (`io.modelcontextprotocol/tasks`, SEP-2663, as rmcp 3.9 implements it) for calls
//! that wait, against the real server with rmcp's client: an approval pending a person, MB WAY
//! and Multibanco requests awaiting the shopper (the emulator's shopper pays, its callback
//! updates paywarden's records), a pending Stripe refund; `tasks/get` follows the stored state,
//! `tasks/cancel` withdraws or refuses saying why, another entity's task is unknown, and a task
//! survives a restart of the real binary.

mod common;

use std::time::Duration;

use common::*;
use paywarden_domain::{Currency, PaymentType};
use paywarden_emulator::{
    DEMO_ENTITY_ID, DEMO_TOKEN, IFTHENPAY_MBWAY_KEY, IFTHENPAY_MB_KEY, IFTHENPAY_PAYSHOP_KEY,
    IFTHENPAY_PIX_KEY, SECOND_ENTITY_ID, SECOND_TOKEN,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig,
    GetTaskParams, Implementation, ProtocolVersion, TaskPayload, TaskStatus,
};
use rmcp::ClientServiceExt;
use serde_json::{json, Value};

type TaskClient = rmcp::service::RunningService<rmcp::RoleClient, ClientConfig>;

/// An rmcp client that declares the tasks extension, in `era`.
async fn task_client(app: &TestApp, era: Era, entity: &str, token: &str) -> TaskClient {
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        http::HeaderName::from_static("x-entity-id"),
        http::HeaderValue::from_str(entity).unwrap(),
    );
    headers.insert(
        http::HeaderName::from_static("x-token"),
        http::HeaderValue::from_str(token).unwrap(),
    );
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            format!("{}/mcp", app.base_url),
        )
        .custom_headers(headers),
    );
    let capabilities = ClientCapabilities::builder().enable_tasks().build();
    let mut info = Implementation::default();
    info.name = "waiting-agent".into();
    info.version = "1".into();
    let (version, lifecycle) = match era {
        Era::Legacy => (
            ProtocolVersion::V_2025_11_25,
            rmcp::ClientLifecycleMode::Initialize,
        ),
        Era::Stateless => (
            ProtocolVersion::V_2026_07_28,
            rmcp::ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        ),
    };
    ClientConfig::new(capabilities, info)
        .with_protocol_version(version)
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("client connects")
}

async fn start_task(client: &TaskClient, tool: &str, args: Value) -> String {
    let response = client
        .call_tool_once(
            CallToolRequestParams::new(tool.to_string())
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .expect("answered");
    let CallToolResponse::Task(created) = response else {
        panic!("{tool} should run as a task: {response:?}");
    };
    assert_eq!(created.task.status, TaskStatus::Working);
    assert!(created.task.task_id.starts_with("tsk_"));
    created.task.task_id
}

async fn get(client: &TaskClient, id: &str) -> rmcp::model::GetTaskResult {
    client
        .get_task(GetTaskParams::new(id))
        .await
        .expect("tasks/get")
}

fn completed(task: &rmcp::model::GetTaskResult) -> rmcp::model::CallToolResult {
    let TaskPayload::Completed { result } = &task.task.payload else {
        panic!("completed expected: {task:?}");
    };
    serde_json::from_value(Value::Object(result.clone())).expect("a CallToolResult")
}

async fn refunds_of(app: &TestApp, db: &str) -> usize {
    app.opp()
        .query_by_id(&demo_credentials(), db, true, &[PaymentType::Refund])
        .await
        .unwrap()
        .len()
}

async fn guarded_app() -> TestApp {
    spawn_app_with(|c| c.safety.policy_file = None).await
}

#[tokio::test]
async fn an_approval_task_follows_the_operator_and_executes_once() {
    let app = guarded_app().await;
    for era in [Era::Stateless, Era::Legacy] {
        let db = app
            .create_payment(
                &demo_credentials(),
                PaymentType::Debit,
                "900.00",
                Currency::EUR,
            )
            .await;
        let client = task_client(&app, era, DEMO_ENTITY_ID, DEMO_TOKEN).await;
        let id = start_task(
            &client,
            "perform_refund",
            json!({"referenceId": db, "amount": "750.00", "currency": "EUR"}),
        )
        .await;

        let waiting = get(&client, &id).await;
        assert_eq!(waiting.task.task.status, TaskStatus::Working, "{era:?}");
        let message = waiting.task.task.status_message.clone().unwrap_or_default();
        assert!(message.contains("/approvals/apr_"), "{message}");

        // Another entity: the task does not exist for it.
        let other = task_client(&app, era, SECOND_ENTITY_ID, SECOND_TOKEN).await;
        let err = other.get_task(GetTaskParams::new(&id)).await.unwrap_err();
        assert!(format!("{err:?}").contains("unknown task"), "{err:?}");
        let err = other
            .cancel_task(CancelTaskParams::new(&id))
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("unknown task"), "{err:?}");
        assert_eq!(refunds_of(&app, &db).await, 0);

        // An operator approves on the page (the page decides through the store).
        let approval = app
            .store
            .list_approvals(None)
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.status == paywarden::store::ApprovalStatus::Pending)
            .expect("a pending approval");
        app.store
            .decide_approval(&approval.id, true, "carol", Some("on the page"))
            .await
            .unwrap();
        let done = get(&client, &id).await;
        assert_eq!(done.task.task.status, TaskStatus::Completed, "{done:?}");
        let result = completed(&done);
        let out = result.structured_content.clone().unwrap();
        assert_eq!(out["status"], "executed", "{out}");
        assert_eq!(out["amount"], "750.00");
        // Polling again returns the same outcome and never refunds twice.
        let again = completed(&get(&client, &id).await);
        assert_eq!(again.structured_content.unwrap()["id"], out["id"]);
        assert_eq!(refunds_of(&app, &db).await, 1);
        let err = client
            .cancel_task(CancelTaskParams::new(&id))
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("nothing to cancel"), "{err:?}");
    }
}

/// The attack (black-box test, 2026-12-03): an operator approves, and the agent's `tasks/cancel`,
/// sent before it ever polls, must not be what executes the refund. The cancel is refused, says
/// nothing moved, and the refund runs only when the agent asks for the task's result.
#[tokio::test]
async fn cancelling_an_approved_task_never_executes_it() {
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "900.00",
            Currency::EUR,
        )
        .await;
    let client = task_client(&app, Era::Stateless, DEMO_ENTITY_ID, DEMO_TOKEN).await;
    let id = start_task(
        &client,
        "perform_refund",
        json!({"referenceId": db, "amount": "750.00", "currency": "EUR"}),
    )
    .await;
    let approval = app.store.list_approvals(None).await.unwrap().remove(0);
    app.store
        .decide_approval(&approval.id, true, "carol", Some("on the page"))
        .await
        .unwrap();
    let err = client
        .cancel_task(CancelTaskParams::new(&id))
        .await
        .unwrap_err();
    let said = format!("{err:?}");
    assert!(said.contains("Nothing moved"), "{said}");
    assert_eq!(
        refunds_of(&app, &db).await,
        0,
        "the cancel executed the refund"
    );
    let still = app.store.approval(&approval.id).await.unwrap().unwrap();
    assert_eq!(still.status, paywarden::store::ApprovalStatus::Approved);
    // Asking for the result runs it, once.
    let done = get(&client, &id).await;
    assert_eq!(done.task.task.status, TaskStatus::Completed, "{done:?}");
    assert_eq!(refunds_of(&app, &db).await, 1);
}

#[tokio::test]
async fn cancelling_an_approval_task_withdraws_the_approval() {
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "900.00",
            Currency::EUR,
        )
        .await;
    let client = task_client(&app, Era::Stateless, DEMO_ENTITY_ID, DEMO_TOKEN).await;
    let id = start_task(
        &client,
        "perform_refund",
        json!({"referenceId": db, "amount": "750.00", "currency": "EUR"}),
    )
    .await;
    client
        .cancel_task(CancelTaskParams::new(&id))
        .await
        .expect("cancelled");
    let cancelled = get(&client, &id).await;
    assert_eq!(cancelled.task.task.status, TaskStatus::Cancelled);
    let message = cancelled.task.task.status_message.unwrap_or_default();
    assert!(message.contains("withdrawn"), "{message}");
    let approval = app.store.list_approvals(None).await.unwrap().remove(0);
    assert_eq!(approval.status, paywarden::store::ApprovalStatus::Denied);
    assert_eq!(
        approval.decided_by.as_deref(),
        Some(format!("agent:{DEMO_ENTITY_ID}").as_str())
    );
    let audit = format!("{:?}", app.store.audit_records(None).await.unwrap());
    assert!(audit.contains("tasks/cancel"), "{audit}");
    // An operator can no longer approve it, and nothing moved.
    assert!(app
        .store
        .decide_approval(&approval.id, true, "carol", None)
        .await
        .is_err());
    assert_eq!(refunds_of(&app, &db).await, 0);
    // The attack (black-box test, 2026-12-03): presenting the withdrawn approval said it "was
    // denied by an operator". It says who ended it.
    let plain = app.client("/mcp", Era::Legacy).await;
    let said = match common::call(
        &plain,
        "perform_refund",
        json!({"referenceId": db, "amount": "750.00", "currency": "EUR", "approvalId": approval.id}),
    )
    .await
    {
        Ok(result) => text(&result),
        Err(e) => format!("{e:?}"),
    };
    assert!(said.contains("withdrawn by the agent"), "{said}");
    assert!(!said.contains("by an operator"), "{said}");
    let said = match common::call(&plain, "get_approval", json!({"approvalId": approval.id})).await
    {
        Ok(result) => text(&result),
        Err(e) => format!("{e:?}"),
    };
    assert!(said.contains("WITHDRAWN by the agent"), "{said}");
    assert_eq!(refunds_of(&app, &db).await, 0);
}

/// A client that declared URL-mode elicitation sees the approval as `input_required`, with the
/// approval page to send its user to (an operator decides there; the client's answer to
/// `tasks/update` decides nothing).
#[tokio::test]
async fn a_url_mode_client_sees_the_approval_page_as_input_required() {
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "900.00",
            Currency::EUR,
        )
        .await;
    let base = app.base_url.clone();
    let created = rpc_with(
        &base,
        "tools/call",
        json!({"name": "perform_refund",
               "arguments": {"referenceId": db, "amount": "750.00", "currency": "EUR"}}),
        json!({"elicitation": {"url": {}}}),
    )
    .await;
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    let id = created["result"]["taskId"].as_str().unwrap().to_string();
    let asked = rpc_with(
        &base,
        "tasks/get",
        json!({"taskId": id}),
        json!({"elicitation": {"url": {}}}),
    )
    .await;
    assert_eq!(asked["result"]["status"], "input_required", "{asked}");
    let request = &asked["result"]["inputRequests"]["approval"];
    assert_eq!(request["method"], "elicitation/create", "{asked}");
    assert_eq!(request["params"]["mode"], "url", "{asked}");
    assert!(
        request["params"]["url"]
            .as_str()
            .unwrap()
            .contains("/approvals/apr_"),
        "{asked}"
    );
    // The client "accepts": nothing changes, nothing moves.
    let update = rpc_with(
        &base,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {"approval": {"action": "accept"}}}),
        json!({"elicitation": {"url": {}}}),
    )
    .await;
    assert!(update.get("result").is_some(), "{update}");
    let still = rpc_with(
        &base,
        "tasks/get",
        json!({"taskId": id}),
        json!({"elicitation": {"url": {}}}),
    )
    .await;
    assert_eq!(still["result"]["status"], "input_required", "{still}");
    assert_eq!(refunds_of(&app, &db).await, 0);
}

async fn shopper(app: &TestApp, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/sandbox/ifthenpay/shopper",
            app.emulator_url.as_deref().expect("emulator")
        ))
        .json(&body)
        .send()
        .await
        .expect("emulator");
    assert!(response.status().is_success(), "{body}");
    response.json().await.expect("json")
}

/// ifthenpay's request id of the MB WAY request for `order`, whichever entity recorded it.
async fn mbway_request_id(app: &TestApp, order: &str) -> String {
    for entity in [
        DEMO_ENTITY_ID.to_string(),
        format!("key:{}", app.key_ids.id(IFTHENPAY_MBWAY_KEY)),
    ] {
        let rows = app.store.ifthenpay_requests(&entity).await.unwrap();
        if let Some(row) = rows.into_iter().find(|r| r.order_id == order) {
            return row.request_id.unwrap();
        }
    }
    panic!("no MB WAY request for {order}");
}

#[tokio::test]
async fn mbway_and_multibanco_tasks_follow_the_shopper() {
    let app = guarded_app().await;
    let client = task_client(&app, Era::Stateless, DEMO_ENTITY_ID, DEMO_TOKEN).await;

    // MB WAY: working until the shopper accepts in the app; ifthenpay allows no cancel.
    let id = start_task(
        &client,
        "mbway_request_payment",
        json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": "T-MBWAY-1", "amount": 15.5, "phone": "351#912345678"}),
    )
    .await;
    let waiting = get(&client, &id).await;
    assert_eq!(waiting.task.task.status, TaskStatus::Working);
    let err = client
        .cancel_task(CancelTaskParams::new(&id))
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("no way to withdraw an MB WAY request"),
        "{err:?}"
    );
    let request_id = mbway_request_id(&app, "T-MBWAY-1").await;
    let paid = shopper(&app, json!({"action": "pay", "request_id": request_id})).await;
    assert_eq!(paid["callback"]["status"], 200, "{paid}");
    let done = get(&client, &id).await;
    assert_eq!(done.task.task.status, TaskStatus::Completed, "{done:?}");
    let result = completed(&done);
    assert_eq!(result.is_error, Some(false));
    assert!(text(&result).contains("Paid"), "{}", text(&result));
    assert_eq!(result.structured_content.unwrap()["status"], "paid");

    // A rejected MB WAY request completes as not paid.
    let id = start_task(
        &client,
        "mbway_request_payment",
        json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": "T-MBWAY-2", "amount": 9, "phone": "351#912345678"}),
    )
    .await;
    let request_id = mbway_request_id(&app, "T-MBWAY-2").await;
    shopper(&app, json!({"action": "reject", "request_id": request_id})).await;
    // The rejection reaches paywarden's record when the agent checks the status.
    call_ok(
        &app.client("/mcp", Era::Legacy).await,
        "mbway_check_status",
        json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "request_id": request_id}),
    )
    .await;
    let done = get(&client, &id).await;
    assert_eq!(done.task.task.status, TaskStatus::Completed, "{done:?}");
    let result = completed(&done);
    assert_eq!(result.is_error, Some(true), "{done:?}");
    assert!(text(&result).contains("Not paid"), "{}", text(&result));

    // Multibanco: cancelling stops waiting and lets the unpaid reference expire.
    let id = start_task(
        &client,
        "multibanco_create_reference",
        json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": "T-MB-1", "amount": 20}),
    )
    .await;
    assert_eq!(
        get(&client, &id).await.task.task.status,
        TaskStatus::Working
    );
    client
        .cancel_task(CancelTaskParams::new(&id))
        .await
        .expect("cancelled");
    let cancelled = get(&client, &id).await;
    assert_eq!(cancelled.task.task.status, TaskStatus::Cancelled);
    let message = cancelled.task.task.status_message.unwrap_or_default();
    assert!(message.contains("expire unpaid"), "{message}");
}

#[tokio::test]
async fn a_pending_stripe_refund_task_completes_when_stripe_settles_it() {
    use indicatif::ProgressBar;
    use paywarden::connectors::stripe::{StripeClient, StripeKey};
    let app = spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.stripe.timeout_ms = 1_000;
    })
    .await;
    let stripe = StripeClient::new(
        app.emulator_url.as_deref().unwrap(),
        StripeKey::parse(paywarden_emulator::DEMO_STRIPE_KEY, false).unwrap(),
        Duration::from_secs(10),
    )
    .unwrap();
    paywarden::seed_ops::seed_ops_demo(&app.store, &stripe, DEMO_ENTITY_ID, &ProgressBar::hidden())
        .await
        .unwrap();
    let plain = app.client("/mcp", Era::Legacy).await;
    let listed = call_ok(
        &plain,
        "list_payments",
        json!({"email": "sarah@example.com", "limit": 10}),
    )
    .await;
    let pi = listed["payments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["amount_cents"] == 4999)
        .map(|p| p["payment_intent_id"].as_str().unwrap().to_string())
        .unwrap();
    let client = task_client(&app, Era::Legacy, DEMO_ENTITY_ID, DEMO_TOKEN).await;
    let mut args = json!({"email": "sarah@example.com", "charge_id": pi});
    let preview = call_ok(&client, "issue_refund", args.clone()).await;
    args["confirmation_token"] = preview["confirmation"]["token"].clone();
    app.arm_fault(
        json!({"provider": "stripe", "method": "POST", "path": "/v1/refunds",
        "action": {"kind": "refund_pending"}}),
    )
    .await;
    let id = start_task(&client, "issue_refund", args).await;
    let waiting = get(&client, &id).await;
    assert_eq!(waiting.task.task.status, TaskStatus::Working);
    let err = client
        .cancel_task(CancelTaskParams::new(&id))
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("requires_action"), "{err:?}");
    let refund_id = waiting
        .task
        .task
        .status_message
        .unwrap()
        .split_whitespace()
        .find(|w| w.starts_with("re_"))
        .unwrap()
        .to_string();

    // Stripe settles it; paywarden books it on its next look (here, a read of the orders).
    let resolved = reqwest::Client::new()
        .post(format!(
            "{}/__emulator/stripe/refunds/{refund_id}",
            app.emulator_url.as_deref().unwrap()
        ))
        .json(&json!({"status": "succeeded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), 200);
    call_ok(
        &plain,
        "get_order_history",
        json!({"email": "sarah@example.com"}),
    )
    .await;
    let done = get(&client, &id).await;
    assert_eq!(done.task.task.status, TaskStatus::Completed, "{done:?}");
    let out = completed(&done).structured_content.unwrap();
    assert_eq!(out["status"], "executed", "{out}");
    assert_eq!(out["refund"]["status"], "succeeded", "{out}");

    // A 2026-07-28 client declaring tasks and form elicitation: the confirmation is a form,
    // and the confirmed call, pending at Stripe, becomes a task.
    let other = listed["payments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["amount_cents"] == 4999 && p["payment_intent_id"] != pi.as_str())
        .map(|p| p["payment_intent_id"].as_str().unwrap().to_string())
        .expect("Sarah's duplicate charge");
    let mut capabilities = ClientCapabilities::builder().enable_tasks().build();
    let mut elicitation = rmcp::model::ElicitationCapability::default();
    elicitation.form = Some(rmcp::model::FormElicitationCapability::default());
    capabilities.elicitation = Some(elicitation);
    let both = client_declaring(&app, capabilities).await;
    let args = json!({"email": "sarah@example.com", "charge_id": other});
    let asked = both
        .call_tool_once(
            CallToolRequestParams::new("issue_refund")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let CallToolResponse::InputRequired(asked) = asked else {
        panic!("a form: {asked:?}");
    };
    app.arm_fault(
        json!({"provider": "stripe", "method": "POST", "path": "/v1/refunds",
        "action": {"kind": "refund_pending"}}),
    )
    .await;
    let mut retry = CallToolRequestParams::new("issue_refund")
        .with_arguments(args.as_object().unwrap().clone())
        .with_request_state(asked.request_state.unwrap());
    retry.input_responses = Some(
        [(
            "confirmation".to_string(),
            json!({"action": "accept", "content": {"confirm": true}}),
        )]
        .into(),
    );
    let CallToolResponse::Task(task) = both.call_tool_once(retry).await.unwrap() else {
        panic!("the confirmed, pending refund is a task");
    };
    let waiting = get(&both, &task.task.task_id).await;
    assert_eq!(waiting.task.task.status, TaskStatus::Working);
}

/// A stateless rmcp client of `app` declaring `capabilities`.
async fn client_declaring(app: &TestApp, capabilities: ClientCapabilities) -> TaskClient {
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        http::HeaderName::from_static("x-entity-id"),
        http::HeaderValue::from_static(DEMO_ENTITY_ID),
    );
    headers.insert(
        http::HeaderName::from_static("x-token"),
        http::HeaderValue::from_static(DEMO_TOKEN),
    );
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            format!("{}/mcp", app.base_url),
        )
        .custom_headers(headers),
    );
    let mut info = Implementation::default();
    info.name = "desk-agent".into();
    info.version = "1".into();
    ClientConfig::new(capabilities, info)
        .with_protocol_version(ProtocolVersion::V_2026_07_28)
        .serve_with_lifecycle(
            transport,
            rmcp::ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("client connects")
}

/// The real binary on port 0 ([`common::serve_binary`]).
async fn serve(dir: &std::path::Path, url: &str) -> (common::BinaryServer, String) {
    common::serve_binary(dir, url).await
}

/// One raw 2026-07-28 request declaring the tasks extension.
async fn rpc(base: &str, method: &str, params: Value) -> Value {
    rpc_with(base, method, params, json!({})).await
}

/// [`rpc`] declaring `capabilities` too.
async fn rpc_with(base: &str, method: &str, params: Value, capabilities: Value) -> Value {
    let mut params = params;
    let mut declared = capabilities;
    declared["extensions"] = json!({"io.modelcontextprotocol/tasks": {}});
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": declared
    });
    let mut request = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("X-Entity-Id", DEMO_ENTITY_ID)
        .header("X-Token", DEMO_TOKEN)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", method);
    if let Some(name) = params["name"].as_str().or(params["taskId"].as_str()) {
        request = request.header("Mcp-Name", name);
    }
    let text = request
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .unwrap_or(text.trim())
        .to_string();
    serde_json::from_str(&json).unwrap_or_else(|_| panic!("{text}"))
}

#[tokio::test]
async fn a_task_survives_a_restart_of_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::fresh().await;
    let url = database
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("paywarden.db").display()));
    let (server, base) = serve(dir.path(), &url).await;
    let created = rpc(
        &base,
        "tools/call",
        json!({"name": "multibanco_create_reference",
               "arguments": {"mb_key": IFTHENPAY_MB_KEY, "order_id": "RESTART-1", "amount": 12.5}}),
    )
    .await;
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    assert_eq!(created["result"]["status"], "working", "{created}");
    let id = created["result"]["taskId"].as_str().unwrap().to_string();
    drop(server);

    let (_server, base) = serve(dir.path(), &url).await;
    let after = rpc(&base, "tasks/get", json!({"taskId": id})).await;
    assert_eq!(after["result"]["status"], "working", "{after}");
    assert_eq!(after["result"]["taskId"], id.as_str());

    // ifthenpay's callback marks the reference paid (as the callback handler does).
    let store = database.store(dir.path()).await;
    let id_of_row: i64 = {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let row = sqlx::query("SELECT id FROM ifthenpay_requests WHERE order_id = 'RESTART-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
        row.try_get("id").unwrap()
    };
    store.mark_ifthenpay_paid(id_of_row).await.unwrap();
    let done = rpc(&base, "tasks/get", json!({"taskId": id})).await;
    assert_eq!(done["result"]["status"], "completed", "{done}");
    assert_eq!(done["result"]["result"]["isError"], false, "{done}");
    assert!(done.to_string().contains("Paid"), "{done}");
}

async fn emulator_post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}{path}",
            app.emulator_url.as_deref().expect("emulator")
        ))
        .json(&body)
        .send()
        .await
        .expect("emulator");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// An OPP refund answered pending (`000.200.000`, the emulator's `opp_pending` fault) becomes a
/// task: `working` while OPP says pending, `completed` with perform_refund's result once the
/// emulator settles it (OPP's webhook notification of the settlement reaches paywarden too);
/// `tasks/cancel` says OPP offers no cancel. A second pending refund declined in the end
/// completes as an error that says nothing moved.
#[tokio::test]
async fn a_pending_opp_transaction_task_follows_opp_until_it_settles() {
    let app = spawn_app_with(|c| c.demo.webhooks = true).await;
    reqwest::get(format!("{}/healthz", app.base_url))
        .await
        .unwrap();
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "100.00",
            Currency::EUR,
        )
        .await;
    let client = task_client(&app, Era::Stateless, DEMO_ENTITY_ID, DEMO_TOKEN).await;
    app.arm_fault(
        json!({"provider": "opp", "method": "POST", "path": "/v1/payments/*",
        "action": {"kind": "opp_pending"}}),
    )
    .await;
    let id = start_task(
        &client,
        "perform_refund",
        json!({"referenceId": db, "amount": "30.00", "currency": "EUR"}),
    )
    .await;
    let waiting = get(&client, &id).await;
    assert_eq!(waiting.task.task.status, TaskStatus::Working, "{waiting:?}");
    let message = waiting.task.task.status_message.clone().unwrap_or_default();
    assert!(message.contains("000.200.000"), "{message}");
    let err = client
        .cancel_task(CancelTaskParams::new(&id))
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("OPP offers no cancel"),
        "{err:?}"
    );
    let refunds = app
        .opp()
        .query_by_id(&demo_credentials(), &db, true, &[PaymentType::Refund])
        .await
        .unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].result.code, "000.200.000");
    let refund = refunds[0].id.clone();
    // The pending 30.00 is held: 80.00 more would refund more than the 100.00 paid if it
    // succeeds, so paywarden refuses it before sending anything.
    let plain = app.client("/mcp", Era::Legacy).await;
    let refused = common::call_err(
        &plain,
        "perform_refund",
        json!({"referenceId": db, "amount": "80.00", "currency": "EUR"}),
    )
    .await;
    assert!(refused.contains("700.400.200"), "{refused}");
    assert!(refused.contains("before sending"), "{refused}");

    // OPP settles it: the task completes with the tool's result, now executed.
    let (status, settled) = emulator_post(
        &app,
        &format!("/__emulator/opp/payments/{refund}"),
        json!({"result": "succeeded"}),
    )
    .await;
    assert_eq!(status, 200, "{settled}");
    let done = get(&client, &id).await;
    assert_eq!(done.task.task.status, TaskStatus::Completed, "{done:?}");
    let result = completed(&done);
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let out = result.structured_content.clone().unwrap();
    assert_eq!(out["status"], "executed", "{out}");
    assert_eq!(out["id"], refund.as_str());
    assert_eq!(out["paymentType"], "RF");
    assert_eq!(out["result"]["code"], "000.600.000", "{out}");
    assert!(text(&result).contains("succeeded"), "{}", text(&result));
    // OPP's notification of the settlement arrived, decrypted and stored.
    let started = std::time::Instant::now();
    loop {
        let events = app.store.events_for(DEMO_ENTITY_ID, &db).await.unwrap();
        if events
            .iter()
            .any(|e| e.event.status.as_deref() == Some("000.600.000"))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no webhook of the settlement: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = client
        .cancel_task(CancelTaskParams::new(&id))
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("nothing to cancel"), "{err:?}");

    // Another pending refund, declined in the end.
    app.arm_fault(
        json!({"provider": "opp", "method": "POST", "path": "/v1/payments/*",
        "action": {"kind": "opp_pending"}}),
    )
    .await;
    let id = start_task(
        &client,
        "perform_refund",
        json!({"referenceId": db, "amount": "20.00", "currency": "EUR"}),
    )
    .await;
    let refund = app
        .opp()
        .query_by_id(&demo_credentials(), &db, true, &[PaymentType::Refund])
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.result.code == "000.200.000")
        .expect("the pending refund")
        .id;
    let (status, _) = emulator_post(
        &app,
        &format!("/__emulator/opp/payments/{refund}"),
        json!({"result": "declined"}),
    )
    .await;
    assert_eq!(status, 200);
    let done = get(&client, &id).await;
    assert_eq!(done.task.task.status, TaskStatus::Completed, "{done:?}");
    let result = completed(&done);
    assert_eq!(result.is_error, Some(true), "{result:?}");
    assert!(text(&result).contains("nothing moved"), "{}", text(&result));
    assert_eq!(result.structured_content.unwrap()["status"], "rejected");
}

/// ifthenpay's request id of the request for `order` made with `key`, whichever entity
/// recorded it.
async fn request_id_of(app: &TestApp, key: &str, order: &str) -> String {
    for entity in [
        DEMO_ENTITY_ID.to_string(),
        format!("key:{}", app.key_ids.id(key)),
    ] {
        let rows = app.store.ifthenpay_requests(&entity).await.unwrap();
        if let Some(row) = rows.into_iter().find(|r| r.order_id == order) {
            return row.request_id.unwrap();
        }
    }
    panic!("no ifthenpay request for {order}");
}

fn pix_arguments(order: &str) -> Value {
    json!({"pix_key": IFTHENPAY_PIX_KEY, "order_id": order, "amount": 50.00,
           "redirect_url": "https://shop.example/r", "customer_name": "Ana Santos",
           "customer_cpf": "74026594025", "customer_email": "ana@example.com",
           "customer_phone": "+5585912345678"})
}

/// Payshop references and PIX payments as tasks: `working` while awaiting payment (the status
/// says where that shopper pays), `completed` once the emulator's shopper pays and ifthenpay's
/// callback reaches paywarden; cancelling an unpaid one stops waiting and says that ifthenpay
/// has no cancel: it expires unpaid.
#[tokio::test]
async fn payshop_and_pix_tasks_follow_the_shopper() {
    let app = guarded_app().await;
    let client = task_client(&app, Era::Stateless, DEMO_ENTITY_ID, DEMO_TOKEN).await;
    let cases = [
        (
            "payshop_create_reference",
            IFTHENPAY_PAYSHOP_KEY,
            "T-PS-1",
            "T-PS-2",
            json!({"payshop_key": IFTHENPAY_PAYSHOP_KEY, "amount": 12.5}),
            "Payshop agent",
        ),
        (
            "pix_create_payment",
            IFTHENPAY_PIX_KEY,
            "T-PIX-1",
            "T-PIX-2",
            pix_arguments(""),
            "PIX",
        ),
    ];
    for (tool, key, paid_order, unpaid_order, base, where_) in cases {
        let mut args = base.clone();
        args["order_id"] = paid_order.into();
        let id = start_task(&client, tool, args).await;
        let waiting = get(&client, &id).await;
        assert_eq!(waiting.task.task.status, TaskStatus::Working, "{tool}");
        let message = waiting.task.task.status_message.clone().unwrap_or_default();
        assert!(message.contains(where_), "{tool}: {message}");
        assert!(
            !message.contains("ATM") || tool != "pix_create_payment",
            "{message}"
        );
        let request_id = request_id_of(&app, key, paid_order).await;
        let paid = shopper(&app, json!({"action": "pay", "request_id": request_id})).await;
        assert_eq!(paid["callback"]["status"], 200, "{tool}: {paid}");
        let done = get(&client, &id).await;
        assert_eq!(
            done.task.task.status,
            TaskStatus::Completed,
            "{tool}: {done:?}"
        );
        let result = completed(&done);
        assert_eq!(result.is_error, Some(false), "{tool}");
        assert!(text(&result).contains("Paid"), "{tool}: {}", text(&result));

        // Unpaid, cancelled: paywarden stops waiting; ifthenpay has no cancel.
        let mut args = base.clone();
        args["order_id"] = unpaid_order.into();
        let id = start_task(&client, tool, args).await;
        client
            .cancel_task(CancelTaskParams::new(&id))
            .await
            .expect("cancelled");
        let cancelled = get(&client, &id).await;
        assert_eq!(cancelled.task.task.status, TaskStatus::Cancelled, "{tool}");
        let message = cancelled.task.task.status_message.unwrap_or_default();
        assert!(
            message.contains("ifthenpay has no cancel"),
            "{tool}: {message}"
        );
        assert!(message.contains("expire"), "{tool}: {message}");
        // Cancelled stays cancelled, and a second cancel has nothing to cancel.
        let err = client
            .cancel_task(CancelTaskParams::new(&id))
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("nothing to cancel"), "{err:?}");
    }
}

/// The attack (black-box test, 2026-12-03): every `tasks/get` of an approval task wrote an
/// audit row (a client polling every two seconds fills the chain), and `lastUpdatedAt` never
/// moved. A status read is audited once per change of status; the change moves
/// `lastUpdatedAt`; a finished task is served from its stored result, nothing runs again.
#[tokio::test]
async fn polling_a_task_audits_each_status_change_once_and_moves_last_updated_at() {
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "900.00",
            Currency::EUR,
        )
        .await;
    let client = task_client(&app, Era::Stateless, DEMO_ENTITY_ID, DEMO_TOKEN).await;
    let id = start_task(
        &client,
        "perform_refund",
        json!({"referenceId": db, "amount": "750.00", "currency": "EUR"}),
    )
    .await;
    let rows = || async { app.store.audit_records(None).await.unwrap().len() };
    let before = rows().await;
    let waiting = get(&client, &id).await;
    assert_eq!(waiting.task.task.status, TaskStatus::Working);
    for _ in 0..5 {
        get(&client, &id).await;
    }
    assert_eq!(
        rows().await,
        before,
        "polling a waiting task wrote audit rows"
    );
    assert_eq!(
        waiting.task.task.last_updated_at, waiting.task.task.created_at,
        "nothing changed yet"
    );

    let approval = app.store.list_approvals(None).await.unwrap().remove(0);
    app.store
        .decide_approval(&approval.id, true, "carol", Some("on the page"))
        .await
        .unwrap();
    let done = get(&client, &id).await;
    assert_eq!(done.task.task.status, TaskStatus::Completed, "{done:?}");
    assert!(
        done.task.task.last_updated_at > waiting.task.task.last_updated_at,
        "{done:?}"
    );
    let after_done = rows().await;
    let audit = format!("{:?}", app.store.audit_records(None).await.unwrap());
    assert!(audit.contains("tasks/get"), "{audit}");
    for _ in 0..5 {
        let again = get(&client, &id).await;
        assert_eq!(again.task.task.status, TaskStatus::Completed);
        assert_eq!(
            again.task.task.last_updated_at,
            done.task.task.last_updated_at
        );
        assert_eq!(
            completed(&again).structured_content.unwrap()["id"],
            completed(&done).structured_content.unwrap()["id"]
        );
    }
    assert_eq!(
        rows().await,
        after_done,
        "polling a finished task wrote audit rows"
    );
    assert_eq!(refunds_of(&app, &db).await, 1);
}
