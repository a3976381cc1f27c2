//! Who may touch paywarden's own state: every MCP request is authenticated before anything is
//! served or stored (approvals, confirmations, idempotency keys), a failed authentication at
//! the provider releases what it claimed, and sessions are a bounded resource.
//!
//! The attacks run against the real server (and, for memory, the real binary), with a real MCP
//! client or plain HTTP, as an attacker would.

mod common;

use std::time::Duration;

use common::*;
use paywarden::service::{ops::KnownEntity, safety::token_hash};
use paywarden_domain::{Currency, PaymentType};
use paywarden_emulator::{DEMO_ENTITY_ID, DEMO_TOKEN, SECOND_ENTITY_ID, SECOND_TOKEN};
use serde_json::{json, Value};

const GARBAGE: &str = "garbage-token-0000";

/// What a caller holding `token` gets out of `tool(args)` at `/mcp`: everything the server
/// answered, as one string (the refusal when it would not even open the connection).
async fn attempt(app: &TestApp, era: Era, token: &str, tool: &str, args: Value) -> String {
    match try_connect_client(&app.base_url, "/mcp", era, DEMO_ENTITY_ID, token).await {
        Err(refused) => format!("REFUSED {refused}"),
        Ok(client) => match call(&client, tool, args).await {
            Ok(result) => format!(
                "{}\n{}",
                text(&result),
                result.structured_content.unwrap_or_default()
            ),
            Err(e) => format!("ERROR {e}"),
        },
    }
}

/// A server with the built-in policy (small operations confirmed, large ones human).
async fn guarded_app() -> TestApp {
    spawn_app_with(|c| c.safety.policy_file = None).await
}

/// A 900.00 EUR debit and a pending approval of a 750.00 refund of it, asked by the real agent.
async fn pending_refund(app: &TestApp) -> (String, String, Client) {
    let db = app
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
        json!({"referenceId": db, "amount": "750.00", "currency": "EUR"}),
    )
    .await;
    assert_eq!(pending["status"], "approval_pending", "{pending}");
    let id = pending["approval"]["id"].as_str().unwrap().to_string();
    (db, id, agent)
}

/// How many transactions of `types` the payment `id` has at the provider.
async fn count(agent: &Client, id: &str, types: &[&str]) -> usize {
    let linked = call_ok(
        agent,
        "get_transactions",
        json!({"id": id, "paymentTypes": types}),
    )
    .await;
    linked["payments"].as_array().map_or(0, Vec::len)
}

fn assert_nothing_of_the_approval(seen: &str) {
    for secret in ["750", "Jane Jones", "420000", "apr_"] {
        assert!(
            !seen.contains(secret),
            "a garbage token saw {secret:?} of the approval: {seen}"
        );
    }
}

#[tokio::test]
async fn a_garbage_token_neither_reads_nor_burns_an_approval() {
    let app = guarded_app().await;
    let (db, id, agent) = pending_refund(&app).await;

    // Pending: the right entity id with any token sees nothing of it, in either era.
    for era in [Era::Legacy, Era::Stateless] {
        let seen = attempt(
            &app,
            era,
            GARBAGE,
            "get_approval",
            json!({"approvalId": id}),
        )
        .await;
        assert_nothing_of_the_approval(&seen);
    }

    // Approved: the garbage token cannot claim it, and the real agent runs it exactly once.
    app.store
        .decide_approval(&id, true, "alice", None)
        .await
        .unwrap();
    for era in [Era::Legacy, Era::Stateless] {
        let seen = attempt(
            &app,
            era,
            GARBAGE,
            "get_approval",
            json!({"approvalId": id}),
        )
        .await;
        assert_nothing_of_the_approval(&seen);
    }
    let approval = app.store.approval(&id).await.unwrap().unwrap();
    assert_eq!(
        approval.status,
        paywarden::store::ApprovalStatus::Approved,
        "the attack must leave the approval executable"
    );
    let done = call_ok(&agent, "get_approval", json!({"approvalId": id})).await;
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(done["amount"], "750.00");
    let again = call_ok(&agent, "get_approval", json!({"approvalId": id})).await;
    assert_eq!(again["id"], done["id"]);
    assert_eq!(count(&agent, &db, &["RF"]).await, 1, "one refund only");
}

