//! A `confirm` verdict as an `input_required` retry (SEP-2322, MCP 2026-07-28) for clients that
//! declare form elicitation: the real server, rmcp's client (which fulfils input requests
//! through its handler and retries by itself) and raw JSON-RPC over HTTP. The sealed
//! `requestState` is bound to the entity, the tool, the canonical arguments and an expiry, and
//! is single use in the database: tampered, replayed, expired, other-entity and
//! other-arguments states move nothing.

mod common;

use common::*;
use paywarden_domain::{Currency, PaymentType};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig,
    ElicitationCapability, FormElicitationCapability, Implementation, InputRequest,
    ProtocolVersion,
};
use rmcp::ClientServiceExt;
use serde_json::{json, Value};

/// A server with the built-in policy (a capture of 30 EUR is `confirm`).
async fn guarded_app() -> TestApp {
    spawn_app_with(|c| c.safety.policy_file = None).await
}

/// A 2026-07-28 user-facing client that declares form elicitation; `answer` is what its user
/// says to a confirmation form.
#[derive(Clone)]
struct FormClient {
    config: ClientConfig,
    answer: bool,
}

impl rmcp::ClientHandler for FormClient {
    fn get_info(&self) -> ClientConfig {
        self.config.clone()
    }

    async fn create_elicitation(
        &self,
        request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        let rmcp::model::ElicitRequestParams::FormElicitationParams { message, .. } = request
        else {
            panic!("a confirmation is a form");
        };
        assert!(message.contains("30.00 EUR"), "{message}");
        assert!(
            !message.contains("pwc_"),
            "the token is never shown: {message}"
        );
        Ok(
            rmcp::model::ElicitResult::new(rmcp::model::ElicitationAction::Accept)
                .with_content(json!({"confirm": self.answer})),
        )
    }
}

fn headers(
    entity: &'static str,
    token: &'static str,
) -> std::collections::HashMap<http::HeaderName, http::HeaderValue> {
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        http::HeaderName::from_static("x-entity-id"),
        http::HeaderValue::from_static(entity),
    );
    headers.insert(
        http::HeaderName::from_static("x-token"),
        http::HeaderValue::from_static(token),
    );
    headers
}

fn form_config() -> ClientConfig {
    let mut capabilities = ClientCapabilities::default();
    let mut elicitation = ElicitationCapability::default();
    elicitation.form = Some(FormElicitationCapability::default());
    capabilities.elicitation = Some(elicitation);
    let mut info = Implementation::default();
    info.name = "desk-app".into();
    info.version = "1".into();
    ClientConfig::new(capabilities, info).with_protocol_version(ProtocolVersion::V_2026_07_28)
}

async fn form_client(
    app: &TestApp,
    entity: &'static str,
    token: &'static str,
    answer: bool,
) -> rmcp::service::RunningService<rmcp::RoleClient, FormClient> {
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            format!("{}/mcp", app.base_url),
        )
        .custom_headers(headers(entity, token)),
    );
    FormClient {
        config: form_config(),
        answer,
    }
    .serve_with_lifecycle(
        transport,
        rmcp::ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    )
    .await
    .expect("client connects")
}

fn demo() -> (&'static str, &'static str) {
    (
        paywarden_emulator::DEMO_ENTITY_ID,
        paywarden_emulator::DEMO_TOKEN,
    )
}

async fn captures(app: &TestApp, pa: &str) -> usize {
    app.opp()
        .query_by_id(&demo_credentials(), pa, true, &[PaymentType::Capture])
        .await
        .expect("query")
        .len()
}

fn capture(pa: &str) -> CallToolRequestParams {
    CallToolRequestParams::new("perform_capture").with_arguments(
        json!({"referenceId": pa, "amount": "30.00", "currency": "EUR"})
            .as_object()
            .unwrap()
            .clone(),
    )
}

fn accept() -> rmcp::model::InputResponses {
    [(
        "confirmation".to_string(),
        json!({"action": "accept", "content": {"confirm": true}}),
    )]
    .into()
}

