//! Unknown outcomes (issue 12 holes 3, 5 and 8), attacked through the real server on port 0 with
//! the emulator behind a delaying proxy: a request held past paywarden's timeout and delivered
//! late, a request that never arrives, a reused merchant reference, a database that fails after
//! OPP executed. Runs on SQLite, or on PostgreSQL with `PAYWARDEN_TEST_DATABASE=postgres`.

mod common;

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{call, call_err, call_ok, demo_credentials, spawn_app_with, text, Era, TestApp};
use paywarden::connectors::opp::{InitialPaymentRequest, OppClient};
use paywarden_domain::{Currency, Money, PaymentType};
use paywarden_emulator::{Emulator, EmulatorConfig, RunningEmulator, DEMO_ENTITY_ID};
use serde_json::json;

/// What the proxy does with one POST (reads always pass).
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Forward at once.
    Pass,
    /// Hold it this long (past paywarden's timeout), then forward it: late delivery.
    Hold(Duration),
    /// Never forward it: the request is lost on the way.
    Drop,
}

#[derive(Debug)]
struct ProxyState {
    upstream: String,
    plans: Mutex<VecDeque<Plan>>,
    /// POSTs received from paywarden.
    posts: AtomicUsize,
    /// POSTs delivered to the emulator.
    delivered: AtomicUsize,
    client: reqwest::Client,
}

/// A small HTTP proxy in front of the emulator whose POSTs follow a plan.
struct Proxy {
    url: String,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.to_string(),
            plans: Mutex::new(VecDeque::new()),
            posts: AtomicUsize::new(0),
            delivered: AtomicUsize::new(0),
            client: reqwest::Client::new(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy { url, state, task }
    }

    /// The next POSTs follow `plans`, in order; later ones pass.
    fn plan(&self, plans: &[Plan]) {
        self.state
            .plans
            .lock()
            .unwrap()
            .extend(plans.iter().copied());
    }

    fn posts(&self) -> usize {
        self.state.posts.load(Ordering::SeqCst)
    }

    fn delivered(&self) -> usize {
        self.state.delivered.load(Ordering::SeqCst)
    }

    /// Waits until `n` POSTs have reached the emulator.
    async fn wait_delivered(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.delivered() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} POSTs delivered",
                self.delivered()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the emulator commit what it answered.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn forward(
    axum::extract::State(state): axum::extract::State<Arc<ProxyState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let method = request.method().clone();
    let target = format!(
        "{}{}",
        state.upstream,
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let plan = if method == http::Method::POST {
        state.posts.fetch_add(1, Ordering::SeqCst);
        state
            .plans
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Plan::Pass)
    } else {
        Plan::Pass
    };
    // Delivery runs on its own task: when paywarden gives up waiting, the request still lands.
    let delivery = tokio::spawn(async move {
        match plan {
            Plan::Drop => return None,
            Plan::Hold(d) => tokio::time::sleep(d).await,
            Plan::Pass => {}
        }
        let mut outgoing = state.client.request(method.clone(), target).body(body);
        for (name, value) in &headers {
            if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
                outgoing = outgoing.header(name, value);
            }
        }
        let response = outgoing.send().await.ok()?;
        let status = response.status();
        let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
        let bytes = response.bytes().await.ok()?;
        if method == http::Method::POST {
            state.delivered.fetch_add(1, Ordering::SeqCst);
        }
        Some((status, content_type, bytes))
    });
    match delivery.await {
        Ok(Some((status, content_type, bytes))) => {
            let mut response = axum::response::Response::new(axum::body::Body::from(bytes));
            *response.status_mut() = status;
            if let Some(ct) = content_type {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, ct);
            }
            response
        }
        // A lost request: the caller hears nothing, ever.
        _ => std::future::pending().await,
    }
}

/// A standalone emulator, the proxy in front of it, and paywarden talking to the proxy with a
/// 500 ms timeout.
struct Rig {
    app: TestApp,
    proxy: Proxy,
    direct: OppClient,
    _emulator: RunningEmulator,
    _dir: tempfile::TempDir,
}

async fn rig(adjust: impl FnOnce(&mut paywarden::config::Config)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let emulator = Emulator::open(EmulatorConfig::demo(dir.path().join("opp.db")))
        .await
        .unwrap()
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    let proxy = Proxy::start(&emulator.base_url).await;
    let url = proxy.url.clone();
    let app = spawn_app_with(|c| {
        c.opp.base_url = Some(url);
        c.opp.timeout_ms = 500;
        adjust(c);
    })
    .await;
    let direct = OppClient::new(&emulator.base_url, Duration::from_secs(10)).unwrap();
    Rig {
        app,
        proxy,
        direct,
        _emulator: emulator,
        _dir: dir,
    }
}

