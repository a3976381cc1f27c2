//! The `paywarden` binary as a user runs it: `serve` on port 0 with demo data, `seed`,
//! `audit verify` (and its failure on a tampered row).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_paywarden");

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `paywarden serve` and returns it with the base URL from its banner and the banner.
fn serve(data_dir: &std::path::Path) -> (Server, String, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("PAYWARDEN_DEMO__PAYMENTS", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("paywarden starts");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = String::new();
    let mut url = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        banner.push_str(&line);
        banner.push('\n');
        if let Some(rest) = line.split("listening on ").nth(1) {
            url = Some(rest.trim().to_string());
        }
        if line == "}" && url.is_some() {
            break;
        }
    }
    // Keep draining stdout so the server never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    (server, url.expect("banner names the URL"), banner)
}

#[tokio::test]
async fn serve_seeds_demo_data_prints_credentials_and_answers_health() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url, banner) = serve(dir.path());
    assert!(
        banner.contains("X-Entity-Id: 8ac7a4c9000000000000000000000001"),
        "{banner}"
    );
    assert!(banner
        .contains("X-Token:     pw_demo_sandbox_token_only_valid_against_the_paywarden_emulator"));
    assert!(banner.contains("created 20 payments"), "{banner}");
    assert!(banner.contains("/agentic/v1/mcp"));
    let health: serde_json::Value = reqwest::get(format!("{url}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["sandbox"], true);
    drop(server);

    // The emulator kept its state: seeding again finds it.
    let out = Command::new(BIN)
        .args(["seed", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already present"));

    // A restart does not seed twice.
    let (_server, _url, banner) = serve(dir.path());
    assert!(!banner.contains("created 20 payments"), "{banner}");
}

#[tokio::test]
async fn audit_verify_passes_then_names_an_edited_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = paywarden::store::Store::open(&dir.path().join("paywarden.db"))
        .await
        .unwrap();
    for i in 0..3 {
        store
            .append_audit(&paywarden::store::AuditEntry {
                entity_id: "e".into(),
                client_name: None,
                toolset: "opp".into(),
                tool: "perform_refund".into(),
                arguments: serde_json::json!({"amount": format!("{i}.00")}),
                outcome: "ok".into(),
                result_code: Some("000.100.110".into()),
                provider_request_id: None,
                transaction_id: None,
                message: None,
                duration_ms: 1,
                sandbox: true,
            })
            .await
            .unwrap();
    }
    let verify = || {
        Command::new(BIN)
            .args(["audit", "verify", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact: 3 entries"));

    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("paywarden.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE audit_log SET arguments = '{\"amount\":\"900.00\"}' WHERE seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    let out = verify();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entry 2") && err.contains("edited"), "{err}");

    sqlx::query("UPDATE audit_log SET arguments = '{\"amount\":\"1.00\"}' WHERE seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    let out = verify();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("entry 2 is missing"));

    let out = Command::new(BIN)
        .args(["audit", "export", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}
