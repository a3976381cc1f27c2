//! Failures as Stripe documents them (issue 14 points 1 and 5), attacked through the real
//! server on port 0 with the emulator behind it, its failures injected with the sandbox fault
//! control (`POST /__emulator/faults`), and rmcp's client:
//!
//! - a 5xx after Stripe committed, a timeout, a connection cut after sending and a 409 (same
//!   key in flight) are UNKNOWN outcomes: the key stays blocked, a fresh refund of the same
//!   charge is refused meanwhile, and the retry finds the refund at Stripe and records it once;
//! - a 429 is sent again after `Retry-After`, bounded, then reported as retryable with nothing
//!   moved;
//! - a refund left `pending` is reported as pending and booked provisionally; when Stripe fails
//!   it, the booking is undone (refund_log, order, movements) and audited;
//! - OPP's throttling is retried likewise; a duplicate or late ifthenpay callback books the
//!   payment once, when it arrives.
//!
//! Runs on SQLite, or on PostgreSQL with `PAYWARDEN_TEST_DATABASE=postgres`.

mod common;

use common::*;
use indicatif::ProgressBar;
use paywarden::connectors::stripe::{StripeClient, StripeKey};
use paywarden_emulator::{DEMO_ENTITY_ID, DEMO_STRIPE_KEY};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SARAH: &str = "sarah@example.com";

fn stripe(app: &TestApp) -> StripeClient {
    StripeClient::new(
        app.emulator_url.as_deref().expect("emulator"),
        StripeKey::parse(DEMO_STRIPE_KEY, false).unwrap(),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// paywarden (Stripe timeout 1 s) with the emulator and the ops demo data.
async fn ops_app() -> TestApp {
    let app = spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.stripe.timeout_ms = 1_000;
    })
    .await;
    paywarden::seed_ops::seed_ops_demo(
        &app.store,
        &stripe(&app),
        DEMO_ENTITY_ID,
        &ProgressBar::hidden(),
    )
    .await
    .expect("ops demo seeded");
    app
}

/// Arms a fault at the emulator.
async fn arm(app: &TestApp, fault: Value) {
    app.arm_fault(fault).await;
}

