//! The `paywarden` binary as a user runs it: `serve` on port 0 with demo data, `seed`,
//! `audit verify` (and its failure on a tampered row), and where each finds its data directory.

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
    assert!(
        banner.contains(&format!("  Data: {}\n", dir.path().display())),
        "the banner names the data directory: {banner}"
    );
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

/// `paywarden ARGS` from `cwd` with only `env` (no PAYWARDEN_*, DATABASE_URL or STRIPE_API_KEY
/// of the caller), as a desktop app starts it.
fn run_in(cwd: &std::path::Path, env: &[(&str, &std::ffi::OsStr)], args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().copied())
        .env("PAYWARDEN_DEMO__PAYMENTS", "3")
        .env("NO_COLOR", "1")
        .output()
        .expect("paywarden runs");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[derive(Debug)]
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

#[test]
fn the_data_dir_never_depends_on_where_paywarden_is_started() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, home) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("home"),
    );
    for dir in [&a, &b, &home] {
        std::fs::create_dir(dir).unwrap();
    }
    let home_env = [("HOME", home.as_os_str())];

    // Nothing named: the per-user data directory, found again from another directory.
    let first = run_in(&a, &home_env, &["seed"]);
    assert!(first.ok && first.stdout.contains("created"), "{first:?}");
    let per_user = if cfg!(target_os = "macos") {
        home.join("Library/Application Support/paywarden")
    } else {
        home.join(".local/share/paywarden")
    };
    assert!(per_user.join("emulator.db").is_file(), "{first:?}");
    assert!(
        first.stderr.contains(&per_user.display().to_string()),
        "the path is logged: {first:?}"
    );
    let again = run_in(&b, &home_env, &["seed"]);
    assert!(
        again.ok && again.stdout.contains("already present"),
        "{again:?}"
    );
    assert!(
        again.stdout.contains("ops demo data already present"),
        "{again:?}"
    );
    assert_eq!(
        std::fs::read_dir(&a).unwrap().count(),
        0,
        "nothing in the working directory"
    );

    // A SQLite DATABASE_URL: the state sits beside it; missing parents are created.
    let database = root.path().join("new/sub/payments.db");
    let url = format!("sqlite:///{}", database.display());
    let db_env = [
        ("HOME", home.as_os_str()),
        ("DATABASE_URL", std::ffi::OsStr::new(&url)),
    ];
    let seeded = run_in(&a, &db_env, &["seed"]);
    assert!(seeded.ok, "{seeded:?}");
    assert!(database.is_file(), "{seeded:?}");
    assert!(root
        .path()
        .join("new/sub/payments.db-paywarden/emulator.db")
        .is_file());
    let again = run_in(&b, &db_env, &["seed"]);
    assert!(
        again.stdout.contains("ops demo data already present"),
        "{again:?}"
    );

    // An explicit relative --data-dir: from the working directory, logged as an absolute path.
    let explicit = run_in(
        &b,
        &home_env,
        &["audit", "verify", "--data-dir", "./rel/data"],
    );
    assert!(explicit.ok, "{explicit:?}");
    assert!(b.join("rel/data/paywarden.db").is_file(), "{explicit:?}");
    assert!(
        explicit
            .stderr
            .contains(&b.join("rel/data").display().to_string()),
        "{explicit:?}"
    );

    // A directory that cannot be created (not even by root): the error names it.
    let refused = run_in(
        &b,
        &home_env,
        &["seed", "--data-dir", "/proc/paywarden-data"],
    );
    assert!(!refused.ok, "{refused:?}");
    assert!(
        refused.stderr.contains("/proc/paywarden-data"),
        "{refused:?}"
    );
}
