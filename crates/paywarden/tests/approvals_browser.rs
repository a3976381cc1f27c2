//! The operator approval page in a real browser: serves `approvals_http::router` with two
//! pending requests, runs `tests/browser/approve.mjs` (Playwright driving Debian's headless
//! Chromium) to approve the first and deny the second by clicking, then checks the store.
//!
//! Needs `/usr/bin/chromium`, `node` and `tests/browser/node_modules`; without them this test
//! fails and says to run `scripts/setup-browser.sh`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use paywarden::{
    approvals_http,
    config::OperatorConfig,
    store::{ApprovalStatus, NewApproval, Store},
};
use sha2::{Digest, Sha256};

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Panics with the fix when something the browser test needs is missing.
fn require_prerequisites(root: &Path) {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (Debian package chromium)"));
    }
    if !root
        .join("tests/browser/node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push("tests/browser/node_modules (npm ci --prefix tests/browser)".to_string());
    }
    if std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        missing.push("node (Node.js >= 20)".to_string());
    }
    assert!(
        missing.is_empty(),
        "the browser test needs: {}. Run scripts/setup-browser.sh, then run the test again.",
        missing.join(", ")
    );
}

fn request(amount: &str, minor: i64, reference: &str) -> NewApproval {
    NewApproval {
        entity_id: "8ac7a4c9000000000000000000000001".into(),
        client_name: Some("claude-code".into()),
        toolset: "opp".into(),
        tool: "refund".into(),
        arguments: serde_json::json!({
            "referenceId": reference,
            "amount": amount,
            "currency": "EUR",
            "merchantTransactionId": "order-7731",
            "idempotencyKey": format!("refund-{reference}"),
        }),
        request_hash: hex::encode(Sha256::digest(reference.as_bytes())),
        // The shape of `service::safety::PreviewView`.
        preview: serde_json::json!({
            "tool": "refund",
            "operation": "refund (RF)",
            "entity": "8ac7a4c9000000000000000000000001",
            "referenceId": reference,
            "referencePaymentType": "DB",
            "amount": amount,
            "amountMinor": minor,
            "currency": "EUR",
            "from": "merchant entity 8ac7a4c9000000000000000000000001",
            "to": "card holder Jane Doe (VISA ending 1111)",
            "sandbox": true,
        }),
        rule: "refund_over_limit".into(),
        message: "Refunds over 100.00 EUR need an operator's approval.".into(),
        ttl: chrono::Duration::hours(24),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_and_denies_in_chromium() {
    let root = repo_root();
    require_prerequisites(&root);

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("paywarden.db"))
        .await
        .expect("store");
    let first = store
        .create_approval(request(
            "250.00",
            25_000,
            "8ac7a4c98f0c4b1a9b1e2d3c4b5a6978",
        ))
        .await
        .expect("create");
    let second = store
        .create_approval(request(
            "1200.00",
            120_000,
            "8ac7a4c9aa11bb22cc33dd44ee55ff66",
        ))
        .await
        .expect("create");

    let operators = vec![OperatorConfig {
        name: "alice".into(),
        token_sha256: hex::encode(Sha256::digest(b"alice-token")),
    }];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = approvals_http::router(store.clone(), operators);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/approve.mjs"))
        .args([&base, &first.id, &second.id])
        .current_dir(&root)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test finishes within 3 minutes")
        .expect("node runs");
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "tests/browser/approve.mjs failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    let approved = store
        .approval(&first.id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(approved.status, ApprovalStatus::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("alice"));
    assert_eq!(
        approved.decision_note.as_deref(),
        Some("approved in the browser test")
    );
    let denied = store
        .approval(&second.id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(denied.status, ApprovalStatus::Denied);
    assert_eq!(denied.decided_by.as_deref(), Some("alice"));
}
