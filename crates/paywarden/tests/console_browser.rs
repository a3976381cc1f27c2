//! The operator console end to end in a real browser, against the real server (port 0, the
//! emulator behind it, the built-in policy, operator alice): an agent asks, over MCP, for a
//! refund the policy sends to a person; `tests/browser/console.mjs` (Playwright driving
//! Debian's headless Chromium) approves it from the console's queue; the agent executes it;
//! the browser finds it in the activity log and on the payment's timeline and downloads its
//! receipt; then the real `paywarden receipt verify` accepts the download and rejects an edited
//! copy. Screenshots of every page at 1280 and 390 px go to `target/console-screenshots/`.
//!
//! Needs `/usr/bin/chromium`, `node` and `tests/browser/node_modules`
//! (`scripts/setup-browser.sh`).

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::*;
use paywarden::config::OperatorConfig;
use paywarden_domain::{Currency, PaymentType};
use serde_json::json;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_paywarden");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn browser(root: &Path, args: &[&str]) {
    assert!(
        Path::new("/usr/bin/chromium").exists()
            && root
                .join("tests/browser/node_modules/playwright-core/package.json")
                .exists(),
        "the browser test needs Chromium and playwright-core: run scripts/setup-browser.sh"
    );
    let shots = root.join("target/console-screenshots");
    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/console.mjs"))
        .args(args)
        .env("PAYWARDEN_SCREENSHOT_DIR", &shots)
        .current_dir(root)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser finishes within 4 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "tests/browser/console.mjs {} failed ({}):\n{stdout}\n{}",
        args[0],
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn verify(file: &Path, public_key: &str) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .args(["receipt", "verify"])
        .arg(file)
        .args(["--public-key", public_key])
        .output()
        .expect("paywarden runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_a_refund_and_follows_it_to_a_verified_receipt() {
    let root = repo_root();
    let app = spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.operators = vec![OperatorConfig {
            name: "alice".into(),
            token_sha256: hex::encode(Sha256::digest(b"alice-token")),
        }];
    })
    .await;
    let payment = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "900.00",
            Currency::EUR,
        )
        .await;
    let agent = app.client("/mcp", Era::Legacy).await;
    let pending = call_ok(
        &agent,
        "perform_refund",
        json!({"referenceId": payment, "amount": "750.00", "currency": "EUR"}),
    )
    .await;
    assert_eq!(pending["status"], "approval_pending", "{pending}");
    let approval = pending["approval"]["id"].as_str().unwrap().to_string();

    browser(&root, &["approve", &app.base_url, &approval, &payment]).await;

    // The agent executes the approved refund, which issues the receipt.
    let done = call_ok(&agent, "get_approval", json!({"approvalId": approval})).await;
    assert_eq!(done["status"], "executed", "{done}");
    let receipt_id = done["receipt"]["id"].as_str().unwrap().to_string();
    assert_eq!(done["receipt"]["authorization"]["decided_by"], "alice");

    let dir = tempfile::tempdir().unwrap();
    let downloaded = dir.path().join("downloaded-receipt.json");
    browser(
        &root,
        &[
            "inspect",
            &app.base_url,
            &approval,
            &payment,
            &receipt_id,
            downloaded.to_str().unwrap(),
        ],
    )
    .await;

    let keys: serde_json::Value = reqwest::get(format!(
        "{}/.well-known/paywarden/receipt-keys.json",
        app.base_url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let public_key = keys["keys"][0]["public_key"].as_str().unwrap();
    let (code, out) = verify(&downloaded, public_key);
    assert_eq!(code, 0, "the downloaded receipt verifies: {out}");

    let mut edited: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&downloaded).unwrap()).unwrap();
    assert_eq!(edited["id"], receipt_id.as_str());
    edited["amount"]["minor"] = json!(7_500_000);
    let tampered = dir.path().join("edited-receipt.json");
    std::fs::write(&tampered, serde_json::to_string_pretty(&edited).unwrap()).unwrap();
    let (code, out) = verify(&tampered, public_key);
    assert_ne!(code, 0, "an edited receipt is rejected: {out}");
}
