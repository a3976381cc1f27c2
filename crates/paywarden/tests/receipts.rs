//! Signed receipts end to end: the real server on port 0 (emulator behind it), rmcp's client,
//! the real `paywarden receipt verify` binary, the published key at the well-known URL, and
//! the audit log the receipt points into. Runs on SQLite, and on PostgreSQL with
//! `PAYWARDEN_TEST_DATABASE=postgres`.

mod common;

use common::*;
use indicatif::ProgressBar;
use paywarden_domain::{Currency, PaymentType};
use serde_json::json;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_paywarden");

/// A server with the built-in policy (small operations confirmed, large ones human).
async fn guarded_app() -> TestApp {
    spawn_app_with(|c| c.safety.policy_file = None).await
}

/// Runs `paywarden receipt verify` on `receipt` written to a file; returns (exit code, stdout
/// and stderr).
fn verify_with_binary(
    dir: &std::path::Path,
    receipt: &serde_json::Value,
    keys: &[&str],
) -> (i32, String) {
    let path = dir.join(format!("receipt-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, serde_json::to_string_pretty(receipt).unwrap()).unwrap();
    let mut command = std::process::Command::new(BIN);
    command.args(["receipt", "verify"]).arg(&path);
    for key in keys {
        command.args(["--public-key", key]);
    }
    let out = command.output().expect("paywarden runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The published receipt keys (`GET /.well-known/paywarden/receipt-keys.json`).
async fn published_key(app: &TestApp) -> (String, String) {
    let keys: serde_json::Value = reqwest::get(format!(
        "{}/.well-known/paywarden/receipt-keys.json",
        app.base_url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let key = &keys["keys"][0];
    assert_eq!(key["crv"], "Ed25519", "{keys}");
    (
        key["kid"].as_str().unwrap().to_string(),
        key["public_key"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_confirmed_refund_returns_a_receipt_that_verifies_until_edited() {
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "80.00",
            Currency::EUR,
        )
        .await;
    let client = app.client("/mcp", Era::Legacy).await;
    let args = json!({"referenceId": db, "amount": "12.50", "currency": "EUR"});
    let preview = call_ok(&client, "perform_refund", args.clone()).await;
    assert_eq!(preview["status"], "confirmation_required", "{preview}");
    assert!(
        preview.get("receipt").is_none(),
        "no receipt before money moves"
    );
    let token = preview["confirmation"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut confirmed = args.clone();
    confirmed["confirmationToken"] = json!(token);
    let done = call_ok(&client, "perform_refund", confirmed.clone()).await;
    assert_eq!(done["status"], "executed", "{done}");
    let receipt = done["receipt"].clone();
    assert_eq!(receipt["type"], "paywarden.receipt.v1", "{done}");
    // The text keeps its shape: summary lines, then the whole structured result (receipt
    // included) as the last line, which clients such as the OpenAI Agents SDK parse.
    let raw = call(&client, "perform_refund", confirmed.clone())
        .await
        .unwrap();
    let text = common::text(&raw);
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap()).expect("the last line is JSON");
    assert_eq!(last["receipt"], receipt, "{text}");

    // What it says.
    assert_eq!(receipt["tool"], "perform_refund");
    assert_eq!(receipt["entity"], paywarden_emulator::DEMO_ENTITY_ID);
    assert_eq!(receipt["amount"], json!({"minor": 1250, "currency": "EUR"}));
    assert_eq!(receipt["reference_id"], db.as_str());
    assert_eq!(receipt["policy"]["decision"], "confirm");
    assert!(!receipt["policy"]["rule"].as_str().unwrap().is_empty());
    assert_eq!(receipt["authorization"]["kind"], "confirmation");
    assert_eq!(
        receipt["authorization"]["confirmation_token_sha256"],
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    assert_eq!(receipt["provider"]["name"], "opp");
    assert_eq!(receipt["provider"]["transaction_id"], done["id"]);
    assert_eq!(receipt["provider"]["request_id"], done["ndc"]);

    // No token, key or card number in it.
    let text = receipt.to_string();
    let signing_key =
        std::fs::read_to_string(app.data_dir.path().join("audit-signing.key")).unwrap_or_default();
    for secret in [
        token.as_str(),
        "pwc_",
        "4200000000000000",
        paywarden_emulator::DEMO_TOKEN,
        signing_key.trim(),
    ] {
        assert!(
            secret.is_empty() || !text.contains(secret),
            "{secret:?} in {text}"
        );
    }

    // Its audit position is the execution's row in the audit export.
    let records = app.store.audit_records(None).await.unwrap();
    let seq = receipt["audit"]["seq"].as_i64().unwrap();
    let row = records
        .iter()
        .find(|r| r.seq == seq)
        .expect("the row exists");
    assert_eq!(receipt["audit"]["hash"], row.hash.as_str());
    assert_eq!(row.entry.tool, "perform_refund");
    assert_eq!(row.entry.outcome, "ok");
    assert_eq!(
        row.entry.transaction_id.as_deref(),
        done["id"].as_str(),
        "{row:?}"
    );
    assert_eq!(receipt["request"], row.entry.arguments);

    // It is stored, as returned; a replay returns the same receipt, not a second one.
    let stored = app
        .store
        .receipt(
            receipt["id"].as_str().unwrap(),
            Some(paywarden_emulator::DEMO_ENTITY_ID),
        )
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.body, receipt);
    assert!(app
        .store
        .receipt(
            receipt["id"].as_str().unwrap(),
            Some(paywarden_emulator::SECOND_ENTITY_ID)
        )
        .await
        .unwrap()
        .is_none());
    let again = call_ok(&client, "perform_refund", confirmed).await;
    assert_eq!(again["idempotentReplay"], true);
    assert_eq!(again["receipt"], receipt);
    assert_eq!(app.store.receipts(None).await.unwrap().len(), 1);

    // The real binary accepts it, with its embedded key and with the published key.
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = verify_with_binary(dir.path(), &receipt, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK"), "{out}");
    let (kid, public_key) = published_key(&app).await;
    assert_eq!(receipt["key_id"], kid.as_str());
    let (code, out) = verify_with_binary(dir.path(), &receipt, &[&public_key]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("trusted"), "{out}");

    // An edited copy (the amount changed) is rejected, and says why.
    let mut edited = receipt.clone();
    edited["amount"]["minor"] = json!(125_000);
    let (code, out) = verify_with_binary(dir.path(), &edited, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INVALID") && out.contains("edited"), "{out}");
    let (code, out) = verify_with_binary(dir.path(), &edited, &[&public_key]);
    assert_eq!(code, 1, "{out}");

    // A receipt re-signed by someone else's key verifies only against that key, never the
    // published one.
    let other = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let other_public = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        other.verifying_key().as_bytes(),
    );
    let (code, out) = verify_with_binary(dir.path(), &receipt, &[&other_public]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("none of the trusted"), "{out}");
}

#[tokio::test]
async fn an_approved_refunds_receipt_names_the_operator() {
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "900.00",
            Currency::EUR,
        )
        .await;
    let client = app.client("/mcp", Era::Legacy).await;
    let args = json!({"referenceId": db, "amount": "750.00", "currency": "EUR"});
    let pending = call_ok(&client, "perform_refund", args).await;
    assert_eq!(pending["status"], "approval_pending", "{pending}");
    let id = pending["approval"]["id"].as_str().unwrap().to_string();
    app.store
        .decide_approval(&id, true, "alice", Some("customer called"))
        .await
        .unwrap();
    let done = call_ok(&client, "get_approval", json!({"approvalId": id})).await;
    assert_eq!(done["status"], "executed", "{done}");
    let receipt = &done["receipt"];
    assert_eq!(receipt["authorization"]["kind"], "approval", "{done}");
    assert_eq!(receipt["authorization"]["approval_id"], id.as_str());
    assert_eq!(receipt["authorization"]["decided_by"], "alice");
    assert!(receipt["authorization"]["decided_at"].is_string());
    assert_eq!(
        receipt["authorization"]["confirmation_token_sha256"],
        json!(null)
    );
    assert_eq!(receipt["policy"]["decision"], "human");
    assert_eq!(
        receipt["amount"],
        json!({"minor": 75000, "currency": "EUR"})
    );
    let (_, public_key) = published_key(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = verify_with_binary(dir.path(), receipt, &[&public_key]);
    assert_eq!(code, 0, "{out}");
    // The audit row it names is the execution's.
    let seq = receipt["audit"]["seq"].as_i64().unwrap();
    let records = app.store.audit_records(None).await.unwrap();
    let row = records.iter().find(|r| r.seq == seq).unwrap();
    assert_eq!(receipt["audit"]["hash"], row.hash.as_str());
    assert_eq!(row.entry.transaction_id.as_deref(), done["id"].as_str());
}

#[tokio::test]
async fn a_stripe_refunds_receipt_names_the_refund_and_verifies() {
    let app = spawn_app_with(|c| c.safety.policy_file = None).await;
    let stripe = paywarden::connectors::stripe::StripeClient::new(
        app.emulator_url.as_deref().expect("emulator"),
        paywarden::connectors::stripe::StripeKey::parse(paywarden_emulator::DEMO_STRIPE_KEY, false)
            .unwrap(),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    paywarden::seed_ops::seed_ops_demo(
        &app.store,
        &stripe,
        paywarden_emulator::DEMO_ENTITY_ID,
        &ProgressBar::hidden(),
    )
    .await
    .expect("ops demo seeded");
    let client = app.client("/mcp", Era::Legacy).await;
    let args = json!({"email": "sarah@example.com", "reason": "duplicate"});
    let preview = call_ok(&client, "issue_refund", args.clone()).await;
    assert_eq!(preview["status"], "confirmation_required", "{preview}");
    let token = preview["confirmation"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut confirmed = args;
    confirmed["confirmation_token"] = json!(token);
    let done = call_ok(&client, "issue_refund", confirmed).await;
    assert_eq!(done["status"], "executed", "{done}");
    let receipt = &done["receipt"];
    assert_eq!(receipt["tool"], "issue_refund", "{done}");
    assert_eq!(receipt["toolset"], "ops");
    assert_eq!(receipt["provider"]["name"], "stripe");
    assert_eq!(
        receipt["provider"]["transaction_id"],
        done["refund"]["stripe_refund_id"]
    );
    assert_eq!(
        receipt["amount"],
        json!({"minor": done["refund"]["amount_cents"], "currency": "USD"})
    );
    assert_eq!(receipt["authorization"]["kind"], "confirmation");
    let text = receipt.to_string();
    assert!(
        !text.contains(&token) && !text.contains("sk_test"),
        "{text}"
    );
    assert!(
        !text.contains("sarah@example.com"),
        "personal data masked: {text}"
    );
    let (_, public_key) = published_key(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = verify_with_binary(dir.path(), receipt, &[&public_key]);
    assert_eq!(code, 0, "{out}");
    let mut edited = receipt.clone();
    edited["provider"]["transaction_id"] = json!("re_someone_else");
    let (code, out) = verify_with_binary(dir.path(), &edited, &[&public_key]);
    assert_eq!(code, 1, "{out}");
}
