//! ifthenpay's wire as its own clients document it (issue 14): Payshop and callback activation
//! on their own host, Payshop's `id` limit, and the callbacks per method (`id=[ID]`,
//! `[STATUS]`, refunds booked as refunds). The real paywarden on port 0 with the emulator
//! behind it, a real HTTP client, a real database.

mod common;

use common::{spawn_app_with, TestApp};
use paywarden::connectors::ifthenpay::{IfthenpayClient, LIVE_BASE_URL};
use paywarden::service::ifthenpay::callback_template;
use paywarden_emulator::{
    IFTHENPAY_ANTI_PHISHING_KEY, IFTHENPAY_CCARD_KEY, IFTHENPAY_GATEWAY_KEY, IFTHENPAY_PAYSHOP_KEY,
};
use serde_json::{json, Value};

const ENDPOINT: &str = "/mcp/payments/";

async fn spawn() -> TestApp {
    spawn_app_with(|c| c.safety.policy_file = None).await
}

/// tools/call; returns the whole JSON-RPC answer.
async fn call(app: &TestApp, name: &str, arguments: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}{ENDPOINT}", app.base_url))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": name, "arguments": arguments}}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

/// A successful tool call's data.
async fn ok(app: &TestApp, name: &str, arguments: Value) -> Value {
    let answer = call(app, name, arguments).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    answer["result"]["structuredContent"].clone()
}

async fn shopper(app: &TestApp, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/sandbox/ifthenpay/shopper",
            app.emulator_url.as_deref().expect("emulator")
        ))
        .json(&body)
        .send()
        .await
        .expect("emulator");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

async fn callback(app: &TestApp, query: &str) -> u16 {
    reqwest::get(format!("{}/ifthenpay/callback?{query}", app.base_url))
        .await
        .expect("callback")
        .status()
        .as_u16()
}

#[test]
fn payshop_and_callback_activation_go_to_ifthenpay_com_api() {
    let client =
        IfthenpayClient::new(LIVE_BASE_URL, std::time::Duration::from_secs(1)).expect("client");
    assert_eq!(
        client.payshop_url(),
        "https://ifthenpay.com/api/payshop/reference/"
    );
    assert_eq!(
        client.callback_activation_url(),
        "https://ifthenpay.com/api/endpoint/callback/activation"
    );
    // Configurable per endpoint.
    let client = client.with_endpoints(Some("https://proxy.example/p/"), None);
    assert_eq!(
        client.payshop_url(),
        "https://proxy.example/p/payshop/reference/"
    );
}

#[tokio::test]
async fn payshop_ids_over_15_characters_are_refused_before_ifthenpay() {
    let app = spawn().await;
    let answer = call(
        &app,
        "payshop_create_reference",
        json!({"payshop_key": IFTHENPAY_PAYSHOP_KEY, "order_id": "1234567890123456", "amount": 5}),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("order_id") && message.contains("15"),
        "{message}"
    );
    // 15 characters reach the emulator, at ifthenpay's Payshop path.
    let data = ok(
        &app,
        "payshop_create_reference",
        json!({"payshop_key": IFTHENPAY_PAYSHOP_KEY, "order_id": "123456789012345", "amount": 5}),
    )
    .await;
    assert_eq!(data["reference"].as_str().map(str::len), Some(13), "{data}");
}

#[test]
fn card_and_pinpay_templates_ask_for_the_order_as_id_and_the_status() {
    for method in ["CCARD", "PINPAY"] {
        let t = callback_template("http://pw", method);
        assert!(t.contains("id=[ID]"), "{t}");
        assert!(t.contains("status=[STATUS]"), "{t}");
        assert!(!t.contains("[ORDER_ID]"), "{t}");
    }
    let mb = callback_template("http://pw", "MB");
    assert!(mb.contains("reference=[REFERENCE]") && mb.contains("entity=[ENTITY]"));
}