/// Sarah's newest $49.99 charge.
async fn sarahs_charge(client: &Client) -> String {
    let listed = call_ok(
        client,
        "list_payments",
        json!({"email": SARAH, "limit": 10}),
    )
    .await;
    listed["payments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["amount_cents"] == 4999)
        .map(|p| p["payment_intent_id"].as_str().unwrap().to_string())
        .expect("a $49.99 charge")
}

/// Previews `args` and returns them with the confirmation token added.
async fn confirmed(client: &Client, args: Value) -> Value {
    let preview = call_ok(client, "issue_refund", args.clone()).await;
    assert_eq!(preview["status"], "confirmation_required", "{preview}");
    let mut args = args;
    args["confirmation_token"] = preview["confirmation"]["token"].clone();
    args
}

async fn refunds_at_stripe(app: &TestApp, pi: &str) -> Vec<(String, i64, String)> {
    stripe(app)
        .refunds_for(pi)
        .await
        .unwrap()
        .data
        .into_iter()
        .map(|r| (r.id, r.amount.minor_units(), r.status.as_str().to_string()))
        .collect()
}

async fn order_of(app: &TestApp, pi: &str) -> paywarden::store::OrderRecord {
    app.store
        .order_by_charge(DEMO_ENTITY_ID, pi)
        .await
        .unwrap()
        .unwrap()
}

async fn log_of(app: &TestApp, pi: &str) -> Vec<paywarden::store::RefundLogRecord> {
    let order = order_of(app, pi).await;
    app.store
        .refund_log(DEMO_ENTITY_ID, &order.id)
        .await
        .unwrap()
}

async fn moved_today(app: &TestApp) -> i64 {
    app.store.moved_today(DEMO_ENTITY_ID, "USD").await.unwrap()
}

/// One unknown outcome: `action` hits the refund after Stripe committed it.
async fn unknown_outcome_is_reconciled_never_doubled(action: Value, needle: &str) {
    let app = ops_app().await;
    let client = app.client("/mcp", Era::Legacy).await;
    let pi = sarahs_charge(&client).await;
    let args = confirmed(
        &client,
        json!({"email": SARAH, "charge_id": pi, "amount_cents": 2000, "reason": "requested_by_customer"}),
    )
    .await;
    arm(
        &app,
        json!({"provider": "stripe", "method": "POST", "path": "/v1/refunds", "action": action}),
    )
    .await;

    // Stripe refunded, paywarden heard a failure: UNKNOWN, never "nothing was done".
    let err = call_err(&client, "issue_refund", args.clone()).await;
    assert!(err.contains(needle), "{err}");
    assert!(err.contains("UNKNOWN"), "{err}");
    assert!(!err.contains("nothing was done"), "{err}");
    // The injected fault may answer before the emulator's background handling commits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(refunds_at_stripe(&app, &pi).await.len(), 1);
    assert!(log_of(&app, &pi).await.is_empty());

    // A fresh refund of the same charge (new confirmation, new key) is refused while the
    // first one's outcome is unknown: Stripe's remainder (2999) would allow it.
    let fresh = confirmed(
        &client,
        json!({"email": SARAH, "charge_id": pi, "amount_cents": 2000, "reason": "duplicate"}),
    )
    .await;
    let refused = call_err(&client, "issue_refund", fresh).await;
    assert!(refused.contains("UNKNOWN outcome"), "{refused}");
    assert_eq!(refunds_at_stripe(&app, &pi).await.len(), 1);

    // The exact retry asks Stripe first, finds the refund by its marker and records it once.
    let done = call_ok(&client, "issue_refund", args.clone()).await;
    assert_eq!(done["status"], "executed", "{done}");
    let at_stripe = refunds_at_stripe(&app, &pi).await;
    assert_eq!(at_stripe.len(), 1, "{at_stripe:?}");
    assert_eq!(done["refund"]["stripe_refund_id"], at_stripe[0].0.as_str());
    let log = log_of(&app, &pi).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].amount_cents, 2000);
    assert_eq!(order_of(&app, &pi).await.refunded_cents, 2000);
    assert_eq!(moved_today(&app).await, 2000);

    // And again: a replay, nothing new anywhere.
    let again = call_ok(&client, "issue_refund", args).await;
    assert_eq!(again["refund"]["stripe_refund_id"], at_stripe[0].0.as_str());
    assert_eq!(refunds_at_stripe(&app, &pi).await.len(), 1);
    assert_eq!(log_of(&app, &pi).await.len(), 1);
    assert_eq!(moved_today(&app).await, 2000);
}

#[tokio::test]
async fn stripe_500_after_commit_is_an_unknown_outcome_reconciled_once() {
    unknown_outcome_is_reconciled_never_doubled(
        json!({"kind": "error_after_commit", "status": 500}),
        "HTTP 500",
    )
    .await;
}

#[tokio::test]
async fn stripe_timeout_after_commit_is_an_unknown_outcome_reconciled_once() {
    unknown_outcome_is_reconciled_never_doubled(
        json!({"kind": "timeout_after_commit", "hold_ms": 2500}),
        "did not answer",
    )
    .await;
}

#[tokio::test]
async fn a_connection_cut_after_sending_is_an_unknown_outcome_reconciled_once() {
    unknown_outcome_is_reconciled_never_doubled(
        json!({"kind": "reset_after_commit"}),
        "connection",
    )
    .await;
}

#[tokio::test]
async fn stripe_409_same_key_in_flight_is_an_unknown_outcome_reconciled_once() {
    unknown_outcome_is_reconciled_never_doubled(
        json!({"kind": "conflict", "commit": true}),
        "HTTP 409",
    )
    .await;
}

