//! What a deployment relies on: `GET /readyz` (database and providers), `paywarden migrate`,
//! and the refusal of a database migrated by a newer paywarden. Runs on SQLite, or on
//! PostgreSQL with `PAYWARDEN_TEST_DATABASE=postgres`.

mod common;

use std::process::Command;

use common::{spawn_app, spawn_app_with, TestDatabase};
use paywarden::store::{Store, StoreError};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_paywarden");

/// The migration versions this paywarden carries, as `paywarden migrate` lists them.
const ALL: &str = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17";
/// The newest of them.
const LATEST: i64 = 17;

async fn readyz(base_url: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{base_url}/readyz"))
        .await
        .expect("readyz answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("readyz is JSON"))
}

#[tokio::test]
async fn readyz_is_ready_when_the_database_and_providers_answer() {
    let app = spawn_app().await;
    let (status, body) = readyz(&app.base_url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    for check in ["database", "opp", "stripe"] {
        assert_eq!(body["checks"][check]["ok"], true, "{check}: {body}");
    }
    let engine = if common::on_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(body["checks"]["database"]["engine"], engine);
    // /healthz stays a plain liveness answer.
    let health = reqwest::get(format!("{}/healthz", app.base_url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn readyz_names_an_unreachable_provider_with_503() {
    // Port 9 on loopback: nothing listens there.
    let app = spawn_app_with(|c| c.opp.base_url = Some("http://127.0.0.1:9".into())).await;
    let (status, body) = readyz(&app.base_url).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["failed"], serde_json::json!(["opp"]));
    assert_eq!(body["checks"]["opp"]["ok"], false);
    assert!(body["checks"]["opp"]["error"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1:9"));
    assert_eq!(body["checks"]["database"]["ok"], true);
    assert_eq!(body["checks"]["stripe"]["ok"], true);
}

#[tokio::test]
async fn readyz_names_an_unreachable_database_with_503() {
    let app = spawn_app().await;
    app.store.close().await;
    let (status, body) = readyz(&app.base_url).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failed"], serde_json::json!(["database"]));
    assert_eq!(body["checks"]["database"]["ok"], false);
    assert!(body["checks"]["database"]["error"].is_string());
}

/// The database URL the binary should use for `database`, and its environment.
fn database_env(database: &TestDatabase, dir: &std::path::Path) -> String {
    database
        .url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("paywarden.db").display()))
}

#[tokio::test]
async fn migrate_applies_every_version_once_then_reports_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::fresh().await;
    let url = database_env(&database, dir.path());
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env("DATABASE_URL", &url)
            .env_remove("PAYWARDEN_CONFIG")
            .output()
            .expect("paywarden runs")
    };
    let check = run(&["migrate", "--check"]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{out}");
    assert!(out.contains("applied: none"), "{out}");
    assert!(out.contains(&format!("pending: {ALL}")), "{out}");

    let first = run(&["migrate"]);
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{out}");
    assert!(out.contains(&format!("applied now: {ALL}")), "{out}");

    let second = run(&["migrate"]);
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{out}");
    assert!(out.contains("up to date"), "{out}");

    let store = database.store(dir.path()).await;
    let status = store.schema_status().await.unwrap();
    assert_eq!(status.applied, (1..=LATEST).collect::<Vec<_>>());
    assert!(status.pending().is_empty());
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_paywarden_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::fresh().await;
    let store = database.store(dir.path()).await;
    // What a later paywarden would leave behind: a migration this binary does not carry.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         SELECT 99, 'from the future', installed_on, success, checksum, execution_time \
         FROM _sqlx_migrations WHERE version = 1",
    )
    .execute(&sqlx_pool(&database, dir.path()).await)
    .await
    .unwrap();
    store.close().await;

    let url = database_env(&database, dir.path());
    match Store::connect(&url).await {
        Err(StoreError::SchemaTooNew { database, binary }) => {
            assert_eq!((database, binary), (99, LATEST));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let serve = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-seed",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("DATABASE_URL", &url)
        .env_remove("PAYWARDEN_CONFIG")
        .output()
        .expect("paywarden runs");
    assert!(!serve.status.success());
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(
        err.contains("version 99") && err.contains(&format!("up to version {LATEST}")),
        "{err}"
    );
}

async fn sqlx_pool(database: &TestDatabase, dir: &std::path::Path) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&database_env(database, dir))
        .await
        .expect("raw pool")
}

/// A paywarden (not serving) on `url`, with its emulator state in `dir`.
async fn replica(dir: &std::path::Path, url: String) -> paywarden::app::App {
    let mut config = common::test_config(dir);
    config.database_url = Some(url);
    paywarden::app::App::build(
        config,
        paywarden::app::SeedMode::Off,
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .expect("paywarden builds")
}

#[tokio::test]
async fn replicas_on_one_database_open_each_others_approval_question_state() {
    // Two paywardens built on one database (in one process here; the key comes from the
    // database, not the process): a 2026-07-28 approval question sealed by one is answered
    // at the other, so stateless clients need no affinity.
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::fresh().await;
    let a = replica(dir.path(), database_env(&database, dir.path())).await;
    let b = replica(dir.path(), database_env(&database, dir.path())).await;
    let sealed = a
        .mcp_state()
        .approval_questions
        .seal_json(&serde_json::json!({"approval": "apr_x"}))
        .unwrap();
    let opened: Value = b.mcp_state().approval_questions.open_json(&sealed).unwrap();
    assert_eq!(opened["approval"], "apr_x");
    // Another deployment (another database) has a key of its own.
    let other_dir = tempfile::tempdir().unwrap();
    let other_database = TestDatabase::fresh().await;
    let c = replica(
        other_dir.path(),
        database_env(&other_database, other_dir.path()),
    )
    .await;
    assert!(c
        .mcp_state()
        .approval_questions
        .open_json::<Value>(&sealed)
        .is_err());
}

#[tokio::test]
async fn postgres_connections_can_require_tls() {
    if !common::on_postgres() {
        return; // PostgreSQL only
    }
    let database = TestDatabase::fresh().await;
    let url = database.url.clone().expect("postgres url");
    let plain = Store::connect(&url).await.expect("store");
    let pool = sqlx_pool(&database, std::path::Path::new("/")).await;
    let ssl_on: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&pool)
        .await
        .unwrap();
    if ssl_on != "on" {
        eprintln!("skipped: this PostgreSQL server has ssl = {ssl_on}");
        return;
    }
    plain.close().await;
    let store = Store::connect(&format!("{url}?sslmode=require"))
        .await
        .expect("a TLS connection");
    store.ping().await.expect("answers over TLS");
    // paywarden's own connections to this database are all encrypted now.
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT CAST(count(*) AS BIGINT) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
         WHERE a.datname = current_database() AND s.ssl AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(encrypted >= 1, "no encrypted connection seen");
}
