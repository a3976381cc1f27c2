//! Everything is on the record, and nothing personal or secret is: issue 13, point 6.
//!
//! - The real `paywarden serve` binary gets calls carrying a distinctive CPF, e-mail, phone and
//!   keys (valid and invalid, as strings and as the wrong JSON types) on `/mcp/payments/` and
//!   `/mcp`; none of those values may appear in any error text, in `paywarden audit export`, or
//!   in the server's log output.
//! - `resources/read`, `completion/complete`, an unknown tool (on `/mcp` and `/mcp/payments/`)
//!   and an approval-page view each add an audit row, entity-scoped and masked; the ops
//!   toolset's `customer://{email}` still returns the customer's data to the caller.
//!
//! Runs on SQLite, or PostgreSQL with `PAYWARDEN_TEST_DATABASE=postgres`.

mod common;

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{connect_client, Era, TestDatabase};
use paywarden_emulator::{
    DEMO_ENTITY_ID, DEMO_TOKEN, IFTHENPAY_BACKOFFICE_KEY, IFTHENPAY_GATEWAY_KEY,
    IFTHENPAY_MBWAY_KEY, IFTHENPAY_PIX_KEY,
};
use rmcp::model::{
    ArgumentInfo, CallToolRequestParams, CompleteRequestParams, ReadResourceRequestParams,
    Reference,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_paywarden");

// Distinctive personal data and keys: none of these strings may appear anywhere on the record.
const EMAIL: &str = "zelda.tenant@leak-test.example";
const CPF_VALID: &str = "52998224725";
const CPF_BAD_DIGITS: &str = "52998224700";
const CPF_SHORT: &str = "5299822470";
const CPF_FORMATTED: &str = "529.982.247-25";
const PHONE_INTL: &str = "+5585987654321";
const PHONE_MBWAY: &str = "351#919876543";
const PHONE_MBWAY_BAD: &str = "351#219876543";
const KEY_STRING: &str = "LEAKY-KEY-778899";
const KEY_NUMBER: u64 = 987_654_321;
const KEY_IN_OBJECT: &str = "OBJKEY-4455";
const KEY_IN_ARRAY: &str = "ARRKEY-3322";
const ACCOUNTS_KEY: &str = "ACCTKEY-5566";
const BO_KEY_NUMBER: u64 = 445_566_778;
const SUB_ENTITY: &str = "SUBKEY-9911";

fn needles() -> Vec<String> {
    vec![
        EMAIL.into(),
        "zelda.tenant".into(),
        "leak-test".into(),
        CPF_VALID.into(),
        CPF_BAD_DIGITS.into(),
        CPF_SHORT.into(),
        CPF_FORMATTED.into(),
        "85987654321".into(),
        "919876543".into(),
        "219876543".into(),
        KEY_STRING.into(),
        KEY_NUMBER.to_string(),
        KEY_IN_OBJECT.into(),
        KEY_IN_ARRAY.into(),
        ACCOUNTS_KEY.into(),
        BO_KEY_NUMBER.to_string(),
        SUB_ENTITY.into(),
    ]
}

/// The child process, killed when dropped.
struct Server {
    child: Child,
    url: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// `paywarden serve` (in-process emulator, no demo data) with every log line of stdout and
/// stderr collected, at the most verbose level paywarden's own code logs at.
fn start(config: &std::path::Path) -> Server {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-seed"])
        .env_remove("DATABASE_URL")
        .env("PAYWARDEN_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("paywarden starts");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = child.stderr.take().expect("stderr");
    let err_log = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut l) = err_log.lock() {
                l.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut url = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Ok(mut l) = log.lock() {
            l.push_str(&line);
            l.push('\n');
        }
        if let Some(rest) = line.split("listening on ").nth(1) {
            url = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let out_log = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(mut l) = out_log.lock() {
                l.push_str(&line);
                l.push('\n');
            }
        }
    });
    Server {
        child,
        url: url.expect("a 'listening on' line"),
        log,
    }
}

/// A plain JSON-RPC `tools/call` on the seed's endpoint without credentials; returns the error
/// message or the tool error's text ("" for a success).
async fn seed_call(base: &str, name: &str, arguments: Value) -> (String, Value) {
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/mcp/payments/"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": name, "arguments": arguments}}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON-RPC");
    let text = if let Some(message) = answer["error"]["message"].as_str() {
        message.to_string()
    } else if answer["result"]["isError"] == true {
        answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    } else {
        String::new()
    };
    (text, answer)
}

