//! Tool schemas as clients see them, on every endpoint: `/mcp` and `/agentic/v1/mcp` (both
//! protocol eras), `/mcp/payments/` as rmcp serves it (both eras) and as the ifthenpay seed's
//! own 2025-03-26 JSON-RPC answers it, and `paywarden stdio`, each listed by a real rmcp client.
//!
//! Optional means absent, not null: no input or output schema has a `type` array with
//! `"null"` anywhere (the MCP Inspector's `--strict` portability warning; a nullable output
//! value is an `anyOf` with a `{"type": "null"}` branch), nor a `format` JSON Schema does not
//! define (schemars' `uint32`, `int64`, ...). And an explicit `null` argument is taken as
//! absent on every endpoint.

mod common;

use std::{collections::HashMap, process::Stdio};

use common::{call, call_invalid, call_ok, spawn_app_with, text, Client, Era, TestApp};
use paywarden_emulator::{IFTHENPAY_BACKOFFICE_KEY, IFTHENPAY_MB_KEY};
use rmcp::{
    model::{ClientCapabilities, ClientConfig, Implementation, ProtocolVersion},
    transport::{
        streamable_http_client::StreamableHttpClientTransportConfig, StreamableHttpClientTransport,
    },
    ClientLifecycleMode, ClientServiceExt,
};
use serde_json::{json, Value};