impl Rig {
    /// A debit made at the emulator directly (a shopper's checkout).
    async fn debit(&self, amount: &str) -> String {
        let request = InitialPaymentRequest {
            payment_type: PaymentType::Debit,
            amount: Money::parse(amount, Currency::EUR).unwrap(),
            payment_brand: "VISA".into(),
            card_number: secrecy::SecretString::from("4200000000000000".to_string()),
            card_holder: "Jane Jones".into(),
            expiry_month: "05".into(),
            expiry_year: "2034".into(),
            cvv: secrecy::SecretString::from("123".to_string()),
            merchant_transaction_id: None,
            custom_parameters: vec![],
        };
        self.direct
            .create_payment(&demo_credentials(), &request)
            .await
            .unwrap()
            .id
    }

    /// The successful refunds OPP holds on `debit`, as (id, minor units).
    async fn refunds_at_opp(&self, debit: &str) -> Vec<(String, i64)> {
        self.direct
            .query_by_id(&demo_credentials(), debit, true, &[PaymentType::Refund])
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.payment_type == PaymentType::Refund && t.result.is_success())
            .map(|t| (t.id, t.amount.minor_units()))
            .collect()
    }

    /// paywarden's movements today in EUR (the daily total), in cents.
    async fn reserved_today(&self) -> i64 {
        self.app
            .store
            .reserved_today(DEMO_ENTITY_ID, "EUR")
            .await
            .unwrap()
    }

    async fn moved_today(&self) -> i64 {
        self.app
            .store
            .moved_today(DEMO_ENTITY_ID, "EUR")
            .await
            .unwrap()
    }

    /// Audit rows of `tool` with `outcome`.
    async fn audit_rows(&self, tool: &str, outcome: &str) -> Vec<paywarden::store::AuditRecord> {
        self.app
            .store
            .audit_records(Some(DEMO_ENTITY_ID))
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.entry.tool == tool && r.entry.outcome == outcome)
            .collect()
    }
}

fn refund(debit: &str, amount: &str, key: &str) -> serde_json::Value {
    json!({"referenceId": debit, "amount": amount, "currency": "EUR", "idempotencyKey": key})
}

#[tokio::test]
async fn a_late_refund_is_found_and_never_sent_twice() {
    // OPP has nothing *yet* when the retry asks: the request is still on its way.
    let rig = rig(|_| {}).await;
    let debit = rig.debit("20.00").await;
    let client = rig.app.client("/mcp", Era::Legacy).await;
    rig.proxy.plan(&[Plan::Hold(Duration::from_millis(2_500))]);
    let args = refund(&debit, "5.00", "late-1");
    let first = call_err(&client, "perform_refund", args.clone()).await;
    assert!(first.contains("UNKNOWN"), "{first}");

    // The retry asks OPP, which shows nothing yet: the key stays blocked, nothing is re-sent.
    let early = call(&client, "perform_refund", args.clone()).await.unwrap();
    assert_eq!(early.is_error, Some(true), "{}", text(&early));
    assert!(
        text(&early).to_lowercase().contains("unknown"),
        "{}",
        text(&early)
    );
    assert_eq!(rig.proxy.posts(), 1, "the retry sent the refund again");
    // What may have moved stays counted against the daily limits meanwhile.
    assert_eq!(rig.reserved_today().await, 500);

    // The first request lands; the next retry finds it and records it, once.
    rig.proxy.wait_delivered(1).await;
    let found = call_ok(&client, "perform_refund", args.clone()).await;
    assert_eq!(found["status"], "executed", "{found}");
    assert_eq!(found["amount"], "5.00", "{found}");
    let at_opp = rig.refunds_at_opp(&debit).await;
    assert_eq!(at_opp.len(), 1, "refunds at OPP: {at_opp:?}");
    assert_eq!(found["id"], at_opp[0].0.as_str());
    assert_eq!(rig.proxy.posts(), 1);
    assert_eq!(rig.moved_today().await, 500);
    // Found: the movement counts it, the reservation is released.
    assert_eq!(rig.reserved_today().await, 0);
    let ok = rig.audit_rows("perform_refund", "ok").await;
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(
        ok[0].entry.transaction_id.as_deref(),
        Some(at_opp[0].0.as_str())
    );
    // And a replay from now on.
    let replay = call_ok(&client, "perform_refund", args).await;
    assert_eq!(replay["idempotentReplay"], true);
    assert_eq!(rig.refunds_at_opp(&debit).await.len(), 1);
}

