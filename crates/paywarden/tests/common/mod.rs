//! Test helpers: start the real paywarden on port 0 with the emulator behind it, and talk to it
//! with rmcp's Streamable HTTP client.
#![allow(dead_code)]

use std::{collections::HashMap, time::Duration};

use indicatif::ProgressBar;
use paywarden::{
    app::{App, SeedMode},
    config::Config,
    connectors::opp::{InitialPaymentRequest, OppClient, OppCredentials},
    store::Store,
};
use paywarden_domain::{Currency, Money, PaymentType};
use paywarden_emulator::{DEMO_ENTITY_ID, DEMO_TOKEN, SECOND_ENTITY_ID, SECOND_TOKEN};
use rmcp::{
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
        ProtocolVersion,
    },
    service::RunningService,
    transport::{
        streamable_http_client::StreamableHttpClientTransportConfig, StreamableHttpClientTransport,
    },
    ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceError,
};
use secrecy::SecretString;

pub type Client = RunningService<RoleClient, ClientConfig>;

/// The protocol era a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2025-11-25 with sessions.
    Legacy,
    /// 2026-07-28, stateless.
    Stateless,
}

pub struct TestApp {
    pub base_url: String,
    pub emulator_url: Option<String>,
    pub store: Store,
    pub data_dir: tempfile::TempDir,
    /// The server's keyed ids of provider keys (`key:<id>` entities).
    pub key_ids: paywarden::audit_anchor::KeyIds,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    // Declared last: dropped after the server was told to stop.
    pub database: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The PostgreSQL server the tests use when `PAYWARDEN_TEST_DATABASE=postgres`
/// (`PAYWARDEN_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432`; trust auth).
pub fn pg_server_url() -> String {
    std::env::var("PAYWARDEN_TEST_PG_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// Whether this run tests on PostgreSQL (`PAYWARDEN_TEST_DATABASE=postgres`) rather than SQLite.
pub fn on_postgres() -> bool {
    matches!(
        std::env::var("PAYWARDEN_TEST_DATABASE").as_deref(),
        Ok("postgres") | Ok("postgresql")
    )
}

/// A test's own database: on PostgreSQL a fresh `pw_test_<random>` database, dropped when this
/// value is dropped; on SQLite nothing (the app uses `paywarden.db` in its temporary data dir).
pub struct TestDatabase {
    /// The `database_url` to configure (`None`: SQLite in the data directory).
    pub url: Option<String>,
    name: Option<String>,
}

impl TestDatabase {
    /// A fresh database for one test, per `PAYWARDEN_TEST_DATABASE`.
    pub async fn fresh() -> Self {
        if !on_postgres() {
            return Self {
                url: None,
                name: None,
            };
        }
        Self::fresh_postgres().await
    }

    /// A fresh PostgreSQL database, whatever `PAYWARDEN_TEST_DATABASE` says.
    pub async fn fresh_postgres() -> Self {
        use sqlx::Connection;
        // pw_test_[<run>_]<random>: scripts/test.sh sets the run id so that its clean-up drops
        // only its own leftovers.
        let run = std::env::var("PAYWARDEN_TEST_RUN_ID")
            .ok()
            .filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric()))
            .map(|r| format!("{}_", r.to_ascii_lowercase()))
            .unwrap_or_default();
        let name = format!("pw_test_{run}{}", hex::encode(rand::random::<[u8; 8]>()));
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", pg_server_url()))
            .await
            .expect("PostgreSQL for the tests (PAYWARDEN_TEST_PG_URL) is reachable");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        Self {
            url: Some(format!("{}/{name}", pg_server_url())),
            name: Some(name),
        }
    }

    /// This database's URL: PostgreSQL's, or SQLite's `paywarden.db` in `dir` (created if
    /// missing), for a test's own connections beside the store's.
    pub fn url_in(&self, dir: &std::path::Path) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join("paywarden.db").display()))
    }

    /// The store's migrations for this database's engine up to `version`: the schema as an
    /// earlier paywarden left it, for tests of a later migration's backfill.
    pub fn migrations_up_to(&self, version: i64) -> sqlx::migrate::Migrator {
        let mut migrator = match &self.url {
            Some(_) => sqlx::migrate!("./migrations/postgres"),
            None => sqlx::migrate!("./migrations/sqlite"),
        };
        migrator.migrations = migrator
            .migrations
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        migrator
    }

    /// Opens this database's store (SQLite: `paywarden.db` in `dir`).
    pub async fn store(&self, dir: &std::path::Path) -> Store {
        match &self.url {
            Some(url) => Store::connect(url).await.expect("store opens"),
            None => Store::open(&dir.join("paywarden.db"))
                .await
                .expect("store opens"),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        // Dropped from inside the test's runtime: a thread of its own with a runtime of its own.
        let admin_url = format!("{}/postgres", pg_server_url());
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.demo.seed = false;
    // The emulator's webhooks would add audit rows at their own pace: only the provider-event
    // tests (tests/provider_events.rs) turn them on.
    config.demo.webhooks = false;
    config.opp.timeout_ms = 5_000;
    // The provider-mechanics tests run under a permissive policy; safety tests use
    // `spawn_app_with` and the built-in policy.
    config.safety.policy_file = Some(allow_all_policy());
    config
}

/// The permissive test policy (`tests/policies/allow-all.toml`).
pub fn allow_all_policy() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/policies/allow-all.toml")
}