/// The `format` values JSON Schema 2020-12 defines (Validation, section 7.3).
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Every place in `schema` (walked whole: every object and array below it) with a `type`
/// array containing "null", or a non-standard `format`.
fn findings(schema: &Value, path: &str, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get("type") {
                if types.iter().any(|t| t == "null") {
                    out.push(format!("{path}: nullable type array {types:?}"));
                }
            }
            if let Some(Value::String(format)) = map.get("format") {
                if !STANDARD_FORMATS.contains(&format.as_str()) {
                    out.push(format!("{path}: non-standard format {format:?}"));
                }
            }
            for (key, value) in map {
                findings(value, &format!("{path}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                findings(value, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The problems of every tool's input and output schema that `client` lists.
async fn schema_findings(client: &Client, label: &str) -> (usize, Vec<String>) {
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(!tools.is_empty(), "{label}: no tools listed");
    let mut out = Vec::new();
    for tool in &tools {
        let input = Value::Object((*tool.input_schema).clone());
        findings(
            &input,
            &format!("{label} {} inputSchema", tool.name),
            &mut out,
        );
        if let Some(output) = &tool.output_schema {
            let output = Value::Object((**output).clone());
            findings(
                &output,
                &format!("{label} {} outputSchema", tool.name),
                &mut out,
            );
        }
    }
    (tools.len(), out)
}

/// An rmcp client asking for the ifthenpay seed's 2025-03-26: `/mcp/payments/` answers it
/// with the seed's own JSON-RPC (no session, capabilities `{"tools": {}}`).
async fn seed_client(app: &TestApp) -> Client {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp/payments/", app.base_url)),
    );
    let mut info = Implementation::default();
    info.name = "paywarden-tests-seed".into();
    info.version = "1".into();
    let client = ClientConfig::new(ClientCapabilities::default(), info)
        .with_protocol_version(ProtocolVersion::V_2025_03_26)
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("seed-mode client connects");
    let peer = client.peer_info().expect("server info");
    assert_eq!(peer.protocol_version.as_str(), "2025-03-26");
    assert!(
        peer.capabilities.prompts.is_none() && peer.capabilities.resources.is_none(),
        "the seed's own answers (capabilities {{\"tools\": {{}}}}), not rmcp's: {:?}",
        peer.capabilities
    );
    client
}

/// `paywarden stdio` on a fresh data directory, spoken to over its stdin/stdout.
async fn stdio_client(dir: &std::path::Path) -> (Client, tokio::process::Child) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_paywarden"));
    for (name, _) in std::env::vars() {
        if name.starts_with("PAYWARDEN_") || name == "DATABASE_URL" || name == "STRIPE_API_KEY" {
            command.env_remove(name);
        }
    }
    let mut child = command
        .arg("stdio")
        .arg("--data-dir")
        .arg(dir)
        .current_dir(dir)
        .env("PAYWARDEN_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("paywarden stdio starts");
    let stdout = child.stdout.take().expect("stdout");
    let stdin = child.stdin.take().expect("stdin");
    let mut info = Implementation::default();
    info.name = "paywarden-tests-stdio".into();
    info.version = "1".into();
    let client = ClientConfig::new(ClientCapabilities::default(), info)
        .serve_with_lifecycle((stdout, stdin), ClientLifecycleMode::Initialize)
        .await
        .expect("stdio client connects");
    (client, child)
}

async fn spawn() -> TestApp {
    spawn_app_with(|c| c.safety.policy_file = None).await
}

#[tokio::test]
async fn no_schema_on_any_endpoint_has_a_nullable_type_array_or_a_non_standard_format() {
    let app = spawn().await;
    let mut all = Vec::new();
    let mut listed = HashMap::new();
    for path in ["/mcp", "/agentic/v1/mcp", "/mcp/payments/"] {
        for era in [Era::Legacy, Era::Stateless] {
            let label = format!("{path} {era:?}");
            let client = app.client(path, era).await;
            let (count, found) = schema_findings(&client, &label).await;
            listed.insert(label, count);
            all.extend(found);
        }
    }
    let seed = seed_client(&app).await;
    let (count, found) = schema_findings(&seed, "/mcp/payments/ seed").await;
    assert_eq!(count, 9, "the seed's nine tools");
    all.extend(found);

    let dir = tempfile::tempdir().expect("tempdir");
    let (stdio, _child) = stdio_client(dir.path()).await;
    let (count, found) = schema_findings(&stdio, "stdio").await;
    assert_eq!(
        count, listed["/mcp Legacy"],
        "stdio serves /mcp's tools: {listed:?}"
    );
    all.extend(found);
    assert!(
        all.is_empty(),
        "{} schema problems:\n{}",
        all.len(),
        all.join("\n")
    );
}

/// Nullable output values keep their `null` (the ifthenpay seed's `expiry_date` is
/// "string|null"), declared as `anyOf` a plain type and `{"type": "null"}`.
#[tokio::test]
async fn a_nullable_output_is_an_any_of_with_a_null_branch() {
    let app = spawn().await;
    let client = app.client("/mcp/payments/", Era::Legacy).await;
    let tools = client.list_all_tools().await.expect("tools");
    let multibanco = tools
        .iter()
        .find(|t| t.name == "multibanco_create_reference")
        .expect("tool");
    let output = multibanco.output_schema.as_ref().expect("output schema");
    let expiry = &output["properties"]["expiry_date"];
    assert_eq!(
        expiry["anyOf"],
        json!([{"type": "string"}, {"type": "null"}]),
        "{expiry}"
    );
    // An optional input is its plain type, and not required.
    let input = &multibanco.input_schema;
    assert_eq!(
        input["properties"]["expiry_days"]["type"], "integer",
        "{input:?}"
    );
    assert!(!input["required"]
        .as_array()
        .expect("required")
        .contains(&json!("expiry_days")));
    let data = call_ok(
        &client,
        "multibanco_create_reference",
        json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": "NULLABLE-1", "amount": 10.5}),
    )
    .await;
    assert_eq!(data["expiry_date"], Value::Null, "{data}");
}

/// An explicit `null` argument is taken as absent, on every endpoint and for every kind of
/// optional parameter (an `Option`, a list with a default); a `null` for a required one is
/// reported as that argument missing.
#[tokio::test]
async fn an_explicit_null_argument_is_taken_as_absent_on_every_endpoint() {
    let app = spawn().await;
    let opp_nulls = json!({
        "dateFrom": null, "dateTo": null, "paymentTypes": null, "paymentMethods": null,
        "resultCategories": null, "currency": null, "limit": null, "pageNo": null
    });
    for path in ["/mcp", "/agentic/v1/mcp"] {
        for era in [Era::Legacy, Era::Stateless] {
            let client = app.client(path, era).await;
            let nulls = call_ok(&client, "search_transactions", opp_nulls.clone()).await;
            let absent = call_ok(&client, "search_transactions", json!({})).await;
            assert_eq!(
                nulls["count"], absent["count"],
                "{path} {era:?}: {nulls} vs {absent}"
            );
            let message =
                call_invalid(&client, "perform_reversal", json!({"referenceId": null})).await;
            assert!(
                message.contains("missing field `referenceId`"),
                "{path} {era:?}: {message}"
            );
        }
    }

    let list_nulls = json!({
        "bo_key": IFTHENPAY_BACKOFFICE_KEY, "entity": null, "sub_entity": null, "order_id": null,
        "reference": null, "request_id": null, "amount": null, "date_start": null, "date_end": null
    });
    let mb_nulls = |order: &str| json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": order, "amount": 10.5, "expiry_days": null});
    for era in [Era::Legacy, Era::Stateless] {
        let client = app.client("/mcp/payments/", era).await;
        call_ok(&client, "payments_list", list_nulls.clone()).await;
        let data = call_ok(
            &client,
            "multibanco_create_reference",
            mb_nulls(&format!("NULL-{era:?}")),
        )
        .await;
        assert_eq!(data["expiry_date"], Value::Null, "{data}");
    }
    // The seed's own JSON-RPC, as a plain POST.
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/mcp/payments/", app.base_url))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "multibanco_create_reference", "arguments": mb_nulls("NULL-SEED")}}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/mcp/payments/", app.base_url))
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "multibanco_create_reference",
                       "arguments": {"mb_key": IFTHENPAY_MB_KEY, "order_id": null, "amount": 1}}}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("missing field `order_id`"),
        "{answer}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let (stdio, _child) = stdio_client(dir.path()).await;
    let result = call(&stdio, "search_transactions", opp_nulls)
        .await
        .expect("answered");
    assert_eq!(result.is_error, Some(false), "stdio: {}", text(&result));
}