#[tokio::test]
async fn a_garbage_token_cannot_use_or_burn_a_confirmation_token() {
    let app = guarded_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "80.00",
            Currency::EUR,
        )
        .await;
    let agent = app.client("/mcp", Era::Legacy).await;
    let args = json!({"referenceId": pa, "amount": "30.00", "currency": "EUR"});
    let preview = call_ok(&agent, "perform_capture", args.clone()).await;
    assert_eq!(preview["status"], "confirmation_required", "{preview}");
    let mut confirmed = args.clone();
    confirmed["confirmationToken"] = preview["confirmation"]["token"].clone();

    for era in [Era::Legacy, Era::Stateless] {
        let seen = attempt(&app, era, GARBAGE, "perform_capture", confirmed.clone()).await;
        assert!(!seen.contains("\"executed\""), "{seen}");
    }
    assert_eq!(count(&agent, &pa, &["CP"]).await, 0, "nothing moved");
    let done = call_ok(&agent, "perform_capture", confirmed.clone()).await;
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(count(&agent, &pa, &["CP"]).await, 1);
}

#[tokio::test]
async fn a_garbage_token_gets_no_idempotent_replay_and_burns_no_key() {
    let app = spawn_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "80.00",
            Currency::EUR,
        )
        .await;
    let agent = app.client("/mcp", Era::Legacy).await;
    let first =
        json!({"referenceId": pa, "amount": "10.00", "currency": "EUR", "idempotencyKey": "cap-1"});
    let done = call_ok(&agent, "perform_capture", first.clone()).await;
    let captured = done["id"].as_str().unwrap().to_string();

    // The stored outcome of a key is not replayed to a garbage token.
    for era in [Era::Legacy, Era::Stateless] {
        let seen = attempt(&app, era, GARBAGE, "perform_capture", first.clone()).await;
        assert!(
            !seen.contains(&captured),
            "a garbage token got the replay: {seen}"
        );
    }

    // A garbage token's call under a fresh key does not burn the key for the real agent.
    let second =
        json!({"referenceId": pa, "amount": "5.00", "currency": "EUR", "idempotencyKey": "cap-2"});
    for era in [Era::Legacy, Era::Stateless] {
        attempt(&app, era, GARBAGE, "perform_capture", second.clone()).await;
    }
    let done = call_ok(&agent, "perform_capture", second).await;
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(done["idempotentReplay"], false, "{done}");
    assert_eq!(count(&agent, &pa, &["CP"]).await, 2);
}

/// With `[[entities]]` configured, paywarden trusts its own table; a token it accepts can still
/// be refused by OPP (revoked there). That refusal moved nothing: every claim is released and
/// the real agent can still run the approval and the confirmation, once each.
#[tokio::test]
async fn a_provider_refusal_of_the_credentials_releases_every_claim() {
    const REVOKED: &str = "revoked-at-opp";
    let app = spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.entities = vec![
            KnownEntity {
                id: DEMO_ENTITY_ID.into(),
                token_sha256: token_hash(DEMO_TOKEN),
                ifthenpay: None,
            },
            KnownEntity {
                id: DEMO_ENTITY_ID.into(),
                token_sha256: token_hash(REVOKED),
                ifthenpay: None,
            },
        ];
    })
    .await;
    let (db, id, agent) = pending_refund(&app).await;
    app.store
        .decide_approval(&id, true, "alice", None)
        .await
        .unwrap();
    let revoked = app
        .client_as("/mcp", Era::Legacy, DEMO_ENTITY_ID, REVOKED)
        .await;
    let text = call_err(&revoked, "get_approval", json!({"approvalId": id})).await;
    assert!(text.contains("800.900.300"), "{text}");
    let approval = app.store.approval(&id).await.unwrap().unwrap();
    assert_eq!(approval.status, paywarden::store::ApprovalStatus::Approved);
    // The follow-up call with approvalId is refused the same way and claims nothing either.
    let follow_up =
        json!({"referenceId": db, "amount": "750.00", "currency": "EUR", "approvalId": id});
    call_err(&revoked, "perform_refund", follow_up).await;
    let done = call_ok(&agent, "get_approval", json!({"approvalId": id})).await;
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(count(&agent, &db, &["RF"]).await, 1);

    // A confirmation token used with a revoked token stays usable by the real agent.
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "80.00",
            Currency::EUR,
        )
        .await;
    let args = json!({"referenceId": pa, "amount": "30.00", "currency": "EUR"});
    let preview = call_ok(&agent, "perform_capture", args.clone()).await;
    let mut confirmed = args;
    confirmed["confirmationToken"] = preview["confirmation"]["token"].clone();
    let text = call_err(&revoked, "perform_capture", confirmed.clone()).await;
    assert!(text.contains("800.900.300"), "{text}");
    let done = call_ok(&agent, "perform_capture", confirmed).await;
    assert_eq!(done["status"], "executed", "{done}");
}