#[tokio::test]
async fn stripe_429_is_retried_after_retry_after_then_reported_retryable() {
    let app = ops_app().await;
    let client = app.client("/mcp", Era::Legacy).await;
    let pi = sarahs_charge(&client).await;

    // Throttled once: sent again after Retry-After (1 s), refunded once.
    let args = confirmed(
        &client,
        json!({"email": SARAH, "charge_id": pi, "amount_cents": 1000}),
    )
    .await;
    arm(
        &app,
        json!({"provider": "stripe", "method": "POST", "path": "/v1/refunds",
        "action": {"kind": "throttle", "retry_after_s": 1}}),
    )
    .await;
    let started = Instant::now();
    let done = call_ok(&client, "issue_refund", args).await;
    assert_eq!(done["status"], "executed", "{done}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    assert_eq!(refunds_at_stripe(&app, &pi).await.len(), 1);

    // Throttled every time (1 + 2 retries): retryable, nothing moved, key released.
    let args = confirmed(
        &client,
        json!({"email": SARAH, "charge_id": pi, "amount_cents": 1000, "reason": "duplicate"}),
    )
    .await;
    arm(
        &app,
        json!({"provider": "stripe", "method": "POST", "path": "/v1/refunds",
        "action": {"kind": "throttle", "retry_after_s": 0}, "times": 3}),
    )
    .await;
    let err = call_err(&client, "issue_refund", args.clone()).await;
    assert!(err.contains("rate limited"), "{err}");
    assert!(err.contains("nothing was done"), "{err}");
    assert_eq!(refunds_at_stripe(&app, &pi).await.len(), 1);
    assert_eq!(log_of(&app, &pi).await.len(), 1);
    assert_eq!(moved_today(&app).await, 1000);

    // Retried later, it goes through, once.
    let done = call_ok(&client, "issue_refund", args).await;
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(refunds_at_stripe(&app, &pi).await.len(), 2);
    assert_eq!(log_of(&app, &pi).await.len(), 2);
    assert_eq!(moved_today(&app).await, 2000);
}

#[tokio::test]
async fn a_pending_refund_is_reported_pending_and_undone_when_stripe_fails_it() {
    let app = ops_app().await;
    let client = app.client("/mcp", Era::Legacy).await;
    let pi = sarahs_charge(&client).await;
    let args = confirmed(&client, json!({"email": SARAH, "charge_id": pi})).await;
    arm(
        &app,
        json!({"provider": "stripe", "method": "POST", "path": "/v1/refunds",
        "action": {"kind": "refund_pending"}}),
    )
    .await;

    // Pending: said so, not "executed"; booked provisionally so nothing refunds it twice.
    let pending = call_ok(&client, "issue_refund", args).await;
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["refund"]["status"], "pending");
    let refund_id = pending["refund"]["stripe_refund_id"]
        .as_str()
        .unwrap()
        .to_string();
    let log = log_of(&app, &pi).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, "pending");
    assert_eq!(order_of(&app, &pi).await.refunded_cents, 4999);
    assert_eq!(moved_today(&app).await, 4999);
    let refused = call_err(
        &client,
        "issue_refund",
        json!({"email": SARAH, "charge_id": pi}),
    )
    .await;
    assert!(refused.contains("already refunded"), "{refused}");

    // Still pending at Stripe: a read leaves it pending.
    let history = call_ok(&client, "get_order_history", json!({"email": SARAH})).await;
    assert!(history.to_string().contains("\"pending\""), "{history}");

    // Stripe fails it (the money returns to the balance).
    let resolved = reqwest::Client::new()
        .post(format!(
            "{}/__emulator/stripe/refunds/{refund_id}",
            app.emulator_url.as_deref().unwrap()
        ))
        .json(&json!({"status": "failed", "failure_reason": "expired_or_canceled_card"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), 200);

    // The next read settles it: the booking is undone everywhere, and audited.
    let history = call_ok(&client, "get_order_history", json!({"email": SARAH})).await;
    let entry = history["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["stripe_charge_id"] == pi.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["status"], "paid", "{entry}");
    assert_eq!(entry["refunds"][0]["status"], "failed", "{entry}");
    let order = order_of(&app, &pi).await;
    assert_eq!(order.refunded_cents, 0);
    assert_eq!(order.status, paywarden::store::OrderStatus::Paid);
    assert_eq!(log_of(&app, &pi).await[0].status, "failed");
    assert_eq!(moved_today(&app).await, 0);
    let audit = app.store.audit_records(None).await.unwrap();
    let reversed: Vec<_> = audit
        .iter()
        .filter(|r| r.entry.outcome == "reversed")
        .collect();
    assert_eq!(reversed.len(), 1, "{audit:?}");
    assert_eq!(
        reversed[0].entry.transaction_id.as_deref(),
        Some(refund_id.as_str())
    );
    // Settling is idempotent: another read changes nothing.
    call_ok(&client, "get_order_history", json!({"email": SARAH})).await;
    assert_eq!(moved_today(&app).await, 0);
    assert_eq!(order_of(&app, &pi).await.refunded_cents, 0);

    // The money can be refunded again, once.
    let args = confirmed(
        &client,
        json!({"email": SARAH, "charge_id": pi, "reason": "duplicate"}),
    )
    .await;
    let done = call_ok(&client, "issue_refund", args).await;
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(order_of(&app, &pi).await.refunded_cents, 4999);
    assert_eq!(moved_today(&app).await, 4999);
    let at_stripe = refunds_at_stripe(&app, &pi).await;
    assert_eq!(at_stripe.len(), 2);
    assert_eq!(
        at_stripe.iter().filter(|r| r.2 == "succeeded").count(),
        1,
        "{at_stripe:?}"
    );
}

#[tokio::test]
async fn a_pending_refund_canceled_later_is_undone_by_the_next_call() {
    let app = ops_app().await;
    let client = app.client("/mcp", Era::Legacy).await;
    let pi = sarahs_charge(&client).await;
    let args = confirmed(
        &client,
        json!({"email": SARAH, "charge_id": pi, "amount_cents": 999}),
    )
    .await;
    arm(
        &app,
        json!({"provider": "stripe", "method": "POST", "path": "/v1/refunds",
        "action": {"kind": "refund_pending", "then": "canceled", "after_ms": 200}}),
    )
    .await;
    let pending = call_ok(&client, "issue_refund", args).await;
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(moved_today(&app).await, 999);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The next issue_refund (here a preview) checks pending refunds first.
    confirmed(
        &client,
        json!({"email": SARAH, "charge_id": pi, "amount_cents": 999}),
    )
    .await;
    assert_eq!(log_of(&app, &pi).await[0].status, "canceled");
    assert_eq!(moved_today(&app).await, 0);
    assert_eq!(order_of(&app, &pi).await.refunded_cents, 0);
}

// Multi-threaded: the CLI runs as a blocking child process while this runtime serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_arms_lists_and_clears_faults_and_refuses_anything_but_the_emulator() {
    let app = spawn_app().await;
    let emulator = app.emulator_url.clone().unwrap();
    let bin = env!("CARGO_BIN_EXE_paywarden");
    let run = |args: Vec<String>| {
        std::process::Command::new(bin)
            .args(args)
            .output()
            .expect("paywarden runs")
    };
    let arm = run([
        "faults",
        "arm",
        "--provider",
        "stripe",
        "--method",
        "post",
        "--path",
        "/v1/refunds",
        "--kind",
        "throttle",
        "--retry-after-s",
        "2",
        "--times",
        "3",
        "--emulator-url",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([emulator.clone()])
    .collect());
    assert!(
        arm.status.success(),
        "{}",
        String::from_utf8_lossy(&arm.stderr)
    );
    let list = run(vec![
        "faults".into(),
        "list".into(),
        "--emulator-url".into(),
        emulator.clone(),
    ]);
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed[0]["action"]["kind"], "throttle", "{listed}");
    assert_eq!(listed[0]["action"]["retry_after_s"], 2);
    assert_eq!(listed[0]["method"], "POST");
    assert_eq!(listed[0]["times"], 3);
    let clear = run(vec![
        "faults".into(),
        "clear".into(),
        "--emulator-url".into(),
        emulator.clone(),
    ]);
    assert!(clear.status.success());
    let list = run(vec![
        "faults".into(),
        "list".into(),
        "--emulator-url".into(),
        emulator,
    ]);
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed, json!([]));

    // paywarden's own server is not the emulator: refused, whatever it answers.
    let refused = run(vec![
        "faults".into(),
        "list".into(),
        "--emulator-url".into(),
        app.base_url.clone(),
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("only be injected in the sandbox"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test]
async fn opp_throttling_is_retried_after_retry_after_then_reported_retryable() {
    use paywarden_domain::{Currency, PaymentType};
    let app = spawn_app().await;
    let client = app.client("/mcp", Era::Legacy).await;
    let debit = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "10.00",
            Currency::EUR,
        )
        .await;

    // Throttled once: read again after Retry-After (1 s).
    arm(
        &app,
        json!({"provider": "opp", "method": "GET", "path": "/v1/query/*",
        "action": {"kind": "throttle", "retry_after_s": 1}}),
    )
    .await;
    let started = Instant::now();
    let read = call_ok(&client, "get_transactions", json!({"id": debit})).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    assert!(read.to_string().contains(&debit), "{read}");

    // Throttled every time: a retryable error that says nothing was done.
    arm(
        &app,
        json!({"provider": "opp", "method": "GET", "path": "/v1/query/*",
        "action": {"kind": "throttle", "retry_after_s": 0}, "times": 3}),
    )
    .await;
    let err = call_err(&client, "get_transactions", json!({"id": debit})).await;
    assert!(err.contains("throttled"), "{err}");
    assert!(err.contains("Nothing was done"), "{err}");
    // And the next read goes through.
    call_ok(&client, "get_transactions", json!({"id": debit})).await;
}

/// An ifthenpay Multibanco reference created through the tools: (reference, paywarden's entity).
async fn multibanco_reference(app: &TestApp, order_id: &str) -> (String, String) {
    use paywarden_emulator::IFTHENPAY_MB_KEY;
    let answer = reqwest::Client::new()
        .post(format!("{}/mcp/payments/", app.base_url))
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "multibanco_create_reference",
            "arguments": {"mb_key": IFTHENPAY_MB_KEY, "order_id": order_id, "amount": 25.0}}}),
        )
        .send()
        .await
        .unwrap();
    let body: Value = answer.json().await.unwrap();
    let data = &body["result"]["structuredContent"];
    assert!(data.is_object(), "{body}");
    let reference = data["reference"].as_str().expect("a reference").to_string();
    (
        reference,
        format!("key:{}", app.key_ids.id(IFTHENPAY_MB_KEY)),
    )
}

