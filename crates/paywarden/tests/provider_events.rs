//! Provider events in (issue 16, point 3), against the real server on port 0 with the emulator
//! behind it, which sends Stripe webhooks (signed) and OPP notifications (AES-256-GCM) to
//! paywarden as the providers do:
//!
//! - a Stripe event with a bad, stale or missing signature, and an OPP notification that does
//!   not authenticate, are refused (HTTP 400), audited, and change nothing;
//! - a replayed event (same Stripe event id) is acknowledged and ignored;
//! - a pending Stripe refund settled at the emulator is settled in paywarden by the webhook
//!   alone (no tool call); a dispute made at the emulator is recorded and its order flagged;
//! - an OPP transaction made at the emulator is stored for its payment, for its entity only;
//! - a session client subscribed to a payment's resource hears `notifications/resources/updated`
//!   when an event updates it; another entity's session subscribed to the same URI does not.
//!
//! Runs on SQLite, or on PostgreSQL with `PAYWARDEN_TEST_DATABASE=postgres`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use indicatif::ProgressBar;
use paywarden::connectors::stripe::{StripeClient, StripeKey};
use paywarden::events::signature::{encrypt_opp, stripe_signature};
use paywarden_domain::{Currency, PaymentType};
use paywarden_emulator::{
    DEMO_ENTITY_ID, DEMO_OPP_WEBHOOK_KEY, DEMO_STRIPE_KEY, DEMO_STRIPE_WEBHOOK_SECRET, DEMO_TOKEN,
    SECOND_ENTITY_ID, SECOND_TOKEN,
};
use rmcp::{
    model::{
        ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
        ResourceUpdatedNotificationParam, SubscribeRequestParams,
    },
    service::{NotificationContext, RunningService},
    transport::{
        streamable_http_client::StreamableHttpClientTransportConfig, StreamableHttpClientTransport,
    },
    ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient,
};
use serde_json::{json, Value};

const SARAH: &str = "sarah@example.com";

fn stripe(app: &TestApp) -> StripeClient {
    StripeClient::new(
        app.emulator_url.as_deref().expect("emulator"),
        StripeKey::parse(DEMO_STRIPE_KEY, false).unwrap(),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// paywarden with the emulator, the built-in policy and the ops demo data; its webhooks are
/// registered at the emulator before this returns.
async fn ops_app() -> TestApp {
    let app = spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.demo.webhooks = true;
    })
    .await;
    // The server registers its webhook URLs before it serves its first request.
    reqwest::get(format!("{}/healthz", app.base_url))
        .await
        .unwrap();
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

/// paywarden with the emulator sending its webhooks, registered before this returns.
async fn events_app() -> TestApp {
    let app = spawn_app_with(|c| c.demo.webhooks = true).await;
    reqwest::get(format!("{}/healthz", app.base_url))
        .await
        .unwrap();
    app
}

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

/// A refund of Sarah's $49.99 charge left pending at Stripe; returns (pi, refund id).
async fn pending_refund(app: &TestApp, client: &Client) -> (String, String) {
    let pi = sarahs_charge(client).await;
    let preview = call_ok(
        client,
        "issue_refund",
        json!({"email": SARAH, "charge_id": pi}),
    )
    .await;
    let mut args = json!({"email": SARAH, "charge_id": pi});
    args["confirmation_token"] = preview["confirmation"]["token"].clone();
    app.arm_fault(
        json!({"provider": "stripe", "method": "POST", "path": "/v1/refunds",
        "action": {"kind": "refund_pending"}}),
    )
    .await;
    let pending = call_ok(client, "issue_refund", args).await;
    assert_eq!(pending["status"], "pending", "{pending}");
    let refund = pending["refund"]["stripe_refund_id"]
        .as_str()
        .unwrap()
        .to_string();
    (pi, refund)
}

async fn refund_status(app: &TestApp, pi: &str) -> String {
    let order = app
        .store
        .order_by_charge(DEMO_ENTITY_ID, pi)
        .await
        .unwrap()
        .unwrap();
    app.store
        .refund_log(DEMO_ENTITY_ID, &order.id)
        .await
        .unwrap()[0]
        .status
        .clone()
}

/// Waits (up to 10 s) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn refund_event(id: &str, refund: &str, pi: &str, status: &str) -> String {
    json!({
        "id": id, "object": "event", "type": "refund.updated", "created": 1, "livemode": false,
        "data": {"object": {"id": refund, "object": "refund", "amount": 4999, "currency": "usd",
            "payment_intent": pi, "status": status}}
    })
    .to_string()
}