/// What the gate claimed is given back when nothing was sent (Settlement::NotSent: a refusal
/// of the credentials, an unreachable provider, a busy lease), and kept when the provider
/// answered: on the real store (SQLite, or PostgreSQL with PAYWARDEN_TEST_DATABASE=postgres).
#[tokio::test]
async fn nothing_sent_gives_back_the_approval_and_the_confirmation() {
    use paywarden::{
        config::SafetyConfig,
        service::{gate::Claims, safety::Safety, Pipeline, Settlement},
        store::{ApprovalStatus, Confirmation, NewApproval},
    };
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::fresh().await;
    let store = database.store(dir.path()).await;
    let pipeline = Pipeline::new(
        store.clone(),
        true,
        Safety {
            policy: std::sync::Arc::new(paywarden::policy::Policy::builtin()),
            config: SafetyConfig::default(),
            public_url: std::sync::Arc::new(std::sync::OnceLock::new()),
        },
    );
    let outcome = pipeline.error_outcome("authentication", "OPP refused the credentials", None);

    let hash = token_hash("pwc_test");
    store
        .create_confirmation(
            &hash,
            &Confirmation {
                entity_id: DEMO_ENTITY_ID.into(),
                tool: "perform_capture".into(),
                request_hash: "h".into(),
                preview: json!({}),
                rule: "r".into(),
                expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
            },
        )
        .await
        .unwrap();
    let use_it = || store.use_confirmation(&hash, DEMO_ENTITY_ID, "perform_capture", "h");
    use_it().await.unwrap();
    assert!(use_it().await.is_err(), "single use");
    let confirmed = Claims {
        confirmation: Some(hash.clone()),
        ..Claims::default()
    };
    pipeline
        .finish_gated(&confirmed, &outcome, Settlement::NotSent)
        .await
        .unwrap();
    use_it().await.expect("given back: usable again");
    pipeline
        .finish_gated(&confirmed, &outcome, Settlement::Final)
        .await
        .unwrap();
    assert!(use_it().await.is_err(), "an answered call keeps it used");

    let approval = store
        .create_approval(NewApproval {
            entity_id: DEMO_ENTITY_ID.into(),
            client_name: None,
            toolset: "opp".into(),
            tool: "perform_refund".into(),
            arguments: json!({}),
            request_hash: "h".into(),
            preview: json!({}),
            rule: "r".into(),
            message: "m".into(),
            ttl: chrono::Duration::hours(1),
        })
        .await
        .unwrap();
    store
        .decide_approval(&approval.id, true, "alice", None)
        .await
        .unwrap();
    let approved = Claims {
        approval_id: Some(approval.id.clone()),
        ..Claims::default()
    };
    let status = |id: String| {
        let store = store.clone();
        async move { store.approval(&id).await.unwrap().unwrap().status }
    };
    store
        .claim_approval(&approval.id, DEMO_ENTITY_ID, "h")
        .await
        .unwrap();
    pipeline
        .finish_gated(&approved, &outcome, Settlement::NotSent)
        .await
        .unwrap();
    assert_eq!(status(approval.id.clone()).await, ApprovalStatus::Approved);
    store
        .claim_approval(&approval.id, DEMO_ENTITY_ID, "h")
        .await
        .unwrap();
    pipeline
        .finish_gated(&approved, &outcome, Settlement::Final)
        .await
        .unwrap();
    assert_eq!(status(approval.id.clone()).await, ApprovalStatus::Executed);
}