/// The first round: an input_required result with a form elicitation and a requestState.
async fn ask(
    client: &rmcp::service::RunningService<rmcp::RoleClient, FormClient>,
    pa: &str,
) -> String {
    let response = client.call_tool_once(capture(pa)).await.expect("answered");
    let CallToolResponse::InputRequired(question) = response else {
        panic!("a 2026-07-28 form client is asked: {response:?}");
    };
    let requests = question.input_requests.as_ref().expect("inputRequests");
    let Some(InputRequest::Elicitation(elicit)) = requests.get("confirmation") else {
        panic!("a confirmation elicitation: {requests:?}");
    };
    let rmcp::model::ElicitRequestParams::FormElicitationParams {
        message,
        requested_schema,
        ..
    } = &elicit.params
    else {
        panic!("form mode");
    };
    assert!(message.contains("30.00 EUR"), "{message}");
    assert!(!message.contains("pwc_"), "{message}");
    let schema = serde_json::to_value(requested_schema).unwrap();
    assert_eq!(
        schema["properties"]["confirm"]["type"], "boolean",
        "{schema}"
    );
    assert_eq!(schema["required"], json!(["confirm"]));
    question.request_state.clone().expect("requestState")
}

async fn retry(
    client: &rmcp::service::RunningService<rmcp::RoleClient, FormClient>,
    pa: &str,
    amount: &str,
    state: &str,
) -> Result<rmcp::model::CallToolResponse, rmcp::ServiceError> {
    let mut params = CallToolRequestParams::new("perform_capture")
        .with_arguments(
            json!({"referenceId": pa, "amount": amount, "currency": "EUR"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .with_request_state(state.to_string());
    params.input_responses = Some(accept());
    client.call_tool_once(params).await
}

#[tokio::test]
async fn the_users_confirmation_executes_once_through_rmcps_own_retry() {
    let app = guarded_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "80.00",
            Currency::EUR,
        )
        .await;
    let (entity, token) = demo();
    // rmcp's call_tool fulfils the form through the handler and retries by itself.
    let client = form_client(&app, entity, token, true).await;
    let result = client.call_tool(capture(&pa)).await.expect("answered");
    let out = result.structured_content.clone().expect("structured");
    assert_eq!(out["status"], "executed", "{out}");
    assert_eq!(out["amount"], "30.00");
    assert_eq!(captures(&app, &pa).await, 1);

    // A user who says no: nothing moves.
    let declining = form_client(&app, entity, token, false).await;
    let result = declining.call_tool(capture(&pa)).await.expect("answered");
    assert_eq!(result.is_error, Some(true), "{result:?}");
    assert!(
        text(&result).contains("did not confirm"),
        "{}",
        text(&result)
    );
    assert_eq!(captures(&app, &pa).await, 1);
}

#[tokio::test]
async fn tampered_replayed_other_entity_and_other_arguments_states_move_nothing() {
    let app = guarded_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "80.00",
            Currency::EUR,
        )
        .await;
    let (entity, token) = demo();
    let client = form_client(&app, entity, token, true).await;
    let state = ask(&client, &pa).await;

    // Tampered: one character of the sealed value changed.
    let mut tampered: Vec<char> = state.chars().collect();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let err = retry(&client, &pa, "30.00", &tampered).await.unwrap_err();
    assert!(format!("{err:?}").contains("requestState"), "{err:?}");

    // Other arguments: a higher amount with the real state.
    let err = retry(&client, &pa, "70.00", &state).await.unwrap_err();
    assert!(format!("{err:?}").contains("requestState"), "{err:?}");

    // Another entity presenting the real state with the same arguments.
    let other = form_client(
        &app,
        paywarden_emulator::SECOND_ENTITY_ID,
        paywarden_emulator::SECOND_TOKEN,
        true,
    )
    .await;
    let err = retry(&other, &pa, "30.00", &state).await.unwrap_err();
    assert!(format!("{err:?}").contains("requestState"), "{err:?}");
    assert_eq!(captures(&app, &pa).await, 0, "no attack moved money");

    // The rightful retry executes, once.
    let done = retry(&client, &pa, "30.00", &state)
        .await
        .expect("answered");
    let CallToolResponse::Complete(done) = done else {
        panic!("{done:?}");
    };
    assert_eq!(done.structured_content.unwrap()["status"], "executed");
    assert_eq!(captures(&app, &pa).await, 1);

    // Replayed: the same state again is refused by the database, nothing moves.
    let err = retry(&client, &pa, "30.00", &state).await.unwrap_err();
    assert!(format!("{err:?}").contains("already used"), "{err:?}");
    assert_eq!(captures(&app, &pa).await, 1);
}

#[tokio::test]
async fn an_expired_state_moves_nothing() {
    let app = spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.safety.confirmation_ttl_secs = 1;
    })
    .await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "80.00",
            Currency::EUR,
        )
        .await;
    let (entity, token) = demo();
    let client = form_client(&app, entity, token, true).await;
    let state = ask(&client, &pa).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let err = retry(&client, &pa, "30.00", &state).await.unwrap_err();
    assert!(format!("{err:?}").contains("expired"), "{err:?}");
    assert_eq!(captures(&app, &pa).await, 0);
}