/// Starts paywarden (emulator behind it, no demo data) on 127.0.0.1:0.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts paywarden with a configuration adjusted by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = TestDatabase::fresh().await;
    let mut config = test_config(dir.path());
    config.database_url = database.url.clone();
    adjust(&mut config);
    let seed = if config.demo.seed {
        SeedMode::IfEmpty
    } else {
        SeedMode::Off
    };
    let app = App::build(config, seed, &ProgressBar::hidden())
        .await
        .expect("app builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let store = app.store().clone();
    let emulator_url = app.emulator_url().map(String::from);
    let key_ids = app.key_ids();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        app.serve(listener, async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    TestApp {
        base_url: format!("http://{addr}"),
        emulator_url,
        store,
        data_dir: dir,
        key_ids,
        shutdown: Some(tx),
        database,
    }
}

pub fn demo_credentials() -> OppCredentials {
    OppCredentials {
        entity_id: DEMO_ENTITY_ID.into(),
        token: SecretString::from(DEMO_TOKEN.to_string()),
    }
}

pub fn second_credentials() -> OppCredentials {
    OppCredentials {
        entity_id: SECOND_ENTITY_ID.into(),
        token: SecretString::from(SECOND_TOKEN.to_string()),
    }
}

/// Arms a fault at the emulator serving `emulator_url` (`POST /__emulator/faults`,
/// docs/emulator.md), failing the test unless the emulator accepted it (HTTP 201).
pub async fn arm_fault_at(emulator_url: &str, fault: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{emulator_url}/__emulator/faults"))
        .json(&fault)
        .send()
        .await
        .expect("fault armed");
    let status = response.status();
    assert_eq!(status, 201, "{}", response.text().await.unwrap_or_default());
}

impl TestApp {
    /// Arms a fault at the emulator (`POST /__emulator/faults`, docs/emulator.md), failing the
    /// test unless the emulator accepted it (HTTP 201).
    pub async fn arm_fault(&self, fault: serde_json::Value) {
        arm_fault_at(self.emulator_url.as_deref().expect("emulator"), fault).await;
    }

    /// The emulator's armed faults (`GET /__emulator/faults`): each as the emulator lists it,
    /// with `times` counting down as requests use it.
    pub async fn armed_faults(&self) -> Vec<serde_json::Value> {
        let url = format!(
            "{}/__emulator/faults",
            self.emulator_url.as_deref().expect("emulator")
        );
        let response = reqwest::get(url).await.expect("faults listed");
        assert_eq!(response.status(), 200);
        response.json().await.expect("a list of faults")
    }

    pub fn opp(&self) -> OppClient {
        OppClient::new(
            self.emulator_url.as_deref().expect("emulator"),
            Duration::from_secs(5),
        )
        .expect("client")
    }

    /// Creates an initial payment directly in the emulator (as a shopper's checkout would).
    pub async fn create_payment(
        &self,
        credentials: &OppCredentials,
        payment_type: PaymentType,
        amount: &str,
        currency: Currency,
    ) -> String {
        let request = InitialPaymentRequest {
            payment_type,
            amount: Money::parse(amount, currency).expect("amount"),
            payment_brand: "VISA".into(),
            card_number: SecretString::from("4200000000000000".to_string()),
            card_holder: "Jane Jones".into(),
            expiry_month: "05".into(),
            expiry_year: "2034".into(),
            cvv: SecretString::from("123".to_string()),
            merchant_transaction_id: None,
            custom_parameters: vec![],
        };
        self.opp()
            .create_payment(credentials, &request)
            .await
            .expect("payment created")
            .id
    }

    pub async fn client(&self, path: &str, era: Era) -> Client {
        self.client_as(path, era, DEMO_ENTITY_ID, DEMO_TOKEN).await
    }

    pub async fn client_as(&self, path: &str, era: Era, entity: &str, token: &str) -> Client {
        connect_client(&self.base_url, path, era, entity, token).await
    }
}

/// An MCP client of the paywarden at `base_url` (e.g. `http://127.0.0.1:8080`), as `entity`.
pub async fn connect_client(
    base_url: &str,
    path: &str,
    era: Era,
    entity: &str,
    token: &str,
) -> Client {
    try_connect_client(base_url, path, era, entity, token)
        .await
        .expect("client connects")
}

/// [`connect_client`], or why the server refused the connection.
pub async fn try_connect_client(
    base_url: &str,
    path: &str,
    era: Era,
    entity: &str,
    token: &str,
) -> Result<Client, String> {
    {
        let mut headers = HashMap::new();
        headers.insert(
            http::HeaderName::from_static("x-entity-id"),
            http::HeaderValue::from_str(entity).expect("header"),
        );
        headers.insert(
            http::HeaderName::from_static("x-token"),
            http::HeaderValue::from_str(token).expect("header"),
        );
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("{base_url}{path}"))
                .custom_headers(headers),
        );
        let (version, lifecycle) = match era {
            Era::Legacy => (
                ProtocolVersion::V_2025_11_25,
                ClientLifecycleMode::Initialize,
            ),
            Era::Stateless => (
                ProtocolVersion::V_2026_07_28,
                ClientLifecycleMode::Discover {
                    preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                },
            ),
        };
        let mut info = Implementation::default();
        info.name = "paywarden-tests".into();
        info.version = "1".into();
        let config =
            ClientConfig::new(ClientCapabilities::default(), info).with_protocol_version(version);
        config
            .serve_with_lifecycle(transport, lifecycle)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Calls a tool with JSON arguments.
pub async fn call(
    client: &Client,
    tool: &str,
    args: serde_json::Value,
) -> Result<CallToolResult, ServiceError> {
    let serde_json::Value::Object(args) = args else {
        panic!("arguments must be an object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
}

/// Calls a tool that must succeed and returns its structured content.
pub async fn call_ok(client: &Client, tool: &str, args: serde_json::Value) -> serde_json::Value {
    let result = call(client, tool, args.clone())
        .await
        .expect("tool call answered");
    assert_eq!(
        result.is_error,
        Some(false),
        "{tool}({args}) failed: {}",
        text(&result)
    );
    result
        .structured_content
        .clone()
        .expect("structured content")
}

/// Calls a tool that must fail as a tool error, and returns its text.
pub async fn call_err(client: &Client, tool: &str, args: serde_json::Value) -> String {
    let result = call(client, tool, args.clone())
        .await
        .expect("tool call answered");
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool}({args}) unexpectedly succeeded: {}",
        text(&result)
    );
    text(&result)
}

/// Calls a tool whose arguments are malformed: must be a JSON-RPC invalid-params error.
pub async fn call_invalid(client: &Client, tool: &str, args: serde_json::Value) -> String {
    match call(client, tool, args.clone()).await {
        Err(ServiceError::McpError(e)) => {
            assert_eq!(
                e.code,
                rmcp::model::ErrorCode::INVALID_PARAMS,
                "{tool}({args}): {e:?}"
            );
            e.message.to_string()
        }
        other => panic!("{tool}({args}) should be invalid params, got {other:?}"),
    }
}

pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A trigger on one table of a test app's database that makes one kind of write fail while
/// reads keep working (paywarden's database failing at one step); [`FailingWrites::stop`]
/// removes it.
pub struct FailingWrites {
    pool: sqlx::AnyPool,
    postgres: bool,
    table: String,
}

impl TestApp {
    /// Makes every `event` (`INSERT`, `UPDATE`, `DELETE`) on `table` of this app's database
    /// fail, on SQLite or PostgreSQL, until [`FailingWrites::stop`].
    pub async fn fail_writes(&self, event: &str, table: &str) -> FailingWrites {
        let url = self.database.url.clone().unwrap_or_else(|| {
            paywarden::store::sqlite_url(&self.data_dir.path().join("paywarden.db"))
        });
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.expect("database");
        let postgres = url.starts_with("postgres");
        let statements = if postgres {
            vec![
                "CREATE FUNCTION pw_test_refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql".to_string(),
                format!("CREATE TRIGGER pw_test_refuse BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION pw_test_refuse()"),
            ]
        } else {
            vec![format!(
                "CREATE TRIGGER pw_test_refuse BEFORE {event} ON {table} BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )]
        };
        for statement in statements {
            sqlx::query(&statement)
                .execute(&pool)
                .await
                .expect("trigger");
        }
        FailingWrites {
            pool,
            postgres,
            table: table.to_string(),
        }
    }
}

impl FailingWrites {
    /// Lets the writes succeed again.
    pub async fn stop(self) {
        let statements = if self.postgres {
            vec![
                format!("DROP TRIGGER pw_test_refuse ON {}", self.table),
                "DROP FUNCTION pw_test_refuse()".to_string(),
            ]
        } else {
            vec!["DROP TRIGGER pw_test_refuse".to_string()]
        };
        for statement in statements {
            sqlx::query(&statement)
                .execute(&self.pool)
                .await
                .expect("drop trigger");
        }
    }
}

/// The real `paywarden` binary, killed when dropped.
pub struct BinaryServer(pub std::process::Child);

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A raw 2025-era `initialize` (which opens a session) at `{base_url}{path}` as `entity` with
/// `token`, over plain HTTP: the server's answer as it is, whatever its status.
pub async fn raw_initialize(
    http: &reqwest::Client,
    base_url: &str,
    path: &str,
    entity: &str,
    token: &str,
) -> reqwest::Response {
    http.post(format!("{base_url}{path}"))
        .header("X-Entity-Id", entity)
        .header("X-Token", token)
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .body(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"paywarden-test","version":"1"}}}"#,
        )
        .send()
        .await
        .expect("server answers")
}