/// Without `[[entities]]`, OPP judges credentials: when it cannot be asked, the caller gets a
/// clear 503 and nothing is served; nothing is cached, so the next request asks again.
#[tokio::test]
async fn an_unreachable_opp_is_a_503_not_a_verdict() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = spawn_app_with(|c| c.opp.base_url = Some(closed_url)).await;
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let resp = raw_initialize(&http, &app.base_url, "/mcp", DEMO_ENTITY_ID, DEMO_TOKEN).await;
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().get("mcp-session-id").is_none());
        assert!(resp.headers().get("retry-after").is_some());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "authentication_unavailable", "{body}");
        assert!(!body.to_string().contains(DEMO_TOKEN));
    }
}

/// How many requests the emulator's OPP query endpoint received while a `Delay` fault with
/// `times: 1000` was armed on it (each one it held used one).
async fn delayed_queries(app: &TestApp) -> u32 {
    let armed = app.armed_faults().await;
    let left = armed
        .iter()
        .find(|f| f["path"] == "/v1/query")
        .map_or(0, |f| f["times"].as_u64().unwrap());
    u32::try_from(1000 - left).unwrap()
}

/// Arms a 400 ms delay on every OPP query (the credential check is one), 1,000 times.
async fn slow_opp_queries(app: &TestApp) {
    app.arm_fault(
        json!({"provider": "opp", "method": "GET", "path": "/v1/query",
        "action": {"kind": "delay", "delay_ms": 400}, "times": 1000}),
    )
    .await;
}

/// The HTTP statuses of `n` concurrent `initialize`s at `/mcp` as `entity` with `token`.
async fn burst(app: &TestApp, n: usize, entity: &str, token: &str) -> Vec<u16> {
    let http = reqwest::Client::new();
    let requests = (0..n).map(|_| raw_initialize(&http, &app.base_url, "/mcp", entity, token));
    futures::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect()
}

#[tokio::test]
async fn a_burst_of_first_requests_asks_opp_about_the_credentials_once() {
    // A fleet of agents starting at once (or a load test's first second): every request
    // arrives before any verdict is cached. Each asking OPP on its own multiplies OPP's load
    // by the burst (up to 32 at once), and against a slow OPP every one of them waits its
    // turn behind the others. One question per pair of credentials in flight; the others wait
    // for its verdict.
    let app = spawn_app().await;
    slow_opp_queries(&app).await;
    let statuses = burst(&app, 12, DEMO_ENTITY_ID, DEMO_TOKEN).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        delayed_queries(&app).await,
        1,
        "one credential check for the burst"
    );

    // Refused credentials: the same, and every caller of the burst is refused.
    let statuses = burst(&app, 12, DEMO_ENTITY_ID, GARBAGE).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(
        delayed_queries(&app).await,
        2,
        "one more check for the refused pair"
    );

    // Verdicts are per pair: another entity's burst asks once more, on its own.
    let statuses = burst(&app, 6, SECOND_ENTITY_ID, SECOND_TOKEN).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(delayed_queries(&app).await, 3);
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[tokio::test]
async fn made_up_credentials_get_401_and_no_session() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    for path in ["/mcp", "/agentic/v1/mcp"] {
        for (entity, token) in [
            (DEMO_ENTITY_ID, GARBAGE),
            ("8ac7a4c9000000000000000000000999", GARBAGE),
            (DEMO_ENTITY_ID, SECOND_TOKEN),
        ] {
            let resp = raw_initialize(&http, &app.base_url, path, entity, token).await;
            assert_eq!(resp.status(), 401, "{path} {entity}");
            assert!(resp.headers().get("mcp-session-id").is_none());
            let body: Value = resp.json().await.expect("a JSON error");
            assert_eq!(body["error"], "invalid_credentials", "{body}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("X-Token"), "{message}");
            assert!(!message.contains(token), "{message}");
        }
    }
    // The right credentials open a session.
    let resp = raw_initialize(&http, &app.base_url, "/mcp", DEMO_ENTITY_ID, DEMO_TOKEN).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("mcp-session-id").is_some());
}

