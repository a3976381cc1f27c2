//! Scale-out: two real `paywarden serve` processes on ONE database and ONE shared emulator
//! (a third process, `paywarden emulator`), with concurrent calls sent to both.
//!
//! On PostgreSQL (`PAYWARDEN_TEST_DATABASE=postgres`, each test on a fresh `pw_test_*`
//! database) this is the deployment of docs/deploy.md; on SQLite both processes share one
//! `paywarden.db` file (the single-machine case). Each test checks one guarantee:
//!
//! - concurrent OPP refunds of one payment never exceed its refundable amount;
//! - concurrent ops `issue_refund`s of one order never exceed it (Stripe, orders database);
//! - concurrent retries with one idempotency key execute once;
//! - an approval granted through one server executes once, whichever server is asked;
//! - the built-in policy's daily cap holds when confirmed refunds race on both servers;
//! - a replica stalled in the middle of deciding the daily cap lets no other replica past it
//!   (PostgreSQL);
//! - the audit chain stays one valid chain (`paywarden audit verify`) under concurrent writes,
//!   and checkpoints signed meanwhile each record a head that exists in it;
//! - a task made through one server is followed through the other, and a confirmation's
//!   `requestState` issued by one is redeemed once, through either.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{arm_fault_at, call, connect_client, text, Client, Era, TestDatabase};
use indicatif::ProgressBar;
use paywarden::{
    connectors::{
        opp::{InitialPaymentRequest, OppClient},
        stripe::{StripeClient, StripeKey},
    },
    store::Store,
};
use paywarden_domain::{Currency, Money, PaymentType};
use paywarden_emulator::{DEMO_ENTITY_ID, DEMO_STRIPE_KEY, DEMO_TOKEN};
use secrecy::SecretString;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_paywarden");

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command`, waits for the stdout line containing `marker` and returns the text after
/// it up to the next whitespace (the URL), then keeps draining stdout.
fn spawn_until(mut command: Command, marker: &str) -> (Proc, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("paywarden starts");
    let stdout = child.stdout.take().expect("stdout");
    let proc = Proc(child);
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut found = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split(marker).nth(1) {
            found = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (
        proc,
        found.unwrap_or_else(|| panic!("no line with {marker:?}")),
    )
}

/// The emulator, two servers and their shared configuration.
struct Cluster {
    servers: Vec<String>,
    emulator_url: String,
    database_url: String,
    config: PathBuf,
    _procs: Vec<Proc>,
    _dir: tempfile::TempDir,
    // Last: the database is dropped after the processes are gone.
    _database: TestDatabase,
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

impl Cluster {
    /// Starts `paywarden emulator`, runs `paywarden migrate`, then starts two
    /// `paywarden serve` on the same database. `policy` is a policy file's text (default:
    /// tests/policies/allow-all.toml).
    async fn start(policy: Option<&str>) -> Self {
        Self::start_with(policy, "", "").await
    }

    /// As [`Cluster::start`], with `opp` and `safety` lines added to those sections of the
    /// replicas' configuration.
    async fn start_with(policy: Option<&str>, opp: &str, safety: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = TestDatabase::fresh().await;
        let database_url = database
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("paywarden.db").display()));
        let mut emulator = Command::new(BIN);
        emulator
            .args(["emulator", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("emulator"))
            .env_remove("PAYWARDEN_CONFIG")
            .env_remove("DATABASE_URL")
            .env("PAYWARDEN_LOG", "warn");
        let (emulator, emulator_url) = spawn_until(emulator, " on ");
        let policy_file = match policy {
            Some(text) => {
                let path = dir.path().join("policy.toml");
                std::fs::write(&path, text).expect("policy written");
                path
            }
            None => common::allow_all_policy(),
        };
        let entities: String = [
            (DEMO_ENTITY_ID, DEMO_TOKEN),
            (
                paywarden_emulator::SECOND_ENTITY_ID,
                paywarden_emulator::SECOND_TOKEN,
            ),
        ]
        .iter()
        .map(|(id, token)| {
            format!(
                "\n[[entities]]\nid = {}\ntoken_sha256 = {}\n",
                toml_string(id),
                toml_string(&paywarden::service::safety::token_hash(token))
            )
        })
        .collect();
        let operators = format!(
            "\n[[operators]]\nname = {}\ntoken_sha256 = {}\n",
            toml_string(OPERATOR),
            toml_string(&paywarden::service::safety::token_hash(OPERATOR_TOKEN))
        );
        let config = dir.path().join("paywarden.toml");
        std::fs::write(
            &config,
            format!(
                "database_url = {db}\ndata_dir = {data}\n\n[opp]\nbase_url = {emu}\n{opp}\n\n\
                 [stripe]\nbase_url = {emu}\napi_key = {key}\n\n[safety]\npolicy_file = {policy}\n{safety}\n\n\
                 [demo]\nseed = false\n{entities}{operators}",
                db = toml_string(&database_url),
                data = toml_string(&dir.path().join("data").to_string_lossy()),
                emu = toml_string(&emulator_url),
                key = toml_string(DEMO_STRIPE_KEY),
                policy = toml_string(&policy_file.to_string_lossy()),
            ),
        )
        .expect("config written");
        // As docs/deploy.md says: migrate once, then start the replicas.
        let migrate = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("migrate")
            .env_remove("DATABASE_URL")
            .output()
            .expect("paywarden migrate runs");
        assert!(
            migrate.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        let mut procs = vec![emulator];
        let mut servers = Vec::new();
        for _ in 0..2 {
            let mut serve = Command::new(BIN);
            serve
                .arg("--config")
                .arg(&config)
                .args(["serve", "--listen", "127.0.0.1:0", "--no-seed"])
                .env_remove("DATABASE_URL")
                .env("PAYWARDEN_LOG", "warn");
            let (proc, url) = spawn_until(serve, "listening on ");
            procs.push(proc);
            servers.push(url);
        }
        Cluster {
            servers,
            emulator_url,
            database_url,
            config,
            _procs: procs,
            _dir: dir,
            _database: database,
        }
    }

    /// The process id of server `i` (0 or 1).
    fn server_pid(&self, i: usize) -> u32 {
        self._procs[1 + i].0.id()
    }

    /// Freezes server `i` (SIGSTOP) at a moment when it holds no write transaction on a shared
    /// SQLite file. A process frozen inside one holds SQLite's one write lock, and every other
    /// process on the file then gets `database is locked` (its calls fail, nothing sent): true,
    /// but not what a test of a frozen replica's *key* is about, and where SIGSTOP lands is up to
    /// the scheduler (a renewal of the key's lease is a short write transaction). On SQLite, a
    /// stop that caught server `i` holding the write lock (the holder named by /proc/locks) is
    /// undone and tried again; while another process holds it, server `i` stays stopped and the
    /// check waits for that write to end. PostgreSQL's row locks belong to the tests that freeze
    /// a replica on them.
    async fn freeze(&self, i: usize) {
        use sqlx::{Connection, Executor};
        let Some(path) = self.database_url.strip_prefix("sqlite://") else {
            self.signal(i, "-STOP");
            return;
        };
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_millis(200));
        let frozen = self.server_pid(i);
        // Each check that found the lock taken: its holder's pid (if /proc/locks names one)
        // and what BEGIN IMMEDIATE answered.
        let mut taken: Vec<(Option<u32>, String)> = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        self.signal(i, "-STOP");
        loop {
            let mut db = sqlx::SqliteConnection::connect_with(&options)
                .await
                .expect("sqlite");
            let begun = db.execute("BEGIN IMMEDIATE").await;
            if begun.is_ok() {
                db.execute("ROLLBACK").await.expect("rollback");
            }
            db.close().await.expect("close");
            let error = match begun {
                Ok(_) => {
                    if !taken.is_empty() {
                        eprintln!("freeze: server {i} (pid {frozen}) stopped after {} checks found the write lock taken: {taken:?}", taken.len());
                    }
                    return;
                }
                Err(e) => e.to_string(),
            };
            let holder = wal_write_lock_holder(path);
            taken.push((holder, error));
            if std::time::Instant::now() > deadline {
                self.signal(i, "-CONT");
                let pids: Vec<u32> = self._procs.iter().map(|p| p.0.id()).collect();
                let last = &taken[taken.len().saturating_sub(20)..];
                panic!(
                    "the SQLite write lock stayed taken for 60 s while server {i} was being frozen ({} checks); \
                     the last checks' holders (pid from /proc/locks) and errors: {last:?}; \
                     emulator, server 0, server 1: {pids:?}; this test: {}",
                    taken.len(),
                    std::process::id()
                );
            }
            if holder == Some(frozen) {
                // The stop caught server `i` inside a write transaction: let it finish.
                self.signal(i, "-CONT");
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.signal(i, "-STOP");
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Sends server `i` the signal `name` (`-STOP`, `-CONT`) with kill(1).
    fn signal(&self, i: usize, name: &str) {
        let pid = self.server_pid(i).to_string();
        let status = Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {name} {pid}");
    }

    /// `per_server` stateless MCP clients of each server, interleaved (A, B, A, B, ...).
    async fn clients(&self, per_server: usize) -> Vec<Arc<Client>> {
        let mut clients = Vec::new();
        for _ in 0..per_server {
            for server in &self.servers {
                clients.push(Arc::new(
                    connect_client(server, "/mcp", Era::Stateless, DEMO_ENTITY_ID, DEMO_TOKEN)
                        .await,
                ));
            }
        }
        clients
    }

    /// A store on the shared database (what an operator's CLI would open).
    async fn store(&self) -> Store {
        Store::connect(&self.database_url).await.expect("store")
    }

    fn stripe(&self) -> StripeClient {
        StripeClient::new(
            &self.emulator_url,
            StripeKey::parse(DEMO_STRIPE_KEY, false).expect("key"),
            Duration::from_secs(5),
        )
        .expect("stripe client")
    }

    /// A captured debit of `amount` EUR at the shared emulator (a shopper's checkout).
    async fn debit(&self, amount: &str) -> String {
        self.debit_in(amount, Currency::EUR).await
    }

    /// A captured debit of `amount` in `currency` at the shared emulator.
    async fn debit_in(&self, amount: &str, currency: Currency) -> String {
        let opp = OppClient::new(&self.emulator_url, Duration::from_secs(5)).expect("opp");
        let request = InitialPaymentRequest {
            payment_type: PaymentType::Debit,
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
        opp.create_payment(&common::demo_credentials(), &request)
            .await
            .expect("payment created")
            .id
    }

    /// `paywarden audit verify` on the shared database: must pass; returns the entry count.
    fn audit_verify(&self) -> usize {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(["audit", "verify"])
            .env_remove("DATABASE_URL")
            .output()
            .expect("paywarden audit verify runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "audit verify failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .split("intact: ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected output: {stdout}"))
    }
}

/// Runs every call at once: `(client index, tool, arguments)`; returns
/// `(client index, is_error, structured content, text)` in the same order.
async fn all_at_once(
    clients: &[Arc<Client>],
    calls: Vec<(usize, &'static str, Value)>,
) -> Vec<(usize, bool, Value, String)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(calls.len()));
    let mut handles = Vec::new();
    for (i, tool, args) in calls {
        let client = clients[i % clients.len()].clone();
        let barrier = barrier.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let result = call(&client, tool, args).await.expect("tool call answered");
            (
                i,
                result.is_error != Some(false),
                result.structured_content.clone().unwrap_or(Value::Null),
                text(&result),
            )
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// The refunds (RF) of `id` as OPP reports them, through `client`.
/// `perform_refund` previewed through `client` (it must ask for a confirmation), and `args`
/// with the confirmation token it gave.
async fn confirmed(client: &Client, args: Value) -> Value {
    let preview = common::call_ok(client, "perform_refund", args.clone()).await;
    assert_eq!(preview["status"], "confirmation_required", "{preview}");
    let mut confirmed = args;
    confirmed["confirmationToken"] = preview["confirmation"]["token"].clone();
    confirmed
}

async fn opp_refunds(client: &Client, id: &str) -> Vec<Value> {
    let linked = common::call_ok(
        client,
        "get_transactions",
        json!({"id": id, "paymentTypes": ["RF"]}),
    )
    .await;
    linked["payments"].as_array().cloned().unwrap_or_default()
}

const OPP_REFUNDS: usize = 24;

#[tokio::test]
async fn concurrent_opp_refunds_sent_to_both_servers_never_exceed_the_refundable_amount() {
    let cluster = Cluster::start(None).await;
    let db = cluster.debit("100.00").await;
    let clients = cluster.clients(2).await;
    // 24 refunds of 7.00 EUR at once, alternating servers: 14 fit into 100.00 (98.00).
    let calls = (0..OPP_REFUNDS)
        .map(|i| {
            (
                i,
                "perform_refund",
                json!({"referenceId": db, "amount": "7.00", "currency": "EUR"}),
            )
        })
        .collect();
    let results = all_at_once(&clients, calls).await;
    let ok: Vec<_> = results.iter().filter(|r| !r.1).collect();
    let per_server = |s: usize| ok.iter().filter(|r| r.0 % 2 == s).count();
    eprintln!(
        "opp refunds: {} succeeded ({} via server A, {} via server B), {} refused",
        ok.len(),
        per_server(0),
        per_server(1),
        results.len() - ok.len()
    );
    assert_eq!(ok.len(), 14, "exactly 100.00 / 7.00 refunds succeed");
    for refused in results.iter().filter(|r| r.1) {
        assert!(
            refused.3.contains("refund") || refused.3.contains("exceed"),
            "{}",
            refused.3
        );
    }
    let refunds = opp_refunds(&clients[1], &db).await;
    assert_eq!(refunds.len(), 14);
    assert!(refunds.iter().all(|r| r["resultCategory"] == "success"));
    let total: i64 = refunds
        .iter()
        .map(|r| r["amountMinor"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, 9800);
    assert!(total <= 10000);
    // Every call and nothing else is in one intact chain.
    assert_eq!(cluster.audit_verify(), OPP_REFUNDS + 1);
}

#[tokio::test]
async fn concurrent_ops_refunds_of_one_order_sent_to_both_servers_never_exceed_it() {
    let cluster = Cluster::start(None).await;
    let store = cluster.store().await;
    paywarden::seed_ops::seed_ops_demo(
        &store,
        &cluster.stripe(),
        DEMO_ENTITY_ID,
        &ProgressBar::hidden(),
    )
    .await
    .expect("ops demo seeded");
    let clients = cluster.clients(2).await;
    let listed = common::call_ok(
        &clients[0],
        "list_payments",
        json!({"email": "sarah@example.com", "limit": 10}),
    )
    .await;
    let charge = listed["payments"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["amount_cents"] == 4999))
        .and_then(|p| p["payment_intent_id"].as_str())
        .expect("sarah's $49.99 charge")
        .to_string();
    // 10 refunds of $10.00: each previewed through one server (its token is in the shared
    // database), then all confirmed at once through the OTHER server. $40.00 fit into $49.99.
    let mut calls = Vec::new();
    for i in 0..10usize {
        let args = json!({
            "email": "sarah@example.com", "charge_id": charge, "amount_cents": 1000,
            "reason": "concurrency", "idempotency_key": format!("scale-out-{i}"),
        });
        let preview =
            common::call_ok(&clients[i % clients.len()], "issue_refund", args.clone()).await;
        assert_eq!(preview["status"], "confirmation_required", "{preview}");
        let mut confirmed = args;
        confirmed["confirmation_token"] = preview["confirmation"]["token"].clone();
        calls.push((i + 1, "issue_refund", confirmed));
    }
    let results = all_at_once(&clients, calls).await;
    let executed: Vec<_> = results
        .iter()
        .filter(|r| !r.1 && r.2["status"] == "executed")
        .collect();
    eprintln!(
        "ops refunds: {} executed, {} refused",
        executed.len(),
        results.len() - executed.len()
    );
    assert_eq!(executed.len(), 4, "{results:?}");
    let at_stripe = cluster
        .stripe()
        .refunds_for(&charge)
        .await
        .expect("refunds")
        .data;
    assert_eq!(at_stripe.len(), 4);
    let total: i64 = at_stripe.iter().map(|r| r.amount.minor_units()).sum();
    assert_eq!(total, 4000);
    let order = store
        .order_by_charge(DEMO_ENTITY_ID, &charge)
        .await
        .expect("order")
        .expect("order exists");
    assert_eq!(order.refunded_cents, 4000);
    assert_eq!(
        store
            .refund_log(DEMO_ENTITY_ID, &order.id)
            .await
            .expect("log")
            .len(),
        4
    );
    assert_eq!(cluster.audit_verify(), 1 + 10 + 10);
}

const RETRIES: usize = 16;

/// Issue 12's daily-cap attack across replicas: 20 separately confirmed refunds of 450 CHF on
/// 20 different debits, confirmed at once through both servers under the built-in policy
/// (a person from 2,000 moved today). Exactly 4 execute (1,800 CHF); the other 16 wait for a
/// person; nothing stays reserved.
#[tokio::test]
async fn twenty_confirmed_refunds_on_both_servers_never_race_past_the_daily_cap() {
    let cluster = Cluster::start(Some(paywarden::policy::BUILTIN_SOURCE)).await;
    let clients = cluster.clients(2).await;
    let chf = Currency::from_code("CHF").expect("CHF");
    let mut calls = Vec::new();
    for i in 0..20 {
        let db = cluster.debit_in("450.00", chf).await;
        let args = json!({"referenceId": db, "amount": "450.00", "currency": "CHF"});
        let preview =
            common::call_ok(&clients[i % clients.len()], "perform_refund", args.clone()).await;
        assert_eq!(preview["status"], "confirmation_required", "{preview}");
        let mut confirmed = args;
        confirmed["confirmationToken"] = preview["confirmation"]["token"].clone();
        // Confirmed through the other server than the one that previewed it.
        calls.push((i + 1, "perform_refund", confirmed));
    }
    let results = all_at_once(&clients, calls).await;
    let status =
        |r: &(usize, bool, Value, String)| r.2["status"].as_str().unwrap_or("").to_string();
    let executed = results.iter().filter(|r| status(r) == "executed").count();
    let pending = results
        .iter()
        .filter(|r| status(r) == "approval_pending")
        .count();
    eprintln!("daily cap across replicas: {executed} executed, {pending} sent to a person");
    assert_eq!(executed, 4, "{results:?}");
    assert_eq!(pending, 16, "{results:?}");
    let store = cluster.store().await;
    assert_eq!(
        store.moved_today(DEMO_ENTITY_ID, "CHF").await.unwrap(),
        180_000
    );
    assert_eq!(
        store.reserved_today(DEMO_ENTITY_ID, "CHF").await.unwrap(),
        0
    );
}

/// A replica stalled in the middle of deciding the daily cap (here: its reservation's INSERT
/// waits on a table lock the test holds for longer than any lease, as a replica would under
/// an overloaded database, a long GC-like pause, or a stopped VM) must not let the other
/// replica decide on totals that miss its reservation. Room for one more 450 CHF refund today;
/// one confirmed refund on each server: exactly one executes, the other goes to a person.
///
/// PostgreSQL only (on SQLite the table lock that stalls one replica is the database's single
/// write lock, which stalls both).
#[tokio::test]
async fn a_replica_stalled_while_deciding_the_daily_cap_lets_no_other_past_it() {
    use sqlx::Connection as _;
    if !common::on_postgres() {
        eprintln!("skipped: needs PAYWARDEN_TEST_DATABASE=postgres (two replicas, row locks)");
        return;
    }
    let cluster = Cluster::start(Some(paywarden::policy::BUILTIN_SOURCE)).await;
    let clients = cluster.clients(1).await;
    let chf = Currency::from_code("CHF").expect("CHF");
    // 3 x 450 CHF moved today: 1,350; one more makes 1,800, a fifth would make 2,250 (the
    // built-in policy sends 2,000 or more to a person).
    for _ in 0..3 {
        let db = cluster.debit_in("450.00", chf).await;
        let args = json!({"referenceId": db, "amount": "450.00", "currency": "CHF"});
        let args = confirmed(&clients[0], args).await;
        let done = common::call_ok(&clients[0], "perform_refund", args).await;
        assert_eq!(done["status"], "executed", "{done}");
    }
    let mut pending = Vec::new();
    for client in &clients[..2] {
        let db = cluster.debit_in("450.00", chf).await;
        let args = json!({"referenceId": db, "amount": "450.00", "currency": "CHF"});
        pending.push((client.clone(), confirmed(client, args).await));
    }
    let mut db = sqlx::PgConnection::connect(&cluster.database_url)
        .await
        .expect("postgres");
    sqlx::query("BEGIN").execute(&mut db).await.expect("begin");
    sqlx::query("LOCK TABLE limit_reservations IN EXCLUSIVE MODE")
        .execute(&mut db)
        .await
        .expect("lock");
    let mut calls = Vec::new();
    for (client, args) in pending {
        calls.push(tokio::spawn(async move {
            call(&client, "perform_refund", args)
                .await
                .expect("answered")
        }));
        // The first server is deciding (and stalled) before the second one asks.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Longer than the 10 s lease under which replicas used to decide (a stalled holder lost it).
    tokio::time::sleep(Duration::from_secs(12)).await;
    sqlx::query("COMMIT")
        .execute(&mut db)
        .await
        .expect("commit");
    let mut statuses = Vec::new();
    for call in calls {
        let result = call.await.expect("task");
        let content = result.structured_content.clone().unwrap_or(Value::Null);
        statuses.push(content["status"].as_str().unwrap_or("").to_string());
    }
    statuses.sort();
    assert_eq!(statuses, ["approval_pending", "executed"], "{statuses:?}");
    let store = cluster.store().await;
    assert_eq!(
        store.moved_today(DEMO_ENTITY_ID, "CHF").await.unwrap(),
        180_000
    );
}

/// A replica frozen (SIGSTOP: a stopped container, a paused VM) after its confirmed refund has
/// reserved its amount and before it sends, for longer than its idempotency key's lease: the
/// other replica's recovery takes the key for dead and releases it with its reservation
/// ("nothing was sent"), and then executes four refunds that fill the day's cap. When the frozen
/// replica resumes it must not send: it no longer holds its key, so its call answers that
/// nothing was sent. (Found by a black-box attack: before the fix it sent, 2,250 CHF executed
/// against the 2,000 cap.) The emulator delays the confirmed call's two provider reads, so the
/// replica is inside the second one when it is frozen.
#[tokio::test]
async fn a_replica_frozen_past_its_key_lease_does_not_send_after_its_key_was_released() {
    let cluster = Cluster::start_with(
        Some(paywarden::policy::BUILTIN_SOURCE),
        // Longer than the freeze, so the frozen read does not time out on resume.
        "timeout_ms = 120000",
        "key_lease_secs = 2",
    )
    .await;
    let clients = cluster.clients(1).await;
    let chf = Currency::from_code("CHF").expect("CHF");
    let first = cluster.debit_in("450.00", chf).await;
    let args = json!({"referenceId": first, "amount": "450.00", "currency": "CHF", "idempotencyKey": "frozen-1"});
    let args = confirmed(&clients[0], args).await;
    arm_fault_at(
        &cluster.emulator_url,
        json!({"provider": "opp", "method": "GET", "path": "/v1/query/*",
               "action": {"kind": "delay", "delay_ms": 6000}, "times": 2}),
    )
    .await;
    let frozen_client = clients[0].clone();
    let frozen = tokio::spawn(async move {
        call(&frozen_client, "perform_refund", args)
            .await
            .expect("answered")
    });
    // The first read ends at ~6 s, the gate reserves, the second read runs until ~12 s.
    tokio::time::sleep(Duration::from_secs(9)).await;
    cluster.freeze(0).await;
    // Past the key's lease (2 s) and the other replica's recovery sweep (every lease).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut executed = 0;
    for _ in 0..5 {
        let db = cluster.debit_in("450.00", chf).await;
        let mut args = json!({"referenceId": db, "amount": "450.00", "currency": "CHF"});
        let preview = common::call_ok(&clients[1], "perform_refund", args.clone()).await;
        if preview["status"] != "confirmation_required" {
            // The day's total leaves no room: a person decides (nothing executes).
            assert_eq!(preview["status"], "approval_pending", "{preview}");
            continue;
        }
        args["confirmationToken"] = preview["confirmation"]["token"].clone();
        let done = common::call_ok(&clients[1], "perform_refund", args).await;
        if done["status"] == "executed" {
            executed += 1;
        }
    }
    cluster.signal(0, "-CONT");
    let result = frozen.await.expect("task");
    let store = cluster.store().await;
    let moved = store.moved_today(DEMO_ENTITY_ID, "CHF").await.unwrap();
    let at_opp = opp_refunds(&clients[1], &first).await;
    eprintln!(
        "frozen replica: {executed} executed through the other; the frozen call answered {}; moved {moved}; refunds of the first debit at OPP: {}",
        text(&result),
        at_opp.len()
    );
    assert!(
        moved < 200_000,
        "the cap was passed: {moved} CHF minor units moved today"
    );
    assert_eq!(at_opp.len() * 45_000 + executed * 45_000, moved as usize);
    if executed == 4 {
        // The frozen call's key was released for it: it must not have sent.
        assert!(at_opp.is_empty(), "{at_opp:?}");
        assert_eq!(result.is_error, Some(true), "{}", text(&result));
        assert!(
            text(&result).contains("nothing was sent"),
            "{}",
            text(&result)
        );
    }
}

#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_sent_to_both_servers_execute_once() {
    let cluster = Cluster::start(None).await;
    let db = cluster.debit("50.00").await;
    let clients = cluster.clients(2).await;
    let args = json!({"referenceId": db, "amount": "5.00", "currency": "EUR", "idempotencyKey": "order-4711-refund"});
    let calls = (0..RETRIES)
        .map(|i| (i, "perform_refund", args.clone()))
        .collect();
    let results = all_at_once(&clients, calls).await;
    let ok: Vec<_> = results.iter().filter(|r| !r.1).collect();
    assert!(!ok.is_empty());
    // Every success names the one refund; every other answer says the first is in progress.
    let ids: std::collections::BTreeSet<String> = ok
        .iter()
        .map(|r| r.2["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{ok:?}");
    for other in results.iter().filter(|r| r.1) {
        assert!(other.3.contains("in progress"), "{}", other.3);
    }
    // Then a retry through each server replays the first outcome.
    for client in &clients[..2] {
        let replay = common::call_ok(client, "perform_refund", args.clone()).await;
        assert_eq!(replay["idempotentReplay"], true, "{replay}");
        assert_eq!(replay["id"].as_str(), ids.iter().next().map(String::as_str));
    }
    let refunds = opp_refunds(&clients[0], &db).await;
    eprintln!(
        "retries: {} answered with the result, {} in progress; OPP has {} refund",
        ok.len(),
        results.len() - ok.len(),
        refunds.len()
    );
    assert_eq!(refunds.len(), 1, "one key, one provider call");
    assert_eq!(cluster.audit_verify(), RETRIES + 2 + 1);
}

const EXECUTIONS: usize = 12;

#[tokio::test]
async fn an_approval_granted_through_one_server_executes_once_through_either() {
    let policy = "default = \"allow\"\n\n[[rule]]\nname = \"refunds-need-a-person\"\n\
                  when = \"tool == 'perform_refund'\"\naction = \"human\"\n\
                  message = \"A person decides refunds.\"\n";
    let cluster = Cluster::start(Some(policy)).await;
    let db = cluster.debit("80.00").await;
    let clients = cluster.clients(2).await;
    let args = json!({"referenceId": db, "amount": "30.00", "currency": "EUR"});
    let pending = common::call_ok(&clients[0], "perform_refund", args.clone()).await;
    assert_eq!(pending["status"], "approval_pending", "{pending}");
    let id = pending["approval"]["id"]
        .as_str()
        .expect("approval id")
        .to_string();

    // The operator opens the approval page on server A and the decision is posted to server
    // B (a load balancer without affinity): the CSRF key is shared through the database.
    approve_on_page(&cluster.servers[0], &cluster.servers[1], &id).await;

    // Twelve executions at once, through both servers.
    let mut follow_up = args.clone();
    follow_up["approvalId"] = json!(id);
    let calls = (0..EXECUTIONS)
        .map(|i| (i, "perform_refund", follow_up.clone()))
        .collect();
    let results = all_at_once(&clients, calls).await;
    // One call executes; calls that come after it finished replay its outcome (same refund).
    let executed: Vec<_> = results
        .iter()
        .filter(|r| !r.1 && r.2["status"] == "executed" && r.2["idempotentReplay"] == false)
        .collect();
    let replays: Vec<_> = results
        .iter()
        .filter(|r| !r.1 && r.2["idempotentReplay"] == true)
        .collect();
    eprintln!(
        "approval executions: {} executed, {} replayed its outcome, {} refused (in progress / already executed)",
        executed.len(),
        replays.len(),
        results.len() - executed.len() - replays.len()
    );
    assert_eq!(executed.len(), 1, "{results:?}");
    assert!(replays.iter().all(|r| r.2["id"] == executed[0].2["id"]));
    for other in results.iter().filter(|r| r.1) {
        assert!(
            other.3.contains("being executed")
                || other.3.contains("already executed")
                || other.3.contains("in progress"),
            "{}",
            other.3
        );
    }
    let refunds = opp_refunds(&clients[1], &db).await;
    assert_eq!(refunds.len(), 1, "one approval, one refund");
    let store = cluster.store().await;
    let approval = store.approval(&id).await.expect("read").expect("exists");
    assert_eq!(approval.status, paywarden::store::ApprovalStatus::Executed);
    assert_eq!(approval.decided_by.as_deref(), Some(OPERATOR));
    // Polling through server B sees the same outcome.
    let polled = common::call_ok(&clients[1], "get_approval", json!({"approvalId": id})).await;
    assert_eq!(polled["status"], "executed", "{polled}");
    cluster.audit_verify();
}

const OPERATOR: &str = "alice";
const OPERATOR_TOKEN: &str = "alice-token-for-scale-out-tests";

/// Approves `id`: the approval page is read from `page_server` (HTTP Basic, CSRF token from
/// the page), the decision form posted to `decision_server`.
async fn approve_on_page(page_server: &str, decision_server: &str, id: &str) {
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{page_server}/approvals/{id}"))
        .basic_auth(OPERATOR, Some(OPERATOR_TOKEN))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    let marker = "name=\"csrf\" value=\"";
    let csrf = html
        .split(marker)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf token on the page")
        .to_string();
    let decided = http
        .post(format!("{decision_server}/approvals/{id}/decision"))
        .basic_auth(OPERATOR, Some(OPERATOR_TOKEN))
        .header("Origin", decision_server)
        .form(&[("decision", "approve"), ("csrf", &csrf)])
        .send()
        .await
        .expect("decision");
    assert!(
        decided.status().is_success() || decided.status().is_redirection(),
        "{}",
        decided.status()
    );
}

const BURST: usize = 40;

#[tokio::test]
async fn the_audit_chain_stays_one_valid_chain_under_concurrent_writes_from_both_servers() {
    let cluster = Cluster::start(None).await;
    let db = cluster.debit("10.00").await;
    let clients = cluster.clients(4).await;
    let before = cluster.audit_verify();
    let calls = (0..BURST)
        .map(|i| (i, "get_transactions", json!({"id": db})))
        .collect();
    // Checkpoints signed while both servers append: each must record a head of the one chain.
    let checkpointers: Vec<Child> = (0..4)
        .map(|_| {
            Command::new(BIN)
                .arg("--config")
                .arg(&cluster.config)
                .args(["audit", "checkpoint"])
                .env_remove("DATABASE_URL")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("paywarden audit checkpoint runs")
        })
        .collect();
    let results = all_at_once(&clients, calls).await;
    assert!(results.iter().all(|r| !r.1));
    let mut checkpointed = Vec::new();
    for child in checkpointers {
        let out = child.wait_with_output().expect("checkpoint finished");
        assert!(out.status.success());
        let line: Value = serde_json::from_slice(out.stdout.trim_ascii()).expect("JSON");
        checkpointed.push(line["seq"].as_i64().expect("seq"));
    }
    let after = cluster.audit_verify();
    assert!(
        checkpointed.iter().all(|&seq| seq <= after as i64),
        "{checkpointed:?}"
    );
    assert_eq!(after, before + BURST, "every call appended exactly once");
    let store = cluster.store().await;
    let records = store.audit_records(None).await.expect("records");
    let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=after as i64).collect::<Vec<_>>(),
        "no gaps, no forks"
    );
    assert!(store.verify_audit().await.expect("verify").is_none());
}

/// A stateless rmcp client of `server` declaring `capabilities` (it drives any
/// `input_required` round itself, with `call_tool_once`).
async fn client_declaring(
    server: &str,
    capabilities: rmcp::model::ClientCapabilities,
) -> rmcp::service::RunningService<rmcp::RoleClient, rmcp::model::ClientConfig> {
    use rmcp::ClientServiceExt;
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        http::HeaderName::from_static("x-entity-id"),
        http::HeaderValue::from_static(DEMO_ENTITY_ID),
    );
    headers.insert(
        http::HeaderName::from_static("x-token"),
        http::HeaderValue::from_static(DEMO_TOKEN),
    );
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            format!("{server}/mcp"),
        )
        .custom_headers(headers),
    );
    let mut info = rmcp::model::Implementation::default();
    info.name = "replica-agent".into();
    info.version = "1".into();
    rmcp::model::ClientConfig::new(capabilities, info)
        .with_protocol_version(rmcp::model::ProtocolVersion::V_2026_07_28)
        .serve_with_lifecycle(
            transport,
            rmcp::ClientLifecycleMode::Discover {
                preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("client connects")
}

/// Issue 16 across replicas: a task created through server A is followed through server B
/// (an operator approves on the page), and a confirmation's `requestState` issued by A is
/// redeemed through B once, then refused through A.
#[tokio::test]
async fn tasks_and_request_states_work_across_servers() {
    use rmcp::model::{
        CallToolRequestParams, CallToolResponse, ClientCapabilities, ElicitationCapability,
        FormElicitationCapability, GetTaskParams, TaskPayload, TaskStatus,
    };
    let policy = "default = \"allow\"\n\n[[rule]]\nname = \"small-refunds-confirm\"\n\
                  when = \"tool == 'perform_refund' && amount_units < 20\"\naction = \"confirm\"\n\
                  message = \"The user confirms small refunds.\"\n\n[[rule]]\n\
                  name = \"refunds-need-a-person\"\nwhen = \"tool == 'perform_refund'\"\n\
                  action = \"human\"\nmessage = \"A person decides refunds.\"\n";
    let cluster = Cluster::start(Some(policy)).await;
    let db = cluster.debit("80.00").await;
    let tasks = ClientCapabilities::builder().enable_tasks().build();
    let on_a = client_declaring(&cluster.servers[0], tasks.clone()).await;
    let on_b = client_declaring(&cluster.servers[1], tasks).await;
    let args = json!({"referenceId": db, "amount": "30.00", "currency": "EUR"});
    let created = on_a
        .call_tool_once(
            CallToolRequestParams::new("perform_refund")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .expect("answered");
    let CallToolResponse::Task(created) = created else {
        panic!("a task: {created:?}");
    };
    let id = created.task.task_id;
    let seen = on_b.get_task(GetTaskParams::new(&id)).await.expect("get");
    assert_eq!(seen.task.task.status, TaskStatus::Working);
    let approval = cluster
        .store()
        .await
        .list_approvals(None)
        .await
        .unwrap()
        .remove(0)
        .id;
    approve_on_page(&cluster.servers[0], &cluster.servers[1], &approval).await;
    let done = on_b.get_task(GetTaskParams::new(&id)).await.expect("get");
    let TaskPayload::Completed { result } = &done.task.payload else {
        panic!("completed: {done:?}");
    };
    assert_eq!(
        result["structuredContent"]["status"], "executed",
        "{result:?}"
    );
    let again = on_a.get_task(GetTaskParams::new(&id)).await.expect("get");
    let TaskPayload::Completed { result: replayed } = &again.task.payload else {
        panic!("completed: {again:?}");
    };
    assert_eq!(
        replayed["structuredContent"]["id"],
        result["structuredContent"]["id"]
    );

    // A confirmation asked through A, confirmed through B, replayed through A.
    let mut form = ClientCapabilities::default();
    let mut elicitation = ElicitationCapability::default();
    elicitation.form = Some(FormElicitationCapability::default());
    form.elicitation = Some(elicitation);
    let form_a = client_declaring(&cluster.servers[0], form.clone()).await;
    let form_b = client_declaring(&cluster.servers[1], form).await;
    let small = json!({"referenceId": db, "amount": "10.00", "currency": "EUR"});
    let asked = form_a
        .call_tool_once(
            CallToolRequestParams::new("perform_refund")
                .with_arguments(small.as_object().unwrap().clone()),
        )
        .await
        .expect("answered");
    let CallToolResponse::InputRequired(asked) = asked else {
        panic!("input_required: {asked:?}");
    };
    let state = asked.request_state.expect("requestState");
    let retry = || {
        let mut params = CallToolRequestParams::new("perform_refund")
            .with_arguments(small.as_object().unwrap().clone())
            .with_request_state(state.clone());
        params.input_responses = Some(
            [(
                "confirmation".to_string(),
                json!({"action": "accept", "content": {"confirm": true}}),
            )]
            .into(),
        );
        params
    };
    let confirmed = form_b.call_tool_once(retry()).await.expect("answered");
    let CallToolResponse::Complete(confirmed) = confirmed else {
        panic!("complete: {confirmed:?}");
    };
    assert_eq!(confirmed.structured_content.unwrap()["status"], "executed");
    let replayed = form_a.call_tool_once(retry()).await.unwrap_err();
    assert!(
        format!("{replayed:?}").contains("already used"),
        "{replayed:?}"
    );
    let clients = cluster.clients(1).await;
    assert_eq!(opp_refunds(&clients[0], &db).await.len(), 2);
}

/// The process holding SQLite's WAL write lock on the database at `path`, from /proc/locks: the
/// lock is a POSIX byte lock on byte 120 of the `-shm` file (SQLite's wal.c:
/// WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK). `None` when no process holds it or /proc/locks is not
/// readable (a diagnostic only).
fn wal_write_lock_holder(path: &str) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let shm = std::fs::metadata(format!("{path}-shm")).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: POSIX  ADVISORY  WRITE 3804 fe:00:770388 120 120"
        let (pid, file, start, end) = (
            fields.get(4)?,
            fields.get(5)?,
            fields.get(6)?,
            fields.get(7)?,
        );
        let inode: u64 = file.rsplit(':').next()?.parse().ok()?;
        let start: u64 = start.parse().ok()?;
        let covers = start <= 120 && (*end == "EOF" || end.parse::<u64>().ok()? >= 120);
        let exclusive = fields.get(3) == Some(&"WRITE");
        (inode == shm.ino() && covers && exclusive)
            .then(|| pid.parse().ok())
            .flatten()
    })
}