/// A `method` request to `url` inside session `session_id` as `entity` with `token`, with a
/// 2025-11-25 client's headers (`Mcp-Session-Id`, `MCP-Protocol-Version`, a JSON body, a JSON
/// or SSE answer); the caller adds the body.
pub fn session_request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    entity: &str,
    token: &str,
    session_id: &str,
) -> reqwest::RequestBuilder {
    http.request(method, url)
        .header("X-Entity-Id", entity)
        .header("X-Token", token)
        .header("Mcp-Session-Id", session_id)
        .header("MCP-Protocol-Version", "2025-11-25")
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
}

/// Opens a Streamable HTTP session at `{base_url}{path}` the way a 2025-era client does over
/// plain HTTP (`initialize`, then `notifications/initialized`), as `entity` with `token`, and
/// returns its `Mcp-Session-Id`. Panics when the server does not open it.
pub async fn open_raw_session(
    http: &reqwest::Client,
    base_url: &str,
    path: &str,
    entity: &str,
    token: &str,
) -> String {
    let resp = raw_initialize(http, base_url, path, entity, token).await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["mcp-session-id"]
        .to_str()
        .expect("session id")
        .to_string();
    resp.bytes().await.expect("initialize answer");
    let url = format!("{base_url}{path}");
    let resp = session_request(http, reqwest::Method::POST, &url, entity, token, &id)
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .await
        .expect("server answers");
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.bytes().await.expect("initialized answer");
    id
}

/// Starts the real binary (`paywarden serve --listen 127.0.0.1:0 --data-dir DIR`, with
/// `DATABASE_URL` = `database_url`) and returns it with its base URL, read from the banner's
/// "listening on" line, once `/healthz` answers. Port 0, not a port picked here and handed
/// over: another test's server or emulator could take that one in between (a flake seen in CI,
/// where a test's calls reached an emulator).
pub async fn serve_binary(dir: &std::path::Path, database_url: &str) -> (BinaryServer, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_paywarden"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("DATABASE_URL", database_url)
        .env_remove("PAYWARDEN_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("paywarden starts");
    let stdout = child.stdout.take().expect("stdout");
    let server = BinaryServer(child);
    let base = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut base = None;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on ").nth(1) {
                base = Some(rest.trim().trim_end_matches('/').to_string());
                break;
            }
        }
        // Keep draining, so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        base
    })
    .await
    .expect("the banner reader")
    .expect("the banner names the address");
    for _ in 0..600 {
        if reqwest::get(format!("{base}/healthz")).await.is_ok() {
            return (server, base);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("paywarden did not answer /healthz");
}