#[tokio::test]
async fn sessions_are_capped_per_entity_and_in_total_and_closing_frees_a_slot() {
    let app = spawn_app_with(|c| {
        c.http.max_sessions = 5;
        c.http.max_sessions_per_entity = 3;
    })
    .await;
    let http = reqwest::Client::new();
    let mut demo = Vec::new();
    for _ in 0..3 {
        let resp = raw_initialize(&http, &app.base_url, "/mcp", DEMO_ENTITY_ID, DEMO_TOKEN).await;
        assert_eq!(resp.status(), 200);
        demo.push(
            resp.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    // The entity's fourth: 429 with a JSON-RPC error saying what to do; no session.
    let resp = raw_initialize(
        &http,
        &app.base_url,
        "/agentic/v1/mcp",
        DEMO_ENTITY_ID,
        DEMO_TOKEN,
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("mcp-session-id").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], 1);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("max_sessions_per_entity") && message.contains("DELETE"),
        "{message}"
    );
    assert_eq!(body["error"]["data"]["limit"], 3, "{body}");
    // Another entity has its own allowance, up to the server's total.
    for _ in 0..2 {
        let resp =
            raw_initialize(&http, &app.base_url, "/mcp", SECOND_ENTITY_ID, SECOND_TOKEN).await;
        assert_eq!(resp.status(), 200);
    }
    let resp = raw_initialize(&http, &app.base_url, "/mcp", SECOND_ENTITY_ID, SECOND_TOKEN).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_sessions"),
        "{body}"
    );
    // Closing a session frees its slot.
    let resp = http
        .delete(format!("{}/mcp", app.base_url))
        .header("X-Entity-Id", DEMO_ENTITY_ID)
        .header("X-Token", DEMO_TOKEN)
        .header("Mcp-Session-Id", &demo[0])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = raw_initialize(&http, &app.base_url, "/mcp", DEMO_ENTITY_ID, DEMO_TOKEN).await;
    assert_eq!(resp.status(), 200);
    // Stateless (2026-07-28) clients hold no session and are not counted.
    let client = app.client("/mcp", Era::Stateless).await;
    call_ok(
        &client,
        "search_transactions",
        json!({"dateFrom": "2020-01-01", "dateTo": "2020-01-02"}),
    )
    .await;
}

/// A session belongs to the entity that opened it: another entity naming its id (to read its
/// stream, post into it or close it) gets the 404 of an unknown session, and the owner's
/// session carries on.
#[tokio::test]
async fn a_session_answers_only_the_entity_that_opened_it() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let resp = raw_initialize(&http, &app.base_url, "/mcp", DEMO_ENTITY_ID, DEMO_TOKEN).await;
    let id = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    drop(resp);
    let url = format!("{}/mcp", app.base_url);
    let as_entity = |method: reqwest::Method, entity: &str, token: &str| {
        session_request(&http, method, &url, entity, token, &id)
    };
    let ping = r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#;
    for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let resp = as_entity(method.clone(), SECOND_ENTITY_ID, SECOND_TOKEN)
            .body(ping)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{method}");
    }
    let resp = as_entity(reqwest::Method::POST, DEMO_ENTITY_ID, DEMO_TOKEN)
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the owner's session is still open");
}

