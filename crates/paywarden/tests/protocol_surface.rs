//! The MCP surface around the tools, as the official conformance suite (tests/conformance)
//! checks it: declared capabilities match what is answered, unknown prompts and resources are
//! invalid params / resource-not-found (not "method not found"), `logging/setLevel` is accepted,
//! idle sessions expire after `[http] session_idle_timeout_secs`, and a client's `DELETE` of its
//! session is answered 200.

mod common;

use common::*;
use rmcp::{
    model::{ErrorCode, GetPromptRequestParams, ReadResourceRequestParams},
    ServiceError,
};
use serde_json::json;

const ENDPOINTS: [&str; 2] = ["/mcp", "/agentic/v1/mcp"];

#[tokio::test]
async fn declared_capabilities_match_what_is_answered_in_both_eras() {
    let app = spawn_app().await;
    for path in ENDPOINTS {
        for era in [Era::Legacy, Era::Stateless] {
            let client = app.client(path, era).await;
            let caps = &client.peer_info().expect("server info").capabilities;
            assert!(caps.tools.is_some(), "{path} {era:?}");
            // rmcp answers prompts/list and resources/list (empty) and completion/complete, so
            // they are declared (SEP-2575: answering an undeclared capability is a failure).
            assert!(caps.prompts.is_some(), "{path} {era:?}: {caps:?}");
            assert!(caps.resources.is_some(), "{path} {era:?}: {caps:?}");
            assert!(caps.completions.is_some(), "{path} {era:?}: {caps:?}");
            let prompts = client.list_all_prompts().await.expect("prompts");
            let resources = client.list_all_resources().await.expect("resources");
            if path == "/agentic/v1/mcp" {
                // The OPP seed's endpoint has tools only: the lists are answered, and empty.
                assert!(
                    prompts.is_empty() && resources.is_empty(),
                    "{prompts:?} {resources:?}"
                );
            }

            match client
                .get_prompt_once(GetPromptRequestParams::new("no_such_prompt"))
                .await
            {
                Err(ServiceError::McpError(e)) => {
                    assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{path} {era:?}: {e:?}");
                    assert!(e.message.contains("no_such_prompt"), "{e:?}");
                }
                other => panic!("{path} {era:?}: unknown prompt gave {other:?}"),
            }

            let uri = "test://no-such-resource";
            match client
                .read_resource_once(ReadResourceRequestParams::new(uri))
                .await
            {
                Err(ServiceError::McpError(e)) => {
                    // -32002 for 2025 peers; rmcp upgrades it to -32602 for 2026-07-28 ones
                    // (SEP-2164), and `data.uri` names the resource either way.
                    let expected = match era {
                        Era::Legacy => ErrorCode::RESOURCE_NOT_FOUND,
                        Era::Stateless => ErrorCode::INVALID_PARAMS,
                    };
                    assert_eq!(e.code, expected, "{path} {era:?}: {e:?}");
                    assert_eq!(e.data, Some(json!({ "uri": uri })), "{e:?}");
                }
                other => panic!("{path} {era:?}: unknown resource gave {other:?}"),
            }
        }
    }
}

/// initialize + notifications/initialized over raw HTTP; returns the session id.
async fn open_session(http: &reqwest::Client, url: &str) -> String {
    let response = http
        .post(url)
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "protocol-surface-test", "version": "1"}}}),
        )
        .send()
        .await
        .expect("initialize");
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .expect("session id")
        .to_string();
    let done = in_session(
        http,
        url,
        &session,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(done.status(), 202);
    session
}

async fn in_session(
    http: &reqwest::Client,
    url: &str,
    session: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    http.post(url)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&body)
        .send()
        .await
        .expect("request")
}