fn pix(cpf: &str, email: &str, phone: &str) -> Value {
    json!({"pix_key": IFTHENPAY_PIX_KEY, "order_id": "PIX-LEAK", "amount": 50.0,
           "redirect_url": "https://shop.example/return", "customer_name": "Zelda Tenant",
           "customer_cpf": cpf, "customer_email": email, "customer_phone": phone})
}

#[tokio::test]
async fn no_personal_data_or_key_reaches_errors_the_audit_log_or_the_server_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = TestDatabase::fresh().await;
    let database_url = database
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("paywarden.db").display()));
    let config = dir.path().join("paywarden.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = {}\ndata_dir = {}\n\n[demo]\nseed = false\n",
            toml_string(&database_url),
            toml_string(&dir.path().join("data").to_string_lossy()),
        ),
    )
    .expect("config written");
    let server = start(&config);
    let base = server.url.clone();
    let mut errors = Vec::new();
    let mut expect_error = |label: &str, (text, answer): (String, Value)| {
        assert!(!text.is_empty(), "{label} should fail: {answer}");
        errors.push(text);
    };

    // The seed's endpoint, keys as arguments.
    for (label, args) in [
        ("bad CPF digits", pix(CPF_BAD_DIGITS, EMAIL, PHONE_INTL)),
        ("short CPF", pix(CPF_SHORT, EMAIL, PHONE_INTL)),
        ("formatted CPF", pix(CPF_FORMATTED, EMAIL, PHONE_INTL)),
        ("CPF as a number", {
            let mut a = pix(CPF_VALID, EMAIL, PHONE_INTL);
            a["customer_cpf"] = json!(52_998_224_725_u64);
            a
        }),
        (
            "bad e-mail",
            pix(CPF_VALID, "zelda.tenant@leak-test", PHONE_INTL),
        ),
        ("bad phone", pix(CPF_VALID, EMAIL, "+55-85987654321")),
        ("e-mail as an object", {
            let mut a = pix(CPF_VALID, EMAIL, PHONE_INTL);
            a["customer_email"] = json!({"address": EMAIL});
            a
        }),
    ] {
        expect_error(label, seed_call(&base, "pix_create_payment", args).await);
    }
    let (text, answer) = seed_call(
        &base,
        "pix_create_payment",
        pix(CPF_VALID, EMAIL, PHONE_INTL),
    )
    .await;
    assert!(text.is_empty(), "a valid PIX payment: {answer}");
    expect_error(
        "bad MB WAY phone",
        seed_call(
            &base,
            "mbway_request_payment",
            json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": "W-LEAK", "amount": 5.0, "phone": PHONE_MBWAY_BAD}),
        )
        .await,
    );
    let (text, answer) = seed_call(
        &base,
        "mbway_request_payment",
        json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": "W-OK", "amount": 5.0, "phone": PHONE_MBWAY}),
    )
    .await;
    assert!(text.is_empty(), "a valid MB WAY request: {answer}");
    expect_error(
        "bad Cofidis contact",
        seed_call(
            &base,
            "cofidis_create_payment",
            json!({"cofidis_key": "COF-000001", "order_id": "C-LEAK", "amount": 100.0,
                   "return_url": "https://shop.example/r", "customer_email": "zelda.tenant at leak-test.example",
                   "customer_phone": "85987654321"}),
        )
        .await,
    );
    for (label, key) in [
        ("key as a number", json!(KEY_NUMBER)),
        ("key in an object", json!({"k": KEY_IN_OBJECT})),
        ("key in an array", json!([KEY_IN_ARRAY])),
        ("a key ifthenpay refuses", json!(KEY_STRING)),
        (
            "a key with a control character",
            json!(format!("{KEY_STRING}\n")),
        ),
    ] {
        expect_error(
            label,
            seed_call(
                &base,
                "multibanco_create_reference",
                json!({"mb_key": key, "order_id": "MB-LEAK", "amount": 1.0}),
            )
            .await,
        );
    }
    for accounts in [
        ACCOUNTS_KEY.to_string(),
        format!("CCARD|{ACCOUNTS_KEY}"),
        format!("VISA|{ACCOUNTS_KEY}"),
        format!("CCARD|{ACCOUNTS_KEY} x"),
    ] {
        expect_error(
            &accounts,
            seed_call(
                &base,
                "pinpay_create_payment",
                json!({"gateway_key": IFTHENPAY_GATEWAY_KEY, "order_id": "P-LEAK", "amount": 3.0, "accounts": accounts}),
            )
            .await,
        );
    }
    expect_error(
        "bo_key as a number",
        seed_call(&base, "payments_list", json!({"bo_key": BO_KEY_NUMBER})).await,
    );
    let (text, answer) = seed_call(
        &base,
        "payments_list",
        json!({"bo_key": IFTHENPAY_BACKOFFICE_KEY, "sub_entity": SUB_ENTITY}),
    )
    .await;
    assert!(text.is_empty(), "{answer}");
    expect_error(
        "an unknown tool named like an e-mail",
        seed_call(&base, EMAIL, json!({"customer_cpf": CPF_VALID})).await,
    );

    // The unified endpoint, as the demo entity.
    let client = connect_client(&base, "/mcp", Era::Legacy, DEMO_ENTITY_ID, DEMO_TOKEN).await;
    let call = |name: &str, args: Value| {
        let Value::Object(args) = args else {
            panic!("object")
        };
        client.call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(args))
    };
    let error_text = |r: Result<rmcp::model::CallToolResult, rmcp::ServiceError>| match r {
        Ok(result) if result.is_error == Some(true) => common::text(&result),
        Ok(result) => panic!("should fail: {result:?}"),
        Err(e) => e.to_string(),
    };
    for (name, args) in [
        ("lookup_customer", json!({"email": EMAIL})),
        ("get_order_history", json!({"email": EMAIL})),
        ("list_payments", json!({"email": EMAIL, "limit": 5})),
        (
            "lookup_customer",
            json!({"email": "zelda.tenant@@leak-test"}),
        ),
        ("lookup_customer", json!({"email": 52_998_224_725_u64})),
        ("pix_create_payment", pix(CPF_BAD_DIGITS, EMAIL, PHONE_INTL)),
        (
            "multibanco_create_reference",
            json!({"mb_key": KEY_NUMBER, "order_id": "U-1", "amount": 1.0}),
        ),
        (
            "mbway_request_payment",
            json!({"mbway_key": {"k": KEY_IN_OBJECT}, "order_id": "U-2", "amount": 1.0, "phone": PHONE_MBWAY}),
        ),
        (
            EMAIL,
            json!({"customer_cpf": CPF_VALID, "mb_key": KEY_STRING}),
        ),
    ] {
        errors.push(error_text(call(name, args).await));
    }
    for uri in [
        format!("customer://{EMAIL}"),
        "customer://zelda.tenant%40leak-test.example".to_string(),
        format!("payment://{CPF_VALID}"),
    ] {
        match client
            .read_resource(ReadResourceRequestParams::new(uri.clone()))
            .await
        {
            Ok(r) => panic!("{uri} should not be found: {r:?}"),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let completion = client
        .complete(CompleteRequestParams::new(
            Reference::for_resource("customer://{email}"),
            ArgumentInfo::new("email", "zelda.tenant@leak"),
        ))
        .await
        .expect("completion answered");
    assert!(completion.completion.values.is_empty());
    let _ = client.cancel().await;

    // What the record holds.
    let export = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["audit", "export"])
        .env_remove("DATABASE_URL")
        .output()
        .expect("paywarden audit export runs");
    assert!(export.status.success(), "{export:?}");
    let export = String::from_utf8_lossy(&export.stdout).to_string();
    let rows: Vec<Value> = export
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let count = |tool: &str| rows.iter().filter(|r| r["tool"] == tool).count();
    // The calls are on the record (so the greps below look at something).
    assert!(count("pix_create_payment") >= 9, "{export}");
    assert!(count("multibanco_create_reference") >= 6, "{export}");
    assert!(count("resources/read") >= 3, "{export}");
    assert!(count("completion/complete") >= 1, "{export}");
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(log.contains("listening on"), "{log}");
    let errors = errors.join("\n");
    let mut leaks = Vec::new();
    for needle in needles() {
        for (place, text) in [
            ("an error", &errors),
            ("the audit export", &export),
            ("the server log", &log),
        ] {
            if let Some(at) = text.find(&needle) {
                let start = at.saturating_sub(120);
                let end = (at + needle.len() + 120).min(text.len());
                let context = text.get(start..end).unwrap_or(text.as_str());
                leaks.push(format!("{needle:?} in {place}: ...{context}..."));
            }
        }
    }
    assert!(leaks.is_empty(), "leaked:\n{}", leaks.join("\n"));
    // The errors still say what was wrong.
    assert!(errors.contains("customer_cpf"), "{errors}");
    assert!(errors.contains("mb_key"), "{errors}");
    drop(server);
    drop(database);
}