#[tokio::test]
async fn an_idle_session_gives_its_slot_back() {
    let app = spawn_app_with(|c| {
        c.http.max_sessions_per_entity = 1;
        c.http.session_idle_timeout_secs = 1;
    })
    .await;
    let http = reqwest::Client::new();
    let resp = raw_initialize(&http, &app.base_url, "/mcp", DEMO_ENTITY_ID, DEMO_TOKEN).await;
    assert_eq!(resp.status(), 200);
    drop(resp);
    let resp = raw_initialize(&http, &app.base_url, "/mcp", DEMO_ENTITY_ID, DEMO_TOKEN).await;
    assert_eq!(resp.status(), 429);
    // The slot comes back once the session has idled out (1 s here); not a speed target.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let resp = raw_initialize(&http, &app.base_url, "/mcp", DEMO_ENTITY_ID, DEMO_TOKEN).await;
        if resp.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle session never gave its slot back"
        );
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The real binary on 127.0.0.1:0 (emulator in-process, no demo data) with `env` set: the
/// process (killed on drop), its pid and base URL.
struct Server {
    child: std::process::Child,
    pid: u32,
    base_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_binary(env: &[(&str, &str)]) -> Server {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_paywarden"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-seed",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env("PAYWARDEN_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("paywarden starts");
    let stdout = child.stdout.take().unwrap();
    let pid = child.id();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let base_url = loop {
        let line = lines.next().expect("a listening line").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        pid,
        base_url,
        _dir: dir,
    }
}

/// 3,000 `initialize`s with made-up credentials against the real binary leave its memory flat:
/// no session is created for them. A memory bound, not a timing.
#[tokio::test]
async fn three_thousand_unauthenticated_initializes_leave_memory_flat() {
    let server = spawn_binary(&[]);
    let (pid, base_url) = (server.pid, server.base_url.clone());
    let http = reqwest::Client::new();
    // Warm up (allocator arenas, connection pools, the emulator), then measure.
    for i in 0..200 {
        let token = format!("made-up-{i}");
        raw_initialize(&http, &base_url, "/mcp", DEMO_ENTITY_ID, &token).await;
    }
    let before = rss_kib(pid);
    let mut attack = tokio::task::JoinSet::new();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    for i in 0..3_000 {
        let (http, base_url, gate) = (http.clone(), base_url.clone(), gate.clone());
        attack.spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore");
            let entity = format!("8ac7a4c9{i:024}");
            let token = format!("made-up-token-{i}");
            let resp = raw_initialize(&http, &base_url, "/mcp", &entity, &token).await;
            (
                resp.status().as_u16(),
                resp.headers().contains_key("mcp-session-id"),
            )
        });
    }
    let answers = attack.join_all().await;
    let after = rss_kib(pid);
    let growth_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!("VmRSS before {before} KiB, after {after} KiB: +{growth_mib:.1} MiB");
    assert!(
        growth_mib < 20.0,
        "3,000 refused initializes grew the server by {growth_mib:.1} MiB"
    );
    let sessions = answers.iter().filter(|(_, session)| *session).count();
    assert_eq!(sessions, 0, "no session for made-up credentials");
    assert!(answers.iter().all(|(status, _)| *status == 401));
}

/// Memory per open session, for docs/deploy.md: RSS of the real binary before and after
/// opening `PAYWARDEN_MEASURE_SESSIONS` (default 1,000) authenticated sessions, and after
/// closing them. Run: `cargo test -p paywarden --test authentication memory_per_session --
/// --ignored --nocapture` (use `cargo test --release` for the release binary's figure).
#[tokio::test]
#[ignore = "a measurement, not a check: run it by name"]
async fn memory_per_session() {
    let n: usize = std::env::var("PAYWARDEN_MEASURE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let cap = (n + 100).to_string();
    let server = spawn_binary(&[
        ("PAYWARDEN_HTTP__MAX_SESSIONS_PER_ENTITY", &cap),
        ("PAYWARDEN_HTTP__MAX_SESSIONS", &cap),
    ]);
    let http = reqwest::Client::new();
    let open = |count: usize| {
        let (http, base_url) = (http.clone(), server.base_url.clone());
        async move {
            let mut ids = Vec::new();
            for _ in 0..count {
                ids.push(
                    open_raw_session(&http, &base_url, "/mcp", DEMO_ENTITY_ID, DEMO_TOKEN).await,
                );
            }
            ids
        }
    };
    let warm = open(100).await;
    let before = rss_kib(server.pid);
    let ids = open(n).await;
    let after = rss_kib(server.pid);
    for id in ids.iter().chain(&warm) {
        http.delete(format!("{}/mcp", server.base_url))
            .header("X-Entity-Id", DEMO_ENTITY_ID)
            .header("X-Token", DEMO_TOKEN)
            .header("Mcp-Session-Id", id)
            .header("MCP-Protocol-Version", "2025-11-25")
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = rss_kib(server.pid);
    let per_session = after.saturating_sub(before) as f64 / n as f64;
    eprintln!(
        "{n} sessions: VmRSS {before} KiB -> {after} KiB ({per_session:.1} KiB per session); after closing them all: {closed} KiB"
    );
}
