//! Today's outputs pinned: representative calls of every toolset against the real server (the
//! emulator behind it, rmcp's client or the ifthenpay seed's JSON-RPC endpoint), including
//! error outcomes. Each call's `isError`, text and structured content is a JSON snapshot under
//! `tests/snapshots/`; volatile values (ids, tokens, timestamps, references) are normalised.
//! A restructure of the pipeline must leave every snapshot unchanged.

mod common;

use common::*;
use indicatif::ProgressBar;
use paywarden::connectors::stripe::{StripeClient, StripeKey};
use paywarden_domain::{Currency, PaymentType};
use paywarden_emulator::{
    DEMO_ENTITY_ID, DEMO_STRIPE_KEY, IFTHENPAY_BACKOFFICE_KEY, IFTHENPAY_MBWAY_KEY,
    IFTHENPAY_MB_KEY,
};
use rmcp::model::CallToolResult;
use serde_json::{json, Value};
use std::time::Duration;

/// Volatile values, replaced in the serialised snapshot (text and JSON alike).
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        // The call digest of a derived idempotency key (`confirm:<token hash>:<16 hex>`).
        (
            r"((?:confirm|approval):[0-9A-Za-z_-]+):[0-9a-f]{16}\b",
            "${1}:[call]",
        ),
        // Timestamps (RFC 3339 / ISO, OPP's `yyyy-MM-dd HH:mm:ss.SSS+0000`, ifthenpay's).
        (
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?",
            "[timestamp]",
        ),
        (r"\b20\d{6}\b", "[yyyymmdd]"),
        (r"\b\d{4}-\d{2}-\d{2}\b", "[date]"),
        // Confirmation tokens and approval ids.
        (r"pwc_[0-9A-Za-z_-]+", "pwc_[token]"),
        (r"apr_[0-9A-Za-z_-]+", "apr_[id]"),
        (r"prc_[0-9A-Za-z_-]+", "prc_[id]"),
        // Stripe ids.
        (
            r"\b(pi|re|ch|cus|plink|price|prod|txn|in|pm|py|sub|req)_[0-9A-Za-z]+",
            "${1}_[id]",
        ),
        // OPP's `ndc`, descriptors, paywarden's derived merchant references.
        (r"[0-9a-f]{32}_[0-9a-f]{32}", "[ndc]"),
        (r"\d{4}\.\d{4}\.\d{4} PAYWARDEN", "[descriptor] PAYWARDEN"),
        (r"\bpw[0-9a-f]{30}\b", "pw[derived]"),
        // Keys of this run: the receipt signing key and keyed ids; ifthenpay request ids.
        (r#"(key_id\\?"\s*:\s*\\?")[0-9a-f]{16}"#, "${1}[key_id]"),
        (
            r#"(public_key\\?"\s*:\s*\\?")[A-Za-z0-9+/=]+"#,
            "${1}[public_key]",
        ),
        (
            r#"(request_id\\?"\s*:\s*\\?")[0-9A-Za-z]{20}\b"#,
            "${1}[request_id]",
        ),
        // OPP transaction ids and other 32-hex ids; UUIDs.
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[uuid]",
        ),
        (r"\b[0-9A-Fa-f]{32}\b", "[hex32]"),
        // Signatures and keyed digests.
        (r"\b[0-9a-f]{64}\b", "[hex64]"),
        // No `\b`: a signature may start with `+` or `/`, where no word boundary is.
        (r"[A-Za-z0-9+/_-]{80,}={0,2}", "[base64]"),
        // ifthenpay references (9 digits), request ids, base URLs on port 0.
        (r"\b\d{3} ?\d{3} ?\d{3}\b", "[reference]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        (r"\d+(\.\d+)? ?ms\b", "[duration]"),
    ]
}

/// Runs `f` with the snapshot filters installed.
macro_rules! snap {
    ($name:expr, $value:expr) => {{
        let mut settings = insta::Settings::clone_current();
        for (pattern, replacement) in filters() {
            settings.add_filter(pattern, replacement);
        }
        settings.set_sort_maps(true);
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| insta::assert_json_snapshot!($name, $value));
    }};
}

/// A tool result as one JSON value: `isError`, the text, the structured content.
fn shape(result: &CallToolResult) -> Value {
    json!({
        "isError": result.is_error,
        "text": text(result),
        "structured": result.structured_content,
    })
}

async fn called(client: &Client, tool: &str, args: Value) -> Value {
    shape(&call(client, tool, args).await.expect("tool call answered"))
}