/// The wire as the 2026-07-28 revision has it, with no SDK in between: `resultType`,
/// `inputRequests` (an `elicitation/create` request in form mode) and `requestState`; a client
/// without elicitation keeps the two-step `confirmation_required` result.
#[tokio::test]
async fn raw_json_rpc_shape_and_clients_without_elicitation_keep_the_token() {
    let app = guarded_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "80.00",
            Currency::EUR,
        )
        .await;
    let http = reqwest::Client::new();
    let (entity, token) = demo();
    let call = |capabilities: Value, extra: Value| {
        let mut params = json!({
            "name": "perform_capture",
            "arguments": {"referenceId": pa, "amount": "30.00", "currency": "EUR"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": capabilities
            }
        });
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
        let request = http
            .post(format!("{}/mcp", app.base_url))
            .header("X-Entity-Id", entity)
            .header("X-Token", token)
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", "2026-07-28")
            .header("Mcp-Method", "tools/call")
            .header("Mcp-Name", "perform_capture")
            .json(&body);
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            let json = text
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .unwrap_or(text.trim())
                .to_string();
            serde_json::from_str::<Value>(&json).unwrap_or_else(|_| panic!("{text}"))
        }
    };
    let plain = call(json!({}), json!({})).await;
    assert_eq!(
        plain["result"]["structuredContent"]["status"], "confirmation_required",
        "{plain}"
    );

    let asked = call(json!({"elicitation": {"form": {}}}), json!({})).await;
    let result = &asked["result"];
    assert_eq!(result["resultType"], "input_required", "{asked}");
    let request = &result["inputRequests"]["confirmation"];
    assert_eq!(request["method"], "elicitation/create", "{asked}");
    assert_eq!(request["params"]["mode"], "form", "{asked}");
    assert_eq!(
        request["params"]["requestedSchema"]["properties"]["confirm"]["type"],
        "boolean"
    );
    let state = result["requestState"].as_str().expect("requestState");
    assert!(!asked.to_string().contains("pwc_"), "{asked}");
    assert_eq!(captures(&app, &pa).await, 0);

    let done = call(
        json!({"elicitation": {"form": {}}}),
        json!({"requestState": state, "inputResponses": {"confirmation": {"action": "accept", "content": {"confirm": true}}}}),
    )
    .await;
    assert_eq!(
        done["result"]["structuredContent"]["status"], "executed",
        "{done}"
    );
    let again = call(
        json!({"elicitation": {"form": {}}}),
        json!({"requestState": state, "inputResponses": {"confirmation": {"action": "accept", "content": {"confirm": true}}}}),
    )
    .await;
    assert_eq!(again["error"]["code"], -32602, "{again}");
    assert_eq!(captures(&app, &pa).await, 1);
}

/// Ten concurrent retries with one requestState: the database lets exactly one through.
#[tokio::test]
async fn concurrent_retries_with_one_state_execute_once() {
    let app = guarded_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "80.00",
            Currency::EUR,
        )
        .await;
    let (entity, token) = demo();
    let client = form_client(&app, entity, token, true).await;
    let state = ask(&client, &pa).await;
    let answers =
        futures::future::join_all((0..10).map(|_| retry(&client, &pa, "30.00", &state))).await;
    let executed = answers
        .iter()
        .filter(|a| matches!(a, Ok(CallToolResponse::Complete(r)) if r.structured_content.as_ref().is_some_and(|s| s["status"] == "executed")))
        .count();
    assert_eq!(executed, 1, "{answers:?}");
    assert_eq!(captures(&app, &pa).await, 1);
}