const OPERATOR: &str = "olga";
const OPERATOR_TOKEN: &str = "olga-operator-token";

/// The audit rows of `entity` (every row with `None`).
async fn rows(app: &common::TestApp, entity: Option<&str>) -> Vec<paywarden::store::AuditRecord> {
    app.store.audit_records(entity).await.expect("audit rows")
}

#[tokio::test]
async fn resources_completions_unknown_tools_and_approval_page_views_are_audited() {
    use indicatif::ProgressBar;
    use paywarden::connectors::stripe::{StripeClient, StripeKey};
    let app = common::spawn_app_with(|c| {
        c.operators = vec![paywarden::config::OperatorConfig {
            name: OPERATOR.into(),
            token_sha256: paywarden::service::safety::token_hash(OPERATOR_TOKEN),
        }];
    })
    .await;
    let stripe = StripeClient::new(
        app.emulator_url.as_deref().expect("emulator"),
        StripeKey::parse(paywarden_emulator::DEMO_STRIPE_KEY, false).expect("key"),
        Duration::from_secs(5),
    )
    .expect("stripe");
    paywarden::seed_ops::seed_ops_demo(&app.store, &stripe, DEMO_ENTITY_ID, &ProgressBar::hidden())
        .await
        .expect("ops demo data");
    let client = app.client("/mcp", Era::Legacy).await;

    // resources/read: the caller gets the customer's data; the row names the read, masked.
    let before = rows(&app, Some(DEMO_ENTITY_ID)).await.len();
    let read = client
        .read_resource(ReadResourceRequestParams::new(
            "customer://sarah@example.com",
        ))
        .await
        .expect("sarah's profile");
    let rmcp::model::ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
        panic!("text contents");
    };
    assert!(
        text.contains("sarah@example.com"),
        "the result is not masked: {text}"
    );
    let after = rows(&app, Some(DEMO_ENTITY_ID)).await;
    assert_eq!(after.len(), before + 1, "resources/read adds one row");
    let row = &after[before].entry;
    assert_eq!(
        (row.toolset.as_str(), row.tool.as_str()),
        ("ops", "resources/read")
    );
    assert_eq!(row.outcome, "ok");
    let recorded = serde_json::to_string(row).expect("json");
    assert!(recorded.contains("customer://"), "{recorded}");
    assert!(!recorded.contains("sarah@example.com"), "{recorded}");

    // completion/complete.
    let before = after.len();
    let completion = client
        .complete(CompleteRequestParams::new(
            Reference::for_resource("customer://{email}"),
            ArgumentInfo::new("email", "sa"),
        ))
        .await
        .expect("completion");
    assert_eq!(
        completion.completion.values,
        vec!["sarah@example.com".to_string()]
    );
    let after = rows(&app, Some(DEMO_ENTITY_ID)).await;
    assert_eq!(after.len(), before + 1, "completion/complete adds one row");
    assert_eq!(after[before].entry.tool, "completion/complete");
    assert!(!serde_json::to_string(&after[before].entry)
        .expect("json")
        .contains("sarah@example.com"));

    // An unknown tool on /mcp.
    let before = after.len();
    let unknown = client
        .call_tool(
            CallToolRequestParams::new("transfer_everything").with_arguments(
                json!({"customer_email": "sarah@example.com"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
        )
        .await;
    assert!(unknown.is_err(), "{unknown:?}");
    let after = rows(&app, Some(DEMO_ENTITY_ID)).await;
    assert_eq!(after.len(), before + 1, "an unknown tool adds one row");
    let row = &after[before].entry;
    assert_eq!(row.tool, "transfer_everything");
    assert_eq!(row.outcome, "error");
    assert!(!serde_json::to_string(row)
        .expect("json")
        .contains("sarah@example.com"));

    // An unknown tool on /mcp/payments/ (no credentials: the anonymous scope).
    let before = rows(&app, None).await.len();
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/mcp/payments/", app.base_url))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "refund_all", "arguments": {}}}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    let after = rows(&app, None).await;
    assert_eq!(after.len(), before + 1, "an unknown seed tool adds one row");
    assert_eq!(after[before].entry.tool, "refund_all");
    assert_eq!(after[before].entry.toolset, "ifthenpay");

    // The approval page: the list and one request's page, each viewed by the operator.
    let approval = app
        .store
        .create_approval(paywarden::store::NewApproval {
            entity_id: DEMO_ENTITY_ID.into(),
            client_name: Some("tests".into()),
            toolset: "opp".into(),
            tool: "perform_refund".into(),
            arguments: json!({"referenceId": "8ac7a4c9000000000000000000000abc", "amount": "500.00", "currency": "EUR"}),
            request_hash: "0".repeat(64),
            preview: json!({"tool": "perform_refund", "operation": "refund (RF)", "entity": DEMO_ENTITY_ID,
                            "amount": "500.00", "currency": "EUR", "sandbox": true}),
            rule: "refund_over_limit".into(),
            message: "needs a person".into(),
            ttl: chrono::Duration::hours(1),
        })
        .await
        .expect("approval");
    let http = reqwest::Client::new();
    let view = |path: String| {
        http.get(format!("{}{path}", app.base_url))
            .basic_auth(OPERATOR, Some(OPERATOR_TOKEN))
            .send()
    };
    let before = rows(&app, None).await.len();
    assert_eq!(view("/approvals".into()).await.expect("list").status(), 200);
    let after = rows(&app, None).await;
    assert_eq!(after.len(), before + 1, "viewing the list adds one row");
    assert_eq!(after[before].entry.tool, "approval_page_view");
    assert_eq!(
        after[before].entry.client_name.as_deref(),
        Some("operator:olga")
    );
    let before = rows(&app, Some(DEMO_ENTITY_ID)).await.len();
    let page = view(format!("/approvals/{}", approval.id))
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let after = rows(&app, Some(DEMO_ENTITY_ID)).await;
    assert_eq!(
        after.len(),
        before + 1,
        "viewing a request adds one row to its entity's record"
    );
    let row = &after[before].entry;
    assert_eq!(row.tool, "approval_page_view");
    assert_eq!(row.transaction_id.as_deref(), Some(approval.id.as_str()));
    // Without credentials nothing is shown, and nothing is recorded as a view.
    let before = rows(&app, None).await.len();
    let anonymous = http
        .get(format!("{}/approvals/{}", app.base_url, approval.id))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(rows(&app, None).await.len(), before);
    assert!(app.store.verify_audit().await.expect("verify").is_none());
}