async fn post_stripe(app: &TestApp, body: &str, signature: Option<String>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", app.base_url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = signature {
        request = request.header("stripe-signature", s);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn signed(secret: &str, t: i64, body: &str) -> String {
    format!("t={t},v1={}", stripe_signature(secret, t, body.as_bytes()))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn rejected_audits(app: &TestApp, tool: &str) -> Vec<String> {
    app.store
        .audit_records(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.tool == tool && r.entry.outcome == "rejected")
        .filter_map(|r| r.entry.result_code)
        .collect()
}

#[tokio::test]
async fn a_forged_or_stale_stripe_event_is_refused_audited_and_changes_nothing() {
    let app = ops_app().await;
    let client = app.client("/mcp", Era::Legacy).await;
    let (pi, refund) = pending_refund(&app, &client).await;
    let forged = refund_event("evt_forged_1", &refund, &pi, "failed");
    for signature in [
        // Another secret (an attacker's).
        Some(signed("whsec_attacker", now(), &forged)),
        // The right secret over another body.
        Some(signed(DEMO_STRIPE_WEBHOOK_SECRET, now(), "{}")),
        // The right signature, replayed 10 minutes later.
        Some(signed(DEMO_STRIPE_WEBHOOK_SECRET, now() - 600, &forged)),
        // No v1, no header.
        Some(format!("t={}", now())),
        None,
    ] {
        let (status, body) = post_stripe(&app, &forged, signature).await;
        assert_eq!(status, 400, "{body}");
    }
    // Nothing changed: the refund is still pending, no event stored.
    assert_eq!(refund_status(&app, &pi).await, "pending");
    assert!(app
        .store
        .events_for(DEMO_ENTITY_ID, &pi)
        .await
        .unwrap()
        .iter()
        .all(|e| e.event.event_id != "evt_forged_1"));
    let refused = rejected_audits(&app, "stripe_webhook").await;
    assert_eq!(
        refused,
        [
            "bad_signature",
            "bad_signature",
            "stale_signature",
            "bad_signature",
            "bad_signature"
        ],
    );
    // The audit never holds the signature or the secret.
    let audit = serde_json::to_string(&app.store.audit_records(None).await.unwrap()).unwrap();
    assert!(!audit.contains(DEMO_STRIPE_WEBHOOK_SECRET) && !audit.contains("whsec_attacker"));
}

#[tokio::test]
async fn a_signed_stripe_event_settles_once_and_its_replay_is_ignored() {
    let app = ops_app().await;
    let client = app.client("/mcp", Era::Legacy).await;
    let (pi, refund) = pending_refund(&app, &client).await;
    let event = refund_event("evt_settle_1", &refund, &pi, "succeeded");
    // Two v1 signatures (a secret being rolled): one matching is enough.
    let header = format!(
        "t={},v1={},v1={}",
        now(),
        "0".repeat(64),
        stripe_signature(DEMO_STRIPE_WEBHOOK_SECRET, now(), event.as_bytes())
    );
    let (status, body) = post_stripe(&app, &event, Some(header)).await;
    assert_eq!((status, &body), (200, &json!({"received": true})));
    assert_eq!(refund_status(&app, &pi).await, "succeeded");
    // The same event again: acknowledged, ignored.
    let (status, body) = post_stripe(
        &app,
        &event,
        Some(signed(DEMO_STRIPE_WEBHOOK_SECRET, now(), &event)),
    )
    .await;
    assert_eq!(
        (status, &body),
        (200, &json!({"received": true, "replay": true}))
    );
    let events: Vec<_> = app
        .store
        .events_for(DEMO_ENTITY_ID, &pi)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.event_id == "evt_settle_1")
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.outcome, "applied");
    // An event type paywarden does not act on: 200, ignored.
    let other =
        json!({"id": "evt_other", "type": "customer.created", "data": {"object": {}}}).to_string();
    let (status, _) = post_stripe(
        &app,
        &other,
        Some(signed(DEMO_STRIPE_WEBHOOK_SECRET, now(), &other)),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_emulator_settles_a_pending_refund_through_its_signed_webhook() {
    let app = ops_app().await;
    let client = app.client("/mcp", Era::Legacy).await;
    let (pi, refund) = pending_refund(&app, &client).await;
    let resolved = reqwest::Client::new()
        .post(format!(
            "{}/__emulator/stripe/refunds/{refund}",
            app.emulator_url.as_deref().unwrap()
        ))
        .json(&json!({"status": "failed", "failure_reason": "expired_or_canceled_card"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), 200);
    // No tool call: the webhook alone settles (and undoes) it. The handler settles the refund,
    // then stores the event, then audits it, each committed on its own (a redelivery after a
    // crash in between settles nothing twice and stores the event then), so wait for the last.
    eventually(
        "the refund to be settled by the webhook, its event stored and audited",
        || async {
            refund_status(&app, &pi).await == "failed"
                && app
                    .store
                    .audit_records(None)
                    .await
                    .unwrap()
                    .iter()
                    .any(|r| r.entry.tool == "stripe_webhook" && r.entry.outcome == "reversed")
        },
    )
    .await;
    let order = app
        .store
        .order_by_charge(DEMO_ENTITY_ID, &pi)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.refunded_cents, 0);
    let events = app.store.events_for(DEMO_ENTITY_ID, &pi).await.unwrap();
    let updated = events
        .iter()
        .find(|e| e.event.event_type == "refund.updated")
        .expect("refund.updated stored");
    assert_eq!(updated.event.status.as_deref(), Some("failed"));
    assert_eq!(updated.event.outcome, "applied");
    assert!(events
        .iter()
        .any(|e| e.event.event_type == "charge.refunded"));
    let audit = app.store.audit_records(None).await.unwrap();
    assert!(audit
        .iter()
        .any(|r| r.entry.tool == "stripe_webhook" && r.entry.outcome == "reversed"));
    // Another entity sees none of it.
    assert!(app
        .store
        .events_for(SECOND_ENTITY_ID, &pi)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_dispute_made_at_the_emulator_is_recorded_and_flagged() {
    let app = ops_app().await;
    let client = app.client("/mcp", Era::Legacy).await;
    let pi = sarahs_charge(&client).await;
    let made = reqwest::Client::new()
        .post(format!(
            "{}/__emulator/stripe/disputes",
            app.emulator_url.as_deref().unwrap()
        ))
        .json(&json!({"payment_intent": pi, "reason": "fraudulent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);
    let dispute: Value = made.json().await.unwrap();
    assert!(dispute["id"].as_str().unwrap().starts_with("dp_"));
    eventually("the dispute event", || async {
        app.store
            .events_for(DEMO_ENTITY_ID, &pi)
            .await
            .unwrap()
            .iter()
            .any(|e| e.event.event_type == "charge.dispute.created" && e.event.outcome == "applied")
    })
    .await;
    let flags = app.store.review_flags(DEMO_ENTITY_ID).await.unwrap();
    assert!(
        flags
            .iter()
            .any(|f| f.note.contains(dispute["id"].as_str().unwrap())),
        "{flags:?}"
    );
}

async fn post_opp(app: &TestApp, body: String, iv: String, tag: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/webhooks/opp", app.base_url))
        .header("content-type", "text/plain")
        .header("x-initialization-vector", iv)
        .header("x-authentication-tag", tag)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn opp_notification(id: &str, entity: &str) -> Vec<u8> {
    json!({"type": "PAYMENT", "payload": {"id": id, "paymentType": "DB", "paymentBrand": "VISA",
        "amount": "12.50", "currency": "EUR", "result": {"code": "000.100.110", "description": "ok"},
        "authentication": {"entityId": entity}, "card": {"bin": "420000", "last4Digits": "0000", "holder": "Jane Jones"}}})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn an_opp_notification_that_does_not_authenticate_is_refused() {
    let app = spawn_app().await;
    let plain = opp_notification("8ac7forged", DEMO_ENTITY_ID);
    // Another key.
    let (body, iv, tag) = encrypt_opp(&plain, &"ab".repeat(32), [1; 12]).unwrap();
    assert_eq!(post_opp(&app, body, iv, tag).await.0, 400);
    // The right key, a changed tag, a changed body, no IV.
    let (body, iv, tag) = encrypt_opp(&plain, DEMO_OPP_WEBHOOK_KEY, [2; 12]).unwrap();
    assert_eq!(
        post_opp(&app, body.clone(), iv.clone(), "00".repeat(16))
            .await
            .0,
        400
    );
    let mut changed = body.clone().into_bytes();
    changed[0] = if changed[0] == b'a' { b'b' } else { b'a' };
    assert_eq!(
        post_opp(
            &app,
            String::from_utf8(changed).unwrap(),
            iv.clone(),
            tag.clone()
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post_opp(&app, body.clone(), String::new(), tag.clone())
            .await
            .0,
        400
    );
    assert!(app
        .store
        .events_for(DEMO_ENTITY_ID, "8ac7forged")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        rejected_audits(&app, "opp_webhook").await,
        ["decrypt_failed"; 4]
    );
    // The genuine one is stored once, without card data; its replay is ignored.
    let (status, answer) = post_opp(&app, body.clone(), iv.clone(), tag.clone()).await;
    assert_eq!((status, answer), (200, json!({"received": true})));
    let (status, answer) = post_opp(&app, body, iv, tag).await;
    assert_eq!(
        (status, answer),
        (200, json!({"received": true, "replay": true}))
    );
    let events = app
        .store
        .events_for(DEMO_ENTITY_ID, "8ac7forged")
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.amount_minor, Some(1250));
    assert!(!events[0].event.summary.to_string().contains("Jane"));
}

#[tokio::test]
async fn opp_transactions_made_at_the_emulator_arrive_encrypted_and_are_stored() {
    let app = events_app().await;
    reqwest::get(format!("{}/healthz", app.base_url))
        .await
        .unwrap();
    let id = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "10.00",
            Currency::EUR,
        )
        .await;
    eventually("the OPP notification", || async {
        !app.store
            .events_for(DEMO_ENTITY_ID, &id)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let events = app.store.events_for(DEMO_ENTITY_ID, &id).await.unwrap();
    assert_eq!(events[0].event.provider, "opp");
    assert_eq!(events[0].event.event_type, "PAYMENT");
    assert_eq!(events[0].event.amount_minor, Some(1000));
    assert_eq!(events[0].event.currency.as_deref(), Some("EUR"));
    assert_eq!(events[0].event.summary["paymentType"], "PA");
    assert!(app
        .store
        .events_for(SECOND_ENTITY_ID, &id)
        .await
        .unwrap()
        .is_empty());
}

/// A client that forwards every `notifications/resources/updated` it receives.
#[derive(Clone)]
struct Listener(tokio::sync::mpsc::UnboundedSender<String>);

impl ClientHandler for Listener {
    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params.uri);
    }

    fn get_info(&self) -> ClientConfig {
        let mut info = Implementation::default();
        info.name = "paywarden-subscriber".into();
        info.version = "1".into();
        ClientConfig::new(ClientCapabilities::default(), info)
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }
}

async fn listener(
    app: &TestApp,
    entity: &str,
    token: &str,
) -> (
    RunningService<RoleClient, Listener>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        http::HeaderName::from_static("x-entity-id"),
        http::HeaderValue::from_str(entity).unwrap(),
    );
    headers.insert(
        http::HeaderName::from_static("x-token"),
        http::HeaderValue::from_str(token).unwrap(),
    );
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.base_url))
            .custom_headers(headers),
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = Listener(tx)
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("client connects");
    (client, rx)
}

#[tokio::test]
#[allow(deprecated)] // resources/subscribe: the 2025-era subscription of session clients
async fn a_subscribed_session_hears_of_its_payment_and_no_other_entity_does() {
    let app = events_app().await;
    let id = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "20.00",
            Currency::EUR,
        )
        .await;
    let uri = format!("paywarden://payments/opp/{id}");
    let (mine, mut my_updates) = listener(&app, DEMO_ENTITY_ID, DEMO_TOKEN).await;
    let (theirs, mut their_updates) = listener(&app, SECOND_ENTITY_ID, SECOND_TOKEN).await;
    let capabilities = mine
        .peer_info()
        .unwrap()
        .capabilities
        .resources
        .clone()
        .unwrap();
    assert_eq!(capabilities.subscribe, Some(true));
    mine.subscribe(SubscribeRequestParams::new(uri.clone()))
        .await
        .unwrap();
    theirs
        .subscribe(SubscribeRequestParams::new(uri.clone()))
        .await
        .unwrap();
    // A capture of the payment at OPP: its notification reaches paywarden, then the session.
    let captured = reqwest::Client::new()
        .post(format!(
            "{}/v1/payments/{id}",
            app.emulator_url.as_deref().unwrap()
        ))
        .bearer_auth(DEMO_TOKEN)
        .form(&[
            ("entityId", DEMO_ENTITY_ID),
            ("paymentType", "CP"),
            ("amount", "20.00"),
            ("currency", "EUR"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(captured.status(), 200, "{}", captured.text().await.unwrap());
    // The payment's own PAYMENT notification (of its creation) may arrive after the
    // subscription too: read the resource after each update until the capture shows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while !text.contains("CP") {
        let heard = tokio::time::timeout_at(deadline, my_updates.recv())
            .await
            .unwrap_or_else(|_| panic!("the capture's notification within 10 s; last read: {text}"))
            .unwrap();
        assert_eq!(heard, uri);
        // The resource shows the capture.
        let read = mine
            .read_resource(rmcp::model::ReadResourceRequestParams::new(uri.clone()))
            .await
            .unwrap();
        text = serde_json::to_string(&read).unwrap();
    }
    // The other entity's session, subscribed to the same URI, hears nothing.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), their_updates.recv())
            .await
            .is_err()
    );
    let read = theirs
        .read_resource(rmcp::model::ReadResourceRequestParams::new(uri.clone()))
        .await
        .unwrap();
    assert!(!serde_json::to_string(&read).unwrap().contains("CP"));
}

#[tokio::test]
async fn a_2026_client_listening_for_its_payment_hears_of_it_on_the_stream() {
    let app = events_app().await;
    let id = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "30.00",
            Currency::EUR,
        )
        .await;
    let uri = format!("paywarden://payments/opp/{id}");
    let client = app.client("/mcp", Era::Stateless).await;
    let filter = rmcp::model::SubscriptionFilter::builder()
        .resource_subscription(uri.clone())
        .resource_subscription("test://not-a-payment")
        .build();
    let mut stream = client.listen(filter).await.expect("listen acknowledged");
    // Only the payment URI is accepted.
    assert_eq!(
        stream.acknowledged().resource_subscriptions,
        Some(vec![uri.clone()])
    );
    // Another entity listening for the same URI hears nothing.
    let theirs = app
        .client_as("/mcp", Era::Stateless, SECOND_ENTITY_ID, SECOND_TOKEN)
        .await;
    let mut their_stream = theirs
        .listen(
            rmcp::model::SubscriptionFilter::builder()
                .resource_subscription(uri.clone())
                .build(),
        )
        .await
        .unwrap();
    let reversed = reqwest::Client::new()
        .post(format!(
            "{}/v1/payments/{id}",
            app.emulator_url.as_deref().unwrap()
        ))
        .bearer_auth(DEMO_TOKEN)
        .form(&[("entityId", DEMO_ENTITY_ID), ("paymentType", "RV")])
        .send()
        .await
        .unwrap();
    assert_eq!(reversed.status(), 200, "{}", reversed.text().await.unwrap());
    let notification = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a notification within 10 s")
        .unwrap()
        .expect("the stream is open");
    match notification {
        rmcp::model::ServerNotification::ResourceUpdatedNotification(n) => {
            assert_eq!(n.params.uri, uri)
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), their_stream.next())
            .await
            .is_err()
    );
}