/// The confirmation token inside a (readable, authenticated) `requestState`, as a client that
/// decodes it would find it.
fn token_in(state: &str) -> String {
    use base64::Engine;
    let engines = [
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    for part in state.split('.') {
        for engine in &engines {
            let Ok(bytes) = engine.decode(part) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            if let Some(at) = text.find("pwc_") {
                return text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .collect();
            }
        }
    }
    panic!("no confirmation token readable in {state}");
}

/// The attack (black-box test, 2026-12-03): the user declines, and the agent takes the token out
/// of the readable `requestState` and calls the tool with it. The user's "no" must be final.
#[tokio::test]
async fn a_declined_confirmation_cannot_be_executed_with_the_token_in_its_state() {
    let app = guarded_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "80.00",
            Currency::EUR,
        )
        .await;
    let (entity, token) = demo();
    let client = form_client(&app, entity, token, true).await;
    let state = ask(&client, &pa).await;
    let mut params = capture(&pa).with_request_state(state.clone());
    params.input_responses =
        Some([("confirmation".to_string(), json!({"action": "decline"}))].into());
    let declined = client.call_tool_once(params).await.expect("answered");
    let CallToolResponse::Complete(declined) = declined else {
        panic!("{declined:?}");
    };
    assert_eq!(declined.is_error, Some(true), "{declined:?}");
    let pwc = token_in(&state);
    let mut with_token = capture(&pa);
    with_token
        .arguments
        .as_mut()
        .unwrap()
        .insert("confirmationToken".into(), Value::String(pwc));
    let answer = client.call_tool_once(with_token).await;
    let said = format!("{answer:?}");
    assert!(
        !said.contains("\"executed\""),
        "the declined confirmation executed: {said}"
    );
    assert_eq!(
        captures(&app, &pa).await,
        0,
        "a declined confirmation moved money"
    );
}

/// One raw 2026-07-28 `tools/call` of `perform_refund` from a client declaring URL-mode
/// elicitation, with `extra` params (`requestState`, `inputResponses`).
async fn raw_refund(app: &TestApp, arguments: Value, extra: Value) -> Value {
    let (entity, token) = demo();
    let mut params = json!({
        "name": "perform_refund",
        "arguments": arguments,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}}
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
    let text = reqwest::Client::new()
        .post(format!("{}/mcp", app.base_url))
        .header("X-Entity-Id", entity)
        .header("X-Token", token)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", "perform_refund")
        .json(&body)
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

/// The attack (black-box test, 2026-12-03): a `human` verdict's `requestState` (URL-mode
/// elicitation of the approval page) was bound to the entity and tool only. After an operator
/// approved a refund of 750.00 EUR, a retry carrying the same state with other arguments
/// (5.00 EUR) executed the approved 750.00 refund. The state is bound to the call's arguments:
/// that retry is refused and moves nothing; the retry with the approved arguments executes it.
#[tokio::test]
async fn an_approval_state_retried_with_other_arguments_moves_nothing() {
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "900.00",
            Currency::EUR,
        )
        .await;
    let approved = json!({"referenceId": db, "amount": "750.00", "currency": "EUR"});
    let asked = raw_refund(&app, approved.clone(), json!({})).await;
    assert_eq!(asked["result"]["resultType"], "input_required", "{asked}");
    let state = asked["result"]["requestState"]
        .as_str()
        .expect("requestState")
        .to_string();
    let approval = app.store.list_approvals(None).await.unwrap().remove(0);
    app.store
        .decide_approval(&approval.id, true, "carol", Some("on the page"))
        .await
        .unwrap();
    let refunds = || async {
        app.opp()
            .query_by_id(&demo_credentials(), &db, true, &[PaymentType::Refund])
            .await
            .unwrap()
            .len()
    };

    let other = json!({"referenceId": db, "amount": "5.00", "currency": "EUR"});
    let answer =
        json!({"requestState": state, "inputResponses": {"approval": {"action": "accept"}}});
    let refused = raw_refund(&app, other, answer.clone()).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    assert_eq!(refunds().await, 0, "the other-arguments retry moved money");

    let done = raw_refund(&app, approved, answer).await;
    assert_eq!(
        done["result"]["structuredContent"]["status"], "executed",
        "{done}"
    );
    assert_eq!(done["result"]["structuredContent"]["amount"], "750.00");
    assert_eq!(refunds().await, 1);
}