#[tokio::test]
async fn a_refund_later_than_its_settle_window_is_reported_as_a_duplicate() {
    // The settle window (1 s here) is shorter than the proxy holds the request (4 s): the key
    // is released, the retry refunds, and the first request still lands. paywarden cannot undo
    // that; it records it and says so: an audit row, the daily total, /readyz, the CLI.
    let rig = rig(|c| c.opp.settle_window_ms = Some(1_000)).await;
    let debit = rig.debit("20.00").await;
    let client = rig.app.client("/mcp", Era::Legacy).await;
    rig.proxy.plan(&[Plan::Hold(Duration::from_millis(4_000))]);
    let args = refund(&debit, "5.00", "late-2");
    let first = call_err(&client, "perform_refund", args.clone()).await;
    assert!(first.contains("UNKNOWN"), "{first}");
    let early = call(&client, "perform_refund", args.clone()).await.unwrap();
    assert_eq!(early.is_error, Some(true), "{}", text(&early));
    assert_eq!(rig.proxy.posts(), 1);

    // Past the window, with OPP still showing nothing, the retry runs.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let retried = call_ok(&client, "perform_refund", args.clone()).await;
    assert_eq!(retried["status"], "executed", "{retried}");
    assert_eq!(rig.proxy.posts(), 2);
    // The released key's request may still land (it does, below): its 5.00 stays counted
    // against the day's limits until the end of the UTC day, so a cap decided meanwhile cannot
    // be passed by it (before, the release dropped it and a late arrival went past the cap).
    assert_eq!(rig.reserved_today().await, 500);

    // The held request lands: two refunds at OPP.
    rig.proxy.wait_delivered(2).await;
    let at_opp = rig.refunds_at_opp(&debit).await;
    assert_eq!(at_opp.len(), 2, "{at_opp:?}");
    let late = at_opp
        .iter()
        .find(|(id, _)| retried["id"] != id.as_str())
        .unwrap()
        .0
        .clone();

    // The next call of the entity looks again and finds it.
    let replay = call_ok(&client, "perform_refund", args).await;
    assert_eq!(replay["idempotentReplay"], true);
    let reported = rig.audit_rows("perform_refund", "late_duplicate").await;
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(
        reported[0].entry.transaction_id.as_deref(),
        Some(late.as_str())
    );
    // The daily total counts what moved: both refunds.
    assert_eq!(rig.moved_today().await, 1_000);

    let readyz: serde_json::Value = reqwest::get(format!("{}/readyz", rig.app.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let warnings = readyz["warnings"].to_string();
    assert!(warnings.contains(&late), "{readyz}");

    // The operator sees it with `paywarden reconcile`.
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_paywarden"));
    cli.args(["reconcile", "--data-dir"])
        .arg(rig.app.data_dir.path())
        .env_remove("PAYWARDEN_CONFIG");
    if let Some(url) = &rig.app.database.url {
        cli.env("DATABASE_URL", url);
    }
    let out = cli.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&late), "{stdout}");
    assert!(
        stdout.contains("late-2") || stdout.contains("duplicate"),
        "{stdout}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "unacknowledged: exit 1\n{stdout}"
    );
    // An operator reviews it and acknowledges it: recorded, and /readyz stops warning.
    let mut ack = std::process::Command::new(env!("CARGO_BIN_EXE_paywarden"));
    ack.args([
        "reconcile",
        "--acknowledge",
        &late,
        "--as",
        "alice",
        "--data-dir",
    ])
    .arg(rig.app.data_dir.path())
    .env_remove("PAYWARDEN_CONFIG");
    if let Some(url) = &rig.app.database.url {
        ack.env("DATABASE_URL", url);
    }
    let out = ack.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let readyz: serde_json::Value = reqwest::get(format!("{}/readyz", rig.app.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(readyz["warnings"], json!([]), "{readyz}");
    assert_eq!(
        rig.audit_rows("perform_refund", "late_acknowledged")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn reconciliation_never_claims_another_refund_with_the_same_merchant_reference() {
    let rig = rig(|c| c.opp.settle_window_ms = Some(1_000)).await;
    let debit = rig.debit("30.00").await;
    let client = rig.app.client("/mcp", Era::Legacy).await;
    // A 10.00 refund with the caller's own merchant reference.
    let mut first = refund(&debit, "10.00", "mref-1");
    first["merchantTransactionId"] = json!("order-77-refund");
    let done = call_ok(&client, "perform_refund", first).await;
    assert_eq!(done["status"], "executed");

    // A 5.00 refund reusing that reference is lost on the way to OPP.
    rig.proxy.plan(&[Plan::Drop]);
    let mut second = refund(&debit, "5.00", "mref-2");
    second["merchantTransactionId"] = json!("order-77-refund");
    let lost = call_err(&client, "perform_refund", second.clone()).await;
    assert!(lost.contains("UNKNOWN"), "{lost}");
    // The retry must not take the 10.00 refund for its own.
    let retry = call(&client, "perform_refund", second.clone())
        .await
        .unwrap();
    assert_eq!(
        retry.is_error,
        Some(true),
        "claimed another refund: {}",
        text(&retry)
    );
    assert_eq!(rig.moved_today().await, 1_000);

    // Once the window has passed with OPP showing nothing, the 5.00 refund runs, once.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let ran = call_ok(&client, "perform_refund", second).await;
    assert_eq!(ran["status"], "executed", "{ran}");
    assert_eq!(ran["amount"], "5.00");
    assert_ne!(ran["id"], done["id"]);
    let mut at_opp: Vec<i64> = rig
        .refunds_at_opp(&debit)
        .await
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    at_opp.sort();
    assert_eq!(at_opp, vec![500, 1_000]);
    assert_eq!(rig.moved_today().await, 1_500);
}

#[tokio::test]
async fn a_database_failure_after_opp_executed_never_says_nothing_was_sent() {
    // OPP takes 800 ms to answer (within the 5 s timeout); meanwhile paywarden's database goes.
    let rig = rig(|c| c.opp.timeout_ms = 5_000).await;
    let debit = rig.debit("20.00").await;
    let client = rig.app.client("/mcp", Era::Legacy).await;
    rig.proxy.plan(&[Plan::Hold(Duration::from_millis(800))]);
    let store = rig.app.store.clone();
    let closer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.close().await;
    });
    let answer = call(&client, "perform_refund", refund(&debit, "5.00", "db-gone")).await;
    closer.await.unwrap();
    let said = match &answer {
        Ok(result) => text(result),
        Err(e) => format!("{e:?}"),
    };
    // OPP did refund.
    assert_eq!(rig.refunds_at_opp(&debit).await.len(), 1);
    assert!(
        !said.to_lowercase().contains("nothing was sent"),
        "claims nothing was sent after OPP refunded: {said}"
    );
    assert!(said.contains("may have"), "{said}");
}

#[tokio::test]
async fn an_approval_left_executing_by_a_dead_process_is_recovered() {
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("people.toml");
    std::fs::write(
        &policy,
        r#"
default = "allow"

[[rule]]
name = "people-refund"
when = "tool == 'perform_refund'"
action = "human"
message = "A person approves refunds."
"#,
    )
    .unwrap();
    let rig = rig(|c| {
        c.safety.policy_file = Some(policy.clone());
    })
    .await;
    let debit = rig.debit("20.00").await;
    let client = rig.app.client("/mcp", Era::Legacy).await;
    let args = json!({"referenceId": debit, "amount": "5.00", "currency": "EUR"});
    let asked = call_ok(&client, "perform_refund", args.clone()).await;
    assert_eq!(asked["status"], "approval_pending", "{asked}");
    let id = asked["approval"]["id"].as_str().unwrap().to_string();
    let store = &rig.app.store;
    store
        .decide_approval(&id, true, "alice", None)
        .await
        .unwrap();
    let approval = store.approval(&id).await.unwrap().unwrap();
    // A process claims it for execution (holding it for 1 s) and dies before sending anything.
    store
        .claim_approval_leased(
            &id,
            DEMO_ENTITY_ID,
            &approval.request_hash,
            chrono::Duration::seconds(1),
        )
        .await
        .unwrap();

    let mut execute = args.clone();
    execute["approvalId"] = json!(id);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let executed = loop {
        let answer = call(&client, "perform_refund", execute.clone())
            .await
            .unwrap();
        if answer.is_error != Some(true) {
            break answer.structured_content.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the approval stays stuck: {}",
            text(&answer)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(executed["status"], "executed", "{executed}");
    assert_eq!(rig.refunds_at_opp(&debit).await.len(), 1);
    let approval = store.approval(&id).await.unwrap().unwrap();
    assert_eq!(approval.status, paywarden::store::ApprovalStatus::Executed);
    assert_eq!(rig.moved_today().await, 500);
}
