//! The operator console end to end in a real browser, against the real binary (`paywarden
//! serve` on port 0 with a configuration file naming operator alice, the built-in policy, the
//! emulator behind it, SQLite or PostgreSQL): an agent asks, over MCP, for a
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
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use paywarden::connectors::opp::{InitialPaymentRequest, OppClient};
use paywarden_domain::{Currency, Money, PaymentType};
use secrecy::SecretString;
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

/// The running `paywarden serve`; killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `paywarden serve` on port 0 with operator alice; returns it, its base URL and its
/// emulator's URL (both from the start-up banner).
fn serve(data_dir: &Path, database: &TestDatabase) -> (Served, String, String) {
    let config = data_dir.join("paywarden.toml");
    std::fs::write(
        &config,
        format!(
            "[[operators]]\nname = \"alice\"\ntoken_sha256 = \"{}\"\n",
            hex::encode(Sha256::digest(b"alice-token"))
        ),
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-seed",
            "--data-dir",
        ])
        .arg(data_dir)
        .arg("--config")
        .arg(&config)
        .env_remove("DATABASE_URL")
        .env_remove("PAYWARDEN_AUDIT__SIGNING_KEY")
        .env("PAYWARDEN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(url) = &database.url {
        command.env("PAYWARDEN_DATABASE_URL", url);
    }
    let mut child = command.spawn().expect("paywarden serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let served = Served(child);
    let mut lines = BufReader::new(stdout).lines();
    let (mut base, mut emulator) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && (base.is_none() || emulator.is_none()) {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("listening on ").nth(1) {
            base = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.split("offline emulator at ").nth(1) {
            emulator = rest.split(';').next().map(|u| u.trim().to_string());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (
        served,
        base.expect("the banner names the URL"),
        emulator.expect("the banner names the emulator"),
    )
}

/// A card payment made in the emulator, as a shopper's checkout would.
async fn card_payment(emulator: &str) -> String {
    let request = InitialPaymentRequest {
        payment_type: PaymentType::Debit,
        amount: Money::parse("900.00", Currency::EUR).unwrap(),
        payment_brand: "VISA".into(),
        card_number: SecretString::from("4200000000000000".to_string()),
        card_holder: "Jane Jones".into(),
        expiry_month: "05".into(),
        expiry_year: "2034".into(),
        cvv: SecretString::from("123".to_string()),
        merchant_transaction_id: None,
        custom_parameters: vec![],
    };
    OppClient::new(emulator, Duration::from_secs(5))
        .unwrap()
        .create_payment(&demo_credentials(), &request)
        .await
        .expect("payment created")
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_a_refund_and_follows_it_to_a_verified_receipt() {
    let root = repo_root();
    let data = tempfile::tempdir().unwrap();
    let database = TestDatabase::fresh().await;
    let (_served, base, emulator) = serve(data.path(), &database);
    let payment = card_payment(&emulator).await;
    let agent = connect_client(
        &base,
        "/mcp",
        Era::Legacy,
        paywarden_emulator::DEMO_ENTITY_ID,
        paywarden_emulator::DEMO_TOKEN,
    )
    .await;
    let pending = call_ok(
        &agent,
        "perform_refund",
        json!({"referenceId": payment, "amount": "750.00", "currency": "EUR"}),
    )
    .await;
    assert_eq!(pending["status"], "approval_pending", "{pending}");
    let approval = pending["approval"]["id"].as_str().unwrap().to_string();

    browser(&root, &["approve", &base, &approval, &payment]).await;

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
            &base,
            &approval,
            &payment,
            &receipt_id,
            downloaded.to_str().unwrap(),
        ],
    )
    .await;

    let keys: serde_json::Value =
        reqwest::get(format!("{base}/.well-known/paywarden/receipt-keys.json"))
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