async fn shopper_pays(app: &TestApp, reference: &str) -> Value {
    reqwest::Client::new()
        .post(format!(
            "{}/sandbox/ifthenpay/shopper",
            app.emulator_url.as_deref().unwrap()
        ))
        .json(&json!({"action": "pay", "reference": reference}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_duplicate_ifthenpay_callback_books_the_payment_once() {
    let app = spawn_app_with(|c| c.safety.policy_file = None).await;
    let (reference, entity) = multibanco_reference(&app, "DUP-1").await;
    arm(
        &app,
        json!({"provider": "ifthenpay", "path": "/sandbox/ifthenpay/shopper",
        "action": {"kind": "callback_duplicate", "copies": 2}}),
    )
    .await;
    let paid = shopper_pays(&app, &reference).await;
    assert_eq!(paid["callback"]["status"], 200, "{paid}");
    assert_eq!(
        paid["callback"]["duplicates"].as_array().unwrap().len(),
        2,
        "{paid}"
    );
    let records = app.store.ifthenpay_requests(&entity).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, "paid");
    let paid_at = records[0].paid_at.clone();
    // Three callbacks arrived; one payment is booked, its time unchanged by the copies.
    let callbacks = app.store.ifthenpay_callbacks().await.unwrap();
    assert_eq!(callbacks.len(), 3, "{callbacks:?}");
    let records = app.store.ifthenpay_requests(&entity).await.unwrap();
    assert_eq!(records[0].paid_at, paid_at);
}

#[tokio::test]
async fn a_late_ifthenpay_callback_books_the_payment_when_it_arrives() {
    let app = spawn_app_with(|c| c.safety.policy_file = None).await;
    let (reference, entity) = multibanco_reference(&app, "LATE-1").await;
    arm(
        &app,
        json!({"provider": "ifthenpay", "path": "/sandbox/ifthenpay/shopper",
        "action": {"kind": "callback_late", "delay_ms": 800}}),
    )
    .await;
    let paid = shopper_pays(&app, &reference).await;
    assert_eq!(paid["callback"]["late_ms"], 800, "{paid}");
    let records = app.store.ifthenpay_requests(&entity).await.unwrap();
    assert_eq!(
        records[0].status, "pending",
        "booked before the callback arrived"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let records = app.store.ifthenpay_requests(&entity).await.unwrap();
    assert_eq!(records[0].status, "paid");
    assert_eq!(app.store.ifthenpay_callbacks().await.unwrap().len(), 1);
}