fn raw_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-entity-id", DEMO_ENTITY.parse().unwrap());
    headers.insert("x-token", DEMO_SECRET.parse().unwrap());
    headers.insert(
        "accept",
        "application/json, text/event-stream".parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

const DEMO_ENTITY: &str = paywarden_emulator::DEMO_ENTITY_ID;
const DEMO_SECRET: &str = paywarden_emulator::DEMO_TOKEN;

#[tokio::test]
async fn logging_set_level_is_accepted_by_session_clients() {
    let app = spawn_app().await;
    let http = raw_client();
    for path in ENDPOINTS {
        let url = format!("{}{path}", app.base_url);
        let session = open_session(&http, &url).await;
        let response = in_session(
            &http,
            &url,
            &session,
            json!({"jsonrpc": "2.0", "id": 2,
            "method": "logging/setLevel", "params": {"level": "info"}}),
        )
        .await;
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        assert!(body.contains(r#""result":{}"#), "{path}: {body}");
    }
}

#[tokio::test]
async fn idle_sessions_expire_after_the_configured_timeout() {
    let app = spawn_app_with(|c| c.http.session_idle_timeout_secs = 2).await;
    let http = raw_client();
    let url = format!("{}/agentic/v1/mcp", app.base_url);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let session = open_session(&http, &url).await;
    for _ in 0..6 {
        // Traffic keeps it alive past the timeout.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(
            in_session(&http, &url, &session, list.clone())
                .await
                .status(),
            200
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    assert_eq!(in_session(&http, &url, &session, list).await.status(), 404);
}

/// A client ends its session with `DELETE`: the official SDKs count 200 and 204 as success (the
/// Python SDK logs "Session termination failed: 202" otherwise), and the session is gone after.
#[tokio::test]
async fn deleting_a_session_answers_200_and_ends_it() {
    let app = spawn_app().await;
    let http = raw_client();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    for path in ENDPOINTS {
        let url = format!("{}{path}", app.base_url);
        let session = open_session(&http, &url).await;
        let deleted = http
            .delete(&url)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
            .await
            .expect("delete");
        assert_eq!(deleted.status(), 200, "{path}");
        assert_eq!(
            in_session(&http, &url, &session, list.clone())
                .await
                .status(),
            404,
            "{path}: the deleted session still answers"
        );
    }
}

#[test]
fn the_session_idle_timeout_is_configurable_and_defaults_to_five_minutes() {
    assert_eq!(
        paywarden::config::Config::default()
            .http
            .session_idle_timeout_secs,
        300
    );
    let parsed: paywarden::config::Config =
        toml::from_str("[http]\nsession_idle_timeout_secs = 60\n").expect("config");
    assert_eq!(parsed.http.session_idle_timeout_secs, 60);
}

/// A stateless (2026-07-28) `tools/call` whose `Mcp-Method` and `Mcp-Name` headers are
/// `method` and `name` and whose body calls `revenue_summary`: (HTTP status, body).
async fn stateless_call_with_headers(base: &str, method: &str, name: &str) -> (u16, String) {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
    "name": "revenue_summary",
    "arguments": {"start_date": "2026-01-01", "end_date": "2026-12-31"},
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "headers", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    }}});
    let response = raw_client()
        .post(format!("{base}/mcp"))
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", method)
        .header("Mcp-Name", name)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// SEP-2243: middleboxes route a 2026-07-28 request on its `Mcp-Method` and `Mcp-Name` headers
/// without reading the body, so a `tools/call` whose headers name another method or tool is
/// refused before any tool runs (rmcp checks them against the body; paywarden's rmcp patch
/// gives that check only the call's method, name and arguments instead of the whole message:
/// docs/performance.md, "Where an audited read's CPU goes").
#[tokio::test]
async fn a_tool_call_whose_headers_name_another_tool_or_method_is_refused() {
    let app = spawn_app().await;
    let rows = |app: &TestApp| {
        let store = app.store.clone();
        async move { store.audit_records(None).await.unwrap().len() }
    };
    let (status, body) =
        stateless_call_with_headers(&app.base_url, "tools/call", "revenue_summary").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"result\""), "{body}");
    let before = rows(&app).await;
    assert!(before >= 1);

    for (method, name, says) in [
        (
            "tools/call",
            "get_transactions",
            "Mcp-Name header `get_transactions` does not match body value `revenue_summary`",
        ),
        (
            "resources/read",
            "revenue_summary",
            "Mcp-Method header `resources/read` does not match body method `tools/call`",
        ),
    ] {
        let (status, body) = stateless_call_with_headers(&app.base_url, method, name).await;
        assert!(!body.contains("\"result\""), "{method} {name}: {body}");
        assert!(body.contains(says), "{method} {name}: {status} {body}");
    }
    // Neither refused call reached a tool: no audit row was appended for them.
    assert_eq!(rows(&app).await, before);
}