/// A JSON-RPC error of the call (invalid params, unknown tool) as JSON.
async fn refused(client: &Client, tool: &str, args: Value) -> Value {
    match call(client, tool, args).await {
        Err(rmcp::ServiceError::McpError(e)) => {
            json!({"code": e.code.0, "message": e.message, "data": e.data})
        }
        other => panic!("{tool} should be a JSON-RPC error, got {other:?}"),
    }
}

#[tokio::test]
async fn opp_backoffice_outputs() {
    let app = spawn_app_with(|c| c.safety.policy_file = None).await;
    let credentials = demo_credentials();
    let db = app
        .create_payment(&credentials, PaymentType::Debit, "900.00", Currency::EUR)
        .await;
    let client = app.client("/mcp", Era::Legacy).await;

    // A small refund: preview, then the token executes it.
    let args = json!({"referenceId": db, "amount": "20.00", "currency": "EUR"});
    let preview = called(&client, "perform_refund", args.clone()).await;
    snap!("opp_refund_preview", &preview);
    let mut confirmed = args.clone();
    confirmed["confirmationToken"] = preview["structured"]["confirmation"]["token"].clone();
    let done = called(&client, "perform_refund", confirmed.clone()).await;
    snap!("opp_refund_confirmed", &done);
    let replay = called(&client, "perform_refund", confirmed).await;
    snap!("opp_refund_confirmed_replay", &replay);

    // A large refund: a person approves, the agent's polling executes it.
    let args = json!({"referenceId": db, "amount": "750.00", "currency": "EUR"});
    let pending = called(&client, "perform_refund", args.clone()).await;
    snap!("opp_refund_human_pending", &pending);
    let id = pending["structured"]["approval"]["id"]
        .as_str()
        .expect("approval id")
        .to_string();
    let polled = called(&client, "get_approval", json!({"approvalId": id})).await;
    snap!("opp_get_approval_pending", &polled);
    let mut follow_up = args.clone();
    follow_up["approvalId"] = json!(id);
    let waiting = called(&client, "perform_refund", follow_up.clone()).await;
    snap!("opp_refund_human_waiting", &waiting);
    app.store
        .decide_approval(&id, true, "alice", Some("customer called"))
        .await
        .expect("decided");
    let executed = called(&client, "get_approval", json!({"approvalId": id})).await;
    snap!("opp_get_approval_executed", &executed);
    let again = called(&client, "perform_refund", follow_up).await;
    snap!("opp_refund_human_follow_up", &again);

    // Reads.
    let linked = called(&client, "get_transactions", json!({"id": db})).await;
    snap!("opp_get_transactions_linked", &linked);
    let search = called(
        &client,
        "search_transactions",
        json!({"currency": "EUR", "paymentTypes": ["RF"]}),
    )
    .await;
    snap!("opp_search_transactions", &search);

    // A provider rejection: more than is left to refund.
    let over = called(
        &client,
        "perform_refund",
        json!({"referenceId": db, "amount": "500.00", "currency": "EUR"}),
    )
    .await;
    snap!("opp_refund_over_remaining", &over);
}

#[tokio::test]
async fn error_outcomes() {
    // Validation: a JSON-RPC invalid-params error.
    let app = spawn_app_with(|c| c.safety.policy_file = None).await;
    let client = app.client("/mcp", Era::Legacy).await;
    let invalid = refused(
        &client,
        "perform_refund",
        json!({"referenceId": "x", "amount": "1.234", "currency": "EUR"}),
    )
    .await;
    snap!("error_validation_opp", &invalid);
    let invalid = refused(
        &client,
        "issue_refund",
        json!({"email": "not-an-email", "charge_id": "pi_1", "reason": "duplicate"}),
    )
    .await;
    snap!("error_validation_ops", &invalid);
    let unknown = called(
        &client,
        "perform_refund",
        json!({"referenceId": "8ac7a4a2000000000000000000000000"}),
    )
    .await;
    snap!("error_unknown_transaction", &unknown);
    drop(client);
    drop(app);

    // Policy deny.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("strict.toml");
    std::fs::write(
        &path,
        r#"
default = "deny"

[[rule]]
name = "reads"
when = "!moves_money"
action = "allow"
message = "Reads are allowed."

[[rule]]
name = "no-refunds-in-gbp"
when = "tool == 'perform_refund' && currency == 'GBP'"
action = "deny"
message = "GBP refunds go through finance."
"#,
    )
    .expect("policy");
    let app = spawn_app_with(|c| c.safety.policy_file = Some(path.clone())).await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "10.00",
            Currency::GBP,
        )
        .await;
    let client = app.client("/mcp", Era::Legacy).await;
    let denied = called(&client, "perform_refund", json!({"referenceId": db})).await;
    snap!("error_policy_deny_rule", &denied);
    let default = called(
        &client,
        "perform_rebill",
        json!({"referenceId": db, "amount": "1.00", "currency": "GBP"}),
    )
    .await;
    snap!("error_policy_deny_default", &default);
    drop(client);
    drop(app);

    // Read-only mode: money-moving tools are unknown.
    let app = spawn_app_with(|c| c.safety.read_only = true).await;
    let client = app.client("/mcp", Era::Legacy).await;
    let tools = client.list_all_tools().await.expect("tools");
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    snap!("read_only_tools", &names);
    let refusal = refused(
        &client,
        "perform_refund",
        json!({"referenceId": "abcdefgh"}),
    )
    .await;
    snap!("error_read_only_opp", &refusal);
    let refusal = refused(&client, "issue_refund", json!({})).await;
    snap!("error_read_only_ops", &refusal);
    let ifthenpay = ifthenpay_call(
        &app,
        "multibanco_create_reference",
        json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": "RO-1", "amount": 1.0}),
    )
    .await;
    snap!("error_read_only_ifthenpay", &ifthenpay);
    drop(dir);
}