#[tokio::test]
async fn a_refund_callback_is_booked_as_a_refund_never_as_a_payment() {
    let app = spawn().await;
    let data = ok(
        &app,
        "creditcard_create_payment",
        json!({"ccard_key": IFTHENPAY_CCARD_KEY, "order_id": "R-1", "amount": 20.00,
               "success_url": "https://shop.example/ok", "error_url": "https://shop.example/err",
               "cancel_url": "https://shop.example/cancel"}),
    )
    .await;
    let request_id = data["request_id"].as_str().expect("request id").to_string();
    let entity = format!("key:{}", app.key_ids.id(IFTHENPAY_CCARD_KEY));

    // Attack: a DEVOLVIDO callback (right key and amount) about an unpaid request must not
    // mark it paid.
    let forged = format!(
        "pm=CCARD&key={IFTHENPAY_ANTI_PHISHING_KEY}&id=R-1&amount=20.00&request_id={request_id}&status=DEVOLVIDO&payment_datetime=01-06-2026%2010%3A00%3A00"
    );
    assert_eq!(callback(&app, &forged).await, 409);
    let records = app
        .store
        .ifthenpay_requests(&entity)
        .await
        .expect("records");
    assert_eq!(records[0].status, "pending", "a refund is never a payment");
    // An unknown status is refused too.
    let odd = forged.replace("DEVOLVIDO", "ESTRANHO");
    assert_eq!(callback(&app, &odd).await, 400);

    // The shopper pays: the emulator's card callback (id=[ID], status PAGO) is matched.
    let (_, paid) = shopper(&app, json!({"action": "pay", "request_id": request_id})).await;
    assert_eq!(paid["callback"]["status"], 200, "{paid}");
    let records = app
        .store
        .ifthenpay_requests(&entity)
        .await
        .expect("records");
    assert_eq!(records[0].status, "paid");
    assert_eq!(records[0].refunded_minor, 0);

    // Refunded at ifthenpay: booked as a refund, the request stays paid.
    let (_, refunded) = shopper(&app, json!({"action": "refund", "request_id": request_id})).await;
    assert_eq!(refunded["callback"]["status"], 200, "{refunded}");
    let records = app
        .store
        .ifthenpay_requests(&entity)
        .await
        .expect("records");
    assert_eq!(records[0].status, "paid");
    assert_eq!(records[0].refunded_minor, 2000);
    let callbacks = app.store.ifthenpay_callbacks().await.expect("callbacks");
    let kinds: Vec<_> = callbacks
        .iter()
        .map(|c| (c.kind.as_str(), c.accepted))
        .collect();
    assert_eq!(
        kinds,
        [
            ("refund", false),
            ("unknown", false),
            ("payment", true),
            ("refund", true)
        ]
    );
    // Nothing is left to refund: a repeated refund callback is refused.
    let (_, again) = shopper(&app, json!({"action": "refund", "request_id": request_id})).await;
    assert_eq!(again["callback"]["status"], 409, "{again}");
    let records = app
        .store
        .ifthenpay_requests(&entity)
        .await
        .expect("records");
    assert_eq!(records[0].refunded_minor, 2000);
}

#[tokio::test]
async fn a_pinpay_callback_without_a_request_id_is_matched_by_its_order() {
    let app = spawn().await;
    let data = ok(
        &app,
        "pinpay_create_payment",
        json!({"gateway_key": IFTHENPAY_GATEWAY_KEY, "order_id": "PP-1", "amount": 9.99,
               "accounts": format!("CCARD|{IFTHENPAY_CCARD_KEY}")}),
    )
    .await;
    let pin = data["pin_code"].as_str().expect("pin").to_string();
    let (status, paid) = shopper(
        &app,
        json!({"action": "pay", "pin_code": pin, "method": "CCARD"}),
    )
    .await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["callback"]["status"], 200, "{paid}");
    let entity = format!("key:{}", app.key_ids.id(IFTHENPAY_GATEWAY_KEY));
    let records = app
        .store
        .ifthenpay_requests(&entity)
        .await
        .expect("records");
    assert_eq!(records[0].status, "paid");
    let last = app.store.ifthenpay_callbacks().await.expect("callbacks");
    let last = last.last().expect("one");
    assert_eq!(last.order_id.as_deref(), Some("PP-1"));
    assert_eq!(last.payment_method.as_deref(), Some("CCARD"));
}

#[tokio::test]
async fn multibanco_expiry_days_are_the_documented_values() {
    let app = spawn().await;
    for days in [0, 31, 45, 730] {
        let data = ok(
            &app,
            "multibanco_create_reference",
            json!({"mb_key": paywarden_emulator::IFTHENPAY_MB_KEY, "order_id": format!("E{days}"),
                   "amount": 5, "expiry_days": days}),
        )
        .await;
        assert!(data["reference"].is_string(), "{days}: {data}");
    }
    for days in [32, 44, 731, -1] {
        let answer = call(
            &app,
            "multibanco_create_reference",
            json!({"mb_key": paywarden_emulator::IFTHENPAY_MB_KEY, "order_id": format!("X{days}"),
                   "amount": 5, "expiry_days": days}),
        )
        .await;
        assert_eq!(answer["error"]["code"], -32602, "{days}: {answer}");
    }
}