fn stripe(app: &TestApp) -> StripeClient {
    StripeClient::new(
        app.emulator_url.as_deref().expect("emulator"),
        StripeKey::parse(DEMO_STRIPE_KEY, false).expect("key"),
        Duration::from_secs(5),
    )
    .expect("client")
}

#[tokio::test]
async fn ops_outputs() {
    let app = spawn_app_with(|c| c.safety.policy_file = None).await;
    paywarden::seed_ops::seed_ops_demo(
        &app.store,
        &stripe(&app),
        DEMO_ENTITY_ID,
        &ProgressBar::hidden(),
    )
    .await
    .expect("ops demo seeded");
    let client = app.client("/mcp", Era::Legacy).await;

    let listed = called(
        &client,
        "list_payments",
        json!({"email": "sarah@example.com", "limit": 10}),
    )
    .await;
    snap!("ops_list_payments", &listed);
    let newest = listed["structured"]["payments"]
        .as_array()
        .expect("payments")
        .iter()
        .find(|p| p["amount_cents"] == 4999)
        .and_then(|p| p["payment_intent_id"].as_str())
        .expect("the duplicate")
        .to_string();
    let args = json!({"email": "sarah@example.com", "charge_id": newest, "reason": "duplicate"});
    let preview = called(&client, "issue_refund", args.clone()).await;
    snap!("ops_issue_refund_preview", &preview);
    let mut confirmed = args.clone();
    confirmed["confirmation_token"] = preview["structured"]["confirmation"]["token"].clone();
    let done = called(&client, "issue_refund", confirmed.clone()).await;
    snap!("ops_issue_refund_confirmed", &done);
    let replay = called(&client, "issue_refund", confirmed).await;
    snap!("ops_issue_refund_replay", &replay);
    let again = called(&client, "issue_refund", args).await;
    snap!("ops_issue_refund_already_refunded", &again);

    let revenue = called(
        &client,
        "revenue_summary",
        json!({"start_date": "2020-01-01", "end_date": "2029-12-31"}),
    )
    .await;
    snap!("ops_revenue_summary", &revenue);
}

/// A `tools/call` at the ifthenpay seed's endpoint; the JSON-RPC answer with its HTTP status.
async fn ifthenpay_call(app: &TestApp, name: &str, arguments: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/mcp/payments/", app.base_url))
        .json(&json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    json!({"status": status, "body": body})
}

#[tokio::test]
async fn ifthenpay_outputs() {
    let app = spawn_app_with(|c| c.safety.policy_file = None).await;
    let mb = ifthenpay_call(
        &app,
        "multibanco_create_reference",
        json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": "1001", "amount": 25.00, "expiry_days": 3}),
    )
    .await;
    snap!("ifthenpay_multibanco", &mb);
    let bad_key = ifthenpay_call(
        &app,
        "multibanco_create_reference",
        json!({"mb_key": "AAA-000000", "order_id": "1003", "amount": 1.0}),
    )
    .await;
    snap!("ifthenpay_multibanco_bad_key", &bad_key);
    let invalid = ifthenpay_call(
        &app,
        "multibanco_create_reference",
        json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": "1004", "amount": -1}),
    )
    .await;
    snap!("ifthenpay_multibanco_invalid", &invalid);
    let mbway = ifthenpay_call(
        &app,
        "mbway_request_payment",
        json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": "912345678", "amount": 15.50,
            "phone": "351#912345678"}),
    )
    .await;
    snap!("ifthenpay_mbway", &mbway);
    let list = ifthenpay_call(
        &app,
        "payments_list",
        json!({"bo_key": IFTHENPAY_BACKOFFICE_KEY}),
    )
    .await;
    snap!("ifthenpay_payments_list", &list);
}
