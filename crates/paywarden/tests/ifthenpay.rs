//! The ifthenpay toolset end to end in Rust: the real paywarden on port 0 with the emulator
//! behind it, spoken to with plain HTTP at the seed's `/mcp/payments/` endpoint (and with rmcp's
//! client at `/mcp`). Every request/response example of the seed is a test here, with the
//! validations, callbacks, MB WAY outcomes, payments_list filters, CORS, 405 and JSON-RPC errors.

mod common;

use common::{call, spawn_app_with, Era, TestApp};
use paywarden_emulator::ifthenpay::values;
use paywarden_emulator::{
    DEMO_ENTITY_ID, DEMO_TOKEN, IFTHENPAY_ANTI_PHISHING_KEY, IFTHENPAY_BACKOFFICE_KEY,
    IFTHENPAY_CCARD_KEY, IFTHENPAY_COFIDIS_KEY, IFTHENPAY_GATEWAY_KEY, IFTHENPAY_MBWAY_KEY,
    IFTHENPAY_MB_ENTITY, IFTHENPAY_MB_KEY, IFTHENPAY_PAYSHOP_KEY, IFTHENPAY_PIX_KEY,
};
use serde_json::{json, Value};

const ENDPOINT: &str = "/mcp/payments/";

/// paywarden with the built-in policy (the ifthenpay rule allows payment requests).
async fn spawn() -> TestApp {
    spawn_app_with(|c| c.safety.policy_file = None).await
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn raw(app: &TestApp, method: reqwest::Method, body: Option<String>) -> Answer {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{ENDPOINT}", app.base_url))
        .header("content-type", "application/json");
    if let Some(b) = body {
        request = request.body(b);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn rpc(app: &TestApp, body: Value) -> Value {
    let answer = raw(app, reqwest::Method::POST, Some(body.to_string())).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// tools/call; returns the JSON-RPC `result`.
async fn tool(app: &TestApp, name: &str, arguments: Value) -> Value {
    let answer = rpc(
        app,
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": name, "arguments": arguments}}),
    )
    .await;
    assert!(answer.get("error").is_none(), "{name}: {answer}");
    answer["result"].clone()
}

/// A successful call: `isError` false, `content[0].text` a JSON string equal to
/// `structuredContent`; returns the data.
async fn ok(app: &TestApp, name: &str, arguments: Value) -> Value {
    let result = tool(app, name, arguments.clone()).await;
    assert_eq!(result["isError"], false, "{name}({arguments}): {result}");
    assert_eq!(result["content"][0]["type"], "text");
    let text = result["content"][0]["text"].as_str().expect("text");
    let data: Value = serde_json::from_str(text).expect("content[0].text is JSON");
    // A replayed creation says `idempotentReplay: true` in both.
    assert_eq!(data, result["structuredContent"], "{result}");
    data
}

/// A tool error: `isError` true; returns the text.
async fn tool_error(app: &TestApp, name: &str, arguments: Value) -> String {
    let result = tool(app, name, arguments.clone()).await;
    assert_eq!(result["isError"], true, "{name}({arguments}): {result}");
    assert!(result.get("structuredContent").is_none());
    result["content"][0]["text"]
        .as_str()
        .expect("text")
        .to_string()
}

/// Invalid arguments: JSON-RPC -32602; returns the message.
async fn invalid(app: &TestApp, name: &str, arguments: Value) -> String {
    let answer = rpc(
        app,
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": name, "arguments": arguments}}),
    )
    .await;
    assert_eq!(
        answer["error"]["code"], -32602,
        "{name}({arguments}): {answer}"
    );
    assert_eq!(answer["id"], 9);
    answer["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn shopper(app: &TestApp, body: Value) -> Value {
    let url = format!(
        "{}/sandbox/ifthenpay/shopper",
        app.emulator_url.as_deref().expect("emulator")
    );
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("emulator");
    assert!(response.status().is_success(), "{body}");
    response.json().await.expect("json")
}

fn mb(order_id: &str, amount: Value) -> Value {
    json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": order_id, "amount": amount})
}

#[tokio::test]
async fn initialize_ping_and_tools_list_follow_the_seed() {
    let app = spawn().await;
    let init = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"protocolVersion": "2025-03-26", "clientInfo": {"name": "my-client", "version": "1.0.0"}}}),
    )
    .await;
    assert_eq!(init["jsonrpc"], "2.0");
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2025-03-26");
    assert_eq!(init["result"]["serverInfo"]["name"], "ifthenpay-mcp");
    assert_eq!(init["result"]["serverInfo"]["version"], "1.0.0");
    assert_eq!(init["result"]["capabilities"], json!({"tools": {}}));
    assert!(init["result"]["instructions"]
        .as_str()
        .unwrap_or_default()
        .contains("SANDBOX"));

    assert_eq!(
        rpc(&app, json!({ "jsonrpc": "2.0", "id": 2, "method": "ping" })).await,
        json!({ "jsonrpc": "2.0", "id": 2, "result": {} })
    );

    let list = rpc(
        &app,
        json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/list" }),
    )
    .await;
    assert_eq!(list["id"], 3);
    let tools = list["result"]["tools"].as_array().expect("tools");
    let in_order: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(
        in_order,
        paywarden::service::ifthenpay::TOOLS,
        "the seed's order"
    );
    let mut names = in_order.clone();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "cofidis_create_payment",
            "creditcard_create_payment",
            "mbway_check_status",
            "mbway_request_payment",
            "multibanco_create_reference",
            "payments_list",
            "payshop_create_reference",
            "pinpay_create_payment",
            "pix_create_payment"
        ]
    );
    for t in tools {
        let name = t["name"].as_str().unwrap_or_default();
        assert!(
            t["description"].as_str().is_some_and(|d| d.len() > 20),
            "{name}"
        );
        assert_eq!(t["inputSchema"]["type"], "object", "{name}");
        assert_eq!(t["outputSchema"]["type"], "object", "{name}");
        let read = name == "mbway_check_status" || name == "payments_list";
        assert_eq!(t["annotations"]["readOnlyHint"], read, "{name}");
        assert_eq!(t["annotations"]["destructiveHint"], false, "{name}");
        assert_eq!(t["annotations"]["idempotentHint"], true, "{name}");
        assert_eq!(t["annotations"]["openWorldHint"], true, "{name}");
    }
    let schema = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["inputSchema"].clone())
            .unwrap_or_default()
    };
    let mb = schema("multibanco_create_reference");
    assert_eq!(mb["properties"]["amount"]["type"], "number");
    let required: Vec<&str> = mb["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(required, ["mb_key", "order_id", "amount"], "{mb}");
    assert_eq!(mb["properties"]["mb_key"]["type"], "string");
    assert_eq!(mb["$schema"], "http://json-schema.org/draft-07/schema#");
    let pix = schema("pix_create_payment");
    for field in [
        "pix_key",
        "order_id",
        "amount",
        "redirect_url",
        "customer_name",
        "customer_cpf",
        "customer_email",
        "customer_phone",
        "description",
        "customer_address",
        "customer_city",
        "customer_state",
        "customer_zip_code",
    ] {
        assert!(pix["properties"].get(field).is_some(), "pix {field}");
    }

    // Notifications get no answer.
    let note = raw(
        &app,
        reqwest::Method::POST,
        Some(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string()),
    )
    .await;
    assert_eq!(note.status, 202);
}

#[tokio::test]
async fn seed_example_multibanco_and_the_tool_error_example() {
    let app = spawn().await;
    // The seed's request: amount 25.00, no expiry.
    let data = ok(
        &app,
        "multibanco_create_reference",
        mb("1001", json!(25.00)),
    )
    .await;
    assert_eq!(data["entity"], IFTHENPAY_MB_ENTITY);
    assert_eq!(data["amount"], "25.00");
    assert_eq!(data["expiry_date"], Value::Null);
    let reference = data["reference"].as_str().expect("reference");
    assert_eq!(reference.len(), 9);
    assert!(values::multibanco_reference_is_valid(
        IFTHENPAY_MB_ENTITY,
        reference,
        2500
    ));
    assert!(data["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(data["sandbox"], true);
    // Field order follows the seed's example text.
    let result = tool(
        &app,
        "multibanco_create_reference",
        mb("1001", json!(25.00)),
    )
    .await;
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("{\"entity\":\"11249\",\"reference\":\""),
        "{text}"
    );

    // With an expiry: YYYYMMDD.
    let data = ok(
        &app,
        "multibanco_create_reference",
        json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": "1002", "amount": 10.5, "expiry_days": 3}),
    )
    .await;
    assert_eq!(data["amount"], "10.50");
    let expiry = data["expiry_date"].as_str().expect("expiry");
    assert_eq!(expiry.len(), 8);
    assert!(chrono::NaiveDate::parse_from_str(expiry, "%Y%m%d").is_ok());

    // The seed's tool error: a key ifthenpay refuses.
    let text = tool_error(
        &app,
        "multibanco_create_reference",
        json!({"mb_key": "AAA-000000", "order_id": "1003", "amount": 1.0}),
    )
    .await;
    assert!(text.starts_with("Invalid key or API error: "), "{text}");
    assert!(!text.contains("AAA-000000"), "{text}");
}

#[tokio::test]
async fn seed_example_mbway_request_then_status_polling() {
    let app = spawn().await;
    let data = ok(
        &app,
        "mbway_request_payment",
        json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": "912345678", "amount": 15.50, "phone": "351#912345678"}),
    )
    .await;
    assert_eq!(data["status"], "pending");
    assert_eq!(data["message"], "Payment request sent");
    let request_id = data["request_id"].as_str().expect("request_id").to_string();

    let status = json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "request_id": request_id});
    let pending = ok(&app, "mbway_check_status", status.clone()).await;
    assert_eq!(pending["status"], "pending");

    let paid = shopper(&app, json!({"action": "pay", "request_id": request_id})).await;
    assert_eq!(paid["callback"]["status"], 200, "{paid}");
    let approved = ok(&app, "mbway_check_status", status).await;
    assert_eq!(approved["status"], "paid");
    assert_eq!(approved["status_code"], "000");
    assert_eq!(approved["message"], "Payment approved");
    for field in ["created_at", "updated_at"] {
        let t = approved[field].as_str().expect(field);
        assert!(
            chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").is_ok(),
            "{t}"
        );
    }
    // paywarden recorded the callback's payment.
    let requests = app
        .store
        .ifthenpay_requests(&format!("key:{}", app.key_ids.id(IFTHENPAY_MBWAY_KEY)))
        .await
        .expect("records");
    assert_eq!(requests[0].status, "paid");
    assert_eq!(requests[0].amount_minor, 1550);
}

#[tokio::test]
async fn mbway_requests_rejected_and_expired() {
    let app = spawn().await;
    let mut ids = Vec::new();
    for order in ["R-1", "E-1"] {
        let data = ok(
            &app,
            "mbway_request_payment",
            json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": order, "amount": 5, "phone": "351#912345678", "description": "Order"}),
        )
        .await;
        ids.push(data["request_id"].as_str().unwrap_or_default().to_string());
    }
    shopper(&app, json!({"action": "reject", "request_id": ids[0]})).await;
    let s = ok(
        &app,
        "mbway_check_status",
        json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "request_id": ids[0]}),
    )
    .await;
    assert_eq!(
        (s["status"].as_str(), s["status_code"].as_str()),
        (Some("rejected"), Some("020"))
    );
    shopper(&app, json!({"action": "expire", "request_id": ids[1]})).await;
    let s = ok(
        &app,
        "mbway_check_status",
        json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "request_id": ids[1]}),
    )
    .await;
    assert_eq!(
        (s["status"].as_str(), s["status_code"].as_str()),
        (Some("expired"), Some("101"))
    );
    // Neither was paid, so neither called back.
    assert!(app
        .store
        .ifthenpay_callbacks()
        .await
        .expect("callbacks")
        .is_empty());
    // An unknown request id is an API error.
    let text = tool_error(
        &app,
        "mbway_check_status",
        json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "request_id": "nope"}),
    )
    .await;
    assert!(text.starts_with("Invalid key or API error: "), "{text}");
}

#[tokio::test]
async fn seed_examples_payshop_pinpay_and_the_other_methods() {
    let app = spawn().await;
    let data = ok(
        &app,
        "payshop_create_reference",
        json!({"payshop_key": IFTHENPAY_PAYSHOP_KEY, "order_id": "2024001", "amount": 50.00}),
    )
    .await;
    assert_eq!(data["amount"], "50.00");
    let reference = data["reference"].as_str().unwrap_or_default();
    assert_eq!(reference.len(), 13);
    assert!(values::payshop_reference_is_valid(reference));
    assert!(data["request_id"].is_string());
    ok(
        &app,
        "payshop_create_reference",
        json!({"payshop_key": IFTHENPAY_PAYSHOP_KEY, "order_id": "2024002", "amount": 5, "expiry_date": "20991231"}),
    )
    .await;

    let data = ok(
        &app,
        "pinpay_create_payment",
        json!({"gateway_key": IFTHENPAY_GATEWAY_KEY, "order_id": "CC-001", "amount": 99.99,
               "accounts": format!("CCARD|{IFTHENPAY_CCARD_KEY}"), "selected_method": "4", "otp": "true"}),
    )
    .await;
    assert_eq!(data["amount"], "99.99");
    assert!(data["redirect_url"]
        .as_str()
        .is_some_and(|u| u.starts_with("http")));
    let pin = data["pin_code"].as_str().expect("pin").to_string();
    assert_eq!(pin.len(), 6);
    assert!(data["pinpay_url"]
        .as_str()
        .is_some_and(|u| u.ends_with(&pin)));
    // Every documented PinPay option reaches ifthenpay.
    ok(
        &app,
        "pinpay_create_payment",
        json!({"gateway_key": IFTHENPAY_GATEWAY_KEY, "order_id": "ALL-1", "amount": 12,
               "accounts": format!("MB|{IFTHENPAY_MB_KEY};MBWAY|{IFTHENPAY_MBWAY_KEY};CCARD|{IFTHENPAY_CCARD_KEY}"),
               "expiry_date": "20991231", "description": "Order ALL-1", "lang": "en",
               "success_url": "https://shop.example/ok", "error_url": "https://shop.example/err",
               "cancel_url": "https://shop.example/cancel", "btn_close_url": "https://shop.example",
               "btn_close_label": "Close", "otp": "false"}),
    )
    .await;

    let data = ok(
        &app,
        "creditcard_create_payment",
        json!({"ccard_key": IFTHENPAY_CCARD_KEY, "order_id": "CARD-1", "amount": 12.34,
               "success_url": "https://shop.example/ok", "error_url": "https://shop.example/err",
               "cancel_url": "https://shop.example/cancel", "language": "en"}),
    )
    .await;
    assert_eq!(data["amount"], "12.34");
    assert!(data["payment_url"]
        .as_str()
        .is_some_and(|u| u.starts_with("http")));

    let data = ok(
        &app,
        "cofidis_create_payment",
        json!({"cofidis_key": IFTHENPAY_COFIDIS_KEY, "order_id": "COF-1", "amount": 300,
               "return_url": "https://shop.example/r", "customer_name": "Ana", "customer_email": "ana@example.com",
               "customer_phone": "+351256245560", "description": "TV"}),
    )
    .await;
    assert_eq!(data["amount"], "300.00");
    let text = tool_error(
        &app,
        "cofidis_create_payment",
        json!({"cofidis_key": IFTHENPAY_COFIDIS_KEY, "order_id": "COF-2", "amount": 10, "return_url": "https://shop.example/r"}),
    )
    .await;
    assert!(text.contains("limits"), "{text}");

    let data = ok(
        &app,
        "pix_create_payment",
        json!({"pix_key": IFTHENPAY_PIX_KEY, "order_id": "PIX-1", "amount": 50.00,
               "redirect_url": "https://shop.example/r", "customer_name": "Ana Santos",
               "customer_cpf": "74026594025", "customer_email": "ana@example.com",
               "customer_phone": "+5585912345678", "customer_state": "CE", "customer_city": "Fortaleza",
               "customer_address": "Rua E", "customer_zip_code": "61919-230", "description": "Order"}),
    )
    .await;
    assert_eq!(data["amount"], "50.00");
    assert!(values::pix_brcode_is_valid(
        data["qr_code_value"].as_str().expect("qr")
    ));
}

#[tokio::test]
async fn every_validation_is_invalid_params_with_a_clear_message() {
    let app = spawn().await;
    let pix = |cpf: &str| {
        json!({"pix_key": IFTHENPAY_PIX_KEY, "order_id": "P", "amount": 5, "redirect_url": "https://x.example/r",
               "customer_name": "A", "customer_cpf": cpf, "customer_email": "a@example.com", "customer_phone": "+5585912345678"})
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("pix_create_payment", pix("74026594024"), "check digits"),
        ("pix_create_payment", pix("740.265.940-25"), "11 digits"),
        ("pix_create_payment", pix("11111111111"), "not a valid CPF"),
        (
            "mbway_request_payment",
            json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": "1", "amount": 1, "phone": "912345678"}),
            "351#912345678",
        ),
        (
            "mbway_request_payment",
            json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": "1234567890123456", "amount": 1, "phone": "351#912345678"}),
            "at most 15",
        ),
        (
            "multibanco_create_reference",
            mb(&"9".repeat(26), json!(1)),
            "at most 25",
        ),
        (
            "multibanco_create_reference",
            mb("1", json!(0)),
            "greater than 0",
        ),
        (
            "multibanco_create_reference",
            mb("1", json!(-1.5)),
            "amount",
        ),
        (
            "multibanco_create_reference",
            mb("1", json!(10.001)),
            "two decimals",
        ),
        (
            "multibanco_create_reference",
            mb("1", json!("10.00")),
            "invalid type",
        ),
        (
            "multibanco_create_reference",
            mb("1", json!(1_000_000)),
            "maximum",
        ),
        (
            "multibanco_create_reference",
            mb("", json!(1)),
            "order_id must not be empty",
        ),
        (
            "multibanco_create_reference",
            json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": "1", "amount": 1, "expiry_days": 40}),
            "0 to 31, 45, 60",
        ),
        (
            "multibanco_create_reference",
            json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": "1", "amount": 1, "colour": "red"}),
            "unknown field",
        ),
        (
            "multibanco_create_reference",
            json!({"mb_key": IFTHENPAY_MB_KEY, "amount": 1}),
            "missing field `order_id`",
        ),
        (
            "payshop_create_reference",
            json!({"payshop_key": IFTHENPAY_PAYSHOP_KEY, "order_id": "1", "amount": 1, "expiry_date": "2099-12-31"}),
            "YYYYMMDD",
        ),
        (
            "payshop_create_reference",
            json!({"payshop_key": IFTHENPAY_PAYSHOP_KEY, "order_id": "9".repeat(16), "amount": 1}),
            "at most 15",
        ),
        (
            "creditcard_create_payment",
            json!({"ccard_key": IFTHENPAY_CCARD_KEY, "order_id": "1234567890123456", "amount": 1,
                   "success_url": "https://x.example", "error_url": "https://x.example", "cancel_url": "https://x.example"}),
            "at most 15",
        ),
        (
            "creditcard_create_payment",
            json!({"ccard_key": IFTHENPAY_CCARD_KEY, "order_id": "1", "amount": 1,
                   "success_url": "not a url", "error_url": "https://x.example", "cancel_url": "https://x.example"}),
            "success_url",
        ),
        (
            "creditcard_create_payment",
            json!({"ccard_key": IFTHENPAY_CCARD_KEY, "order_id": "1", "amount": 1, "language": "de",
                   "success_url": "https://x.example", "error_url": "https://x.example", "cancel_url": "https://x.example"}),
            "language",
        ),
        (
            "pinpay_create_payment",
            json!({"gateway_key": IFTHENPAY_GATEWAY_KEY, "order_id": "1", "amount": 1, "accounts": "CCARD"}),
            "METHOD|KEY",
        ),
        (
            "pinpay_create_payment",
            json!({"gateway_key": IFTHENPAY_GATEWAY_KEY, "order_id": "1", "amount": 1, "accounts": "VISA|ABC-1"}),
            "unknown",
        ),
        (
            "pinpay_create_payment",
            json!({"gateway_key": IFTHENPAY_GATEWAY_KEY, "order_id": "1", "amount": 1, "selected_method": "5"}),
            "selected_method",
        ),
        (
            "pinpay_create_payment",
            json!({"gateway_key": IFTHENPAY_GATEWAY_KEY, "order_id": "1", "amount": 1,
                   "accounts": format!("MB|{IFTHENPAY_MB_KEY}"), "selected_method": "4"}),
            "no matching entry",
        ),
        (
            "pinpay_create_payment",
            json!({"gateway_key": IFTHENPAY_GATEWAY_KEY, "order_id": "1234567890123456", "amount": 1}),
            "at most 15",
        ),
        (
            "pinpay_create_payment",
            json!({"gateway_key": IFTHENPAY_GATEWAY_KEY, "order_id": "1", "amount": 1, "otp": "yes"}),
            "otp",
        ),
        (
            "pix_create_payment",
            json!({"pix_key": IFTHENPAY_PIX_KEY, "order_id": "P", "amount": 5, "redirect_url": "https://x.example/r",
                   "customer_name": "A", "customer_cpf": "74026594025", "customer_email": "not-an-email", "customer_phone": "+5585912345678"}),
            "email",
        ),
        (
            "cofidis_create_payment",
            json!({"cofidis_key": IFTHENPAY_COFIDIS_KEY, "order_id": "1", "amount": 100, "return_url": "https://x.example", "customer_phone": "256245560"}),
            "country code",
        ),
        (
            "payments_list",
            json!({"bo_key": IFTHENPAY_BACKOFFICE_KEY, "entity": "VISA"}),
            "5-digit",
        ),
        (
            "payments_list",
            json!({"bo_key": IFTHENPAY_BACKOFFICE_KEY, "date_start": "2026-06-01 00:00:00"}),
            "dd-MM-yyyy HH:mm:ss",
        ),
        (
            "payments_list",
            json!({"bo_key": IFTHENPAY_BACKOFFICE_KEY, "date_start": "02-06-2026 00:00:00", "date_end": "01-06-2026 00:00:00"}),
            "after",
        ),
        (
            "payments_list",
            json!({"bo_key": IFTHENPAY_BACKOFFICE_KEY, "amount": "25.001"}),
            "two decimals",
        ),
        ("payments_list", json!({}), "bo_key is required"),
    ];
    for (name, arguments, expected) in cases {
        let message = invalid(&app, name, arguments.clone()).await;
        assert!(
            message.contains(expected),
            "{name}({arguments}): {message:?} should mention {expected:?}"
        );
        for key in [
            IFTHENPAY_MB_KEY,
            IFTHENPAY_MBWAY_KEY,
            IFTHENPAY_GATEWAY_KEY,
            IFTHENPAY_CCARD_KEY,
        ] {
            assert!(!message.contains(key), "{message}");
        }
    }
}

#[tokio::test]
async fn callbacks_with_a_wrong_key_or_amount_are_refused_and_recorded() {
    let app = spawn().await;
    let data = ok(
        &app,
        "multibanco_create_reference",
        mb("CB-1", json!(25.00)),
    )
    .await;
    let reference = data["reference"].as_str().unwrap_or_default().to_string();
    let request_id = data["request_id"].as_str().unwrap_or_default().to_string();
    let get = |key: &str, amount: &str| {
        let url = format!(
            "{}/ifthenpay/callback?key={key}&orderId=CB-1&amount={amount}&requestId={request_id}&entity={IFTHENPAY_MB_ENTITY}&reference={reference}&payment_datetime=01-06-2026%2010%3A00%3A00",
            app.base_url
        );
        async move { reqwest::get(url).await.expect("callback").status().as_u16() }
    };
    assert_eq!(get("wrong-key", "25.00").await, 403);
    assert_eq!(get(IFTHENPAY_ANTI_PHISHING_KEY, "26.00").await, 409);
    assert_eq!(get(IFTHENPAY_ANTI_PHISHING_KEY, "abc").await, 400);
    let callbacks = app.store.ifthenpay_callbacks().await.expect("callbacks");
    let reasons: Vec<_> = callbacks
        .iter()
        .map(|c| (c.accepted, c.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            (false, Some("wrong_anti_phishing_key".to_string())),
            (false, Some("amount_mismatch".to_string())),
            (false, Some("bad_amount".to_string())),
        ]
    );
    let entity = format!("key:{}", app.key_ids.id(IFTHENPAY_MB_KEY));
    let records = app
        .store
        .ifthenpay_requests(&entity)
        .await
        .expect("records");
    assert_eq!(
        records[0].status, "pending",
        "refused callbacks change nothing"
    );
    // Unknown payments are refused too.
    let url = format!(
        "{}/ifthenpay/callback?key={IFTHENPAY_ANTI_PHISHING_KEY}&orderId=NOPE&amount=1.00&requestId=nope",
        app.base_url
    );
    assert_eq!(reqwest::get(url).await.expect("cb").status().as_u16(), 404);

    // The shopper pays: the emulator's callback is accepted and the payment recorded.
    let paid = shopper(&app, json!({"action": "pay", "reference": reference})).await;
    assert_eq!(paid["callback"]["status"], 200, "{paid}");
    let records = app
        .store
        .ifthenpay_requests(&entity)
        .await
        .expect("records");
    assert_eq!(records[0].status, "paid");
    assert!(records[0].paid_at.is_some());
    let callbacks = app.store.ifthenpay_callbacks().await.expect("callbacks");
    let last = callbacks.last().expect("one");
    assert!(last.accepted);
    assert_eq!(last.amount_minor, Some(2500));

    // The audit log records every callback, and never a key.
    let audit = app.store.audit_records(None).await.expect("audit");
    let callback_entries = audit
        .iter()
        .filter(|r| {
            serde_json::to_string(r)
                .unwrap_or_default()
                .contains("\"callback\"")
        })
        .count();
    assert!(callback_entries >= 5, "{callback_entries}");
    let all = serde_json::to_string(&audit).unwrap_or_default();
    for secret in [IFTHENPAY_ANTI_PHISHING_KEY, IFTHENPAY_MB_KEY, "wrong-key"] {
        assert!(!all.contains(secret), "{secret} in the audit log");
    }
}

/// The attack (black-box test, 2026-12-03): every unauthenticated callback attempt (a wrong
/// anti-phishing key) appended an audit row and a callback record, so a flood filled the
/// audit chain. Each is still refused (403), but one per minute is written and the rest
/// counted; genuine callbacks are all recorded and audited.
#[tokio::test]
async fn a_flood_of_unauthenticated_callbacks_writes_one_row_per_window() {
    let app = spawn().await;
    let data = ok(
        &app,
        "multibanco_create_reference",
        mb("FLOOD-1", json!(25.00)),
    )
    .await;
    let reference = data["reference"].as_str().unwrap_or_default().to_string();
    let request_id = data["request_id"].as_str().unwrap_or_default().to_string();
    let rows = || async {
        let audit = app.store.audit_records(None).await.expect("audit");
        audit.iter().filter(|r| r.entry.tool == "callback").count()
    };
    let before = rows().await;
    let http = reqwest::Client::new();
    for i in 0..40 {
        let url = format!(
            "{}/ifthenpay/callback?key=guess-{i}&orderId=FLOOD-1&amount=25.00&requestId={request_id}&entity={IFTHENPAY_MB_ENTITY}&reference={reference}",
            app.base_url
        );
        let status = http.get(url).send().await.expect("callback").status();
        assert_eq!(status.as_u16(), 403);
    }
    assert_eq!(rows().await, before + 1, "one audited attempt per window");
    let callbacks = app.store.ifthenpay_callbacks().await.expect("callbacks");
    assert_eq!(callbacks.len(), 1, "one recorded attempt per window");

    // A genuine callback (the right key) is recorded and audited, whatever the flood did.
    for amount in ["26.00", "25.00"] {
        let url = format!(
            "{}/ifthenpay/callback?key={IFTHENPAY_ANTI_PHISHING_KEY}&orderId=FLOOD-1&amount={amount}&requestId={request_id}&entity={IFTHENPAY_MB_ENTITY}&reference={reference}",
            app.base_url
        );
        http.get(url).send().await.expect("callback");
    }
    assert_eq!(rows().await, before + 3);
    let callbacks = app.store.ifthenpay_callbacks().await.expect("callbacks");
    assert_eq!(callbacks.len(), 3);
    assert!(callbacks.last().unwrap().accepted);
}

#[tokio::test]
async fn a_retried_creation_returns_the_first_reference_and_never_a_second() {
    let app = spawn().await;
    let first = ok(
        &app,
        "multibanco_create_reference",
        mb("IDEM-1", json!(12.5)),
    )
    .await;
    let replay = tool(
        &app,
        "multibanco_create_reference",
        mb("IDEM-1", json!(12.5)),
    )
    .await;
    assert_eq!(
        replay["structuredContent"]["idempotentReplay"], true,
        "{replay}"
    );
    let again = ok(
        &app,
        "multibanco_create_reference",
        mb("IDEM-1", json!(12.5)),
    )
    .await;
    assert_eq!(first["reference"], again["reference"]);
    assert_eq!(first["request_id"], again["request_id"]);
    let text = tool_error(
        &app,
        "multibanco_create_reference",
        mb("IDEM-1", json!(13.0)),
    )
    .await;
    assert!(
        text.contains("order_id \"IDEM-1\" was already used"),
        "{text}"
    );
    let entity = format!("key:{}", app.key_ids.id(IFTHENPAY_MB_KEY));
    assert_eq!(
        app.store
            .ifthenpay_requests(&entity)
            .await
            .expect("records")
            .len(),
        1
    );
}

#[tokio::test]
async fn payments_list_seed_example_and_every_filter() {
    let app = spawn().await;
    let mut refs = Vec::new();
    for (order, amount) in [("1001", 25.00), ("1002", 80.00), ("1003", 5.00)] {
        let d = ok(
            &app,
            "multibanco_create_reference",
            mb(order, json!(amount)),
        )
        .await;
        refs.push(d["reference"].as_str().unwrap_or_default().to_string());
    }
    let w = ok(
        &app,
        "mbway_request_payment",
        json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": "W-1", "amount": 7, "phone": "351#912345678"}),
    )
    .await;
    let mbway_id = w["request_id"].as_str().unwrap_or_default().to_string();
    for reference in &refs[..2] {
        shopper(&app, json!({"action": "pay", "reference": reference})).await;
    }
    shopper(&app, json!({"action": "pay", "request_id": mbway_id})).await;

    let list = |filters: Value| {
        let mut args = json!({"bo_key": IFTHENPAY_BACKOFFICE_KEY});
        if let (Some(a), Some(f)) = (args.as_object_mut(), filters.as_object()) {
            a.extend(f.clone());
        }
        args
    };
    // The seed's example: MB payments of June 2026 (none: these were paid now).
    let june = ok(
        &app,
        "payments_list",
        list(json!({"entity": "MB", "date_start": "01-06-2026 00:00:00", "date_end": "30-06-2026 23:59:59"})),
    )
    .await;
    let now = chrono::Utc::now();
    let in_june = now.format("%m").to_string() == "06" && now.format("%Y").to_string() == "2026";
    if !in_june {
        assert_eq!(june["count"], 0, "{june}");
    }
    // The same query over this month: the example's response shape.
    let start = now.format("01-%m-%Y 00:00:00").to_string();
    let end = (now + chrono::Duration::days(1))
        .format("%d-%m-%Y 23:59:59")
        .to_string();
    let mb_now = ok(
        &app,
        "payments_list",
        list(json!({"entity": "MB", "date_start": start, "date_end": end})),
    )
    .await;
    assert_eq!(mb_now["count"], 2, "{mb_now}");
    let mut orders: Vec<(String, String, String)> = mb_now["payments"]
        .as_array()
        .map(|p| {
            p.iter()
                .map(|x| {
                    (
                        x["order_id"].as_str().unwrap_or_default().to_string(),
                        x["amount"].as_str().unwrap_or_default().to_string(),
                        x["status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    orders.sort();
    assert_eq!(
        orders,
        [
            ("1001".into(), "25.00".into(), "paid".into()),
            ("1002".into(), "80.00".into(), "paid".into())
        ]
    );

    let count = |v: &Value| v["count"].as_u64().unwrap_or(99);
    assert_eq!(count(&ok(&app, "payments_list", list(json!({}))).await), 3);
    assert_eq!(
        count(&ok(&app, "payments_list", list(json!({"entity": "MBWAY"}))).await),
        1
    );
    assert_eq!(
        count(
            &ok(
                &app,
                "payments_list",
                list(json!({"entity": IFTHENPAY_MB_ENTITY}))
            )
            .await
        ),
        2
    );
    assert_eq!(
        count(
            &ok(
                &app,
                "payments_list",
                list(json!({"sub_entity": IFTHENPAY_MBWAY_KEY}))
            )
            .await
        ),
        1
    );
    let by_order = ok(&app, "payments_list", list(json!({"order_id": "1002"}))).await;
    assert_eq!(by_order["payments"][0]["amount"], "80.00");
    assert_eq!(by_order["payments"][0]["method"], "MB");
    assert_eq!(
        count(&ok(&app, "payments_list", list(json!({"reference": refs[0]}))).await),
        1
    );
    assert_eq!(
        count(&ok(&app, "payments_list", list(json!({"request_id": mbway_id}))).await),
        1
    );
    let by_amount = ok(&app, "payments_list", list(json!({"amount": "25.00"}))).await;
    assert_eq!(by_amount["payments"][0]["order_id"], "1001");
    assert_eq!(
        count(&ok(&app, "payments_list", list(json!({"order_id": "1003"}))).await),
        0
    );
    // Results never carry a key.
    let all = ok(&app, "payments_list", list(json!({}))).await.to_string();
    assert!(
        !all.contains(IFTHENPAY_MB_KEY) && !all.contains(IFTHENPAY_MBWAY_KEY),
        "{all}"
    );

    let text = tool_error(
        &app,
        "payments_list",
        json!({"bo_key": "0000-0000-0000-0000"}),
    )
    .await;
    assert_eq!(text, "Invalid key or API error: Invalid boKey");
}

#[tokio::test]
async fn cors_preflight_other_methods_and_json_rpc_errors() {
    let app = spawn().await;
    let preflight = raw(&app, reqwest::Method::OPTIONS, None).await;
    assert_eq!(preflight.status, 200);
    let header = |a: &Answer, name: &str| {
        a.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header(&preflight, "access-control-allow-origin"), "*");
    assert_eq!(
        header(&preflight, "access-control-allow-headers"),
        "Content-Type, Authorization"
    );
    assert_eq!(
        header(&preflight, "access-control-allow-methods"),
        "POST, OPTIONS"
    );
    let post = raw(
        &app,
        reqwest::Method::POST,
        Some(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string()),
    )
    .await;
    assert_eq!(header(&post, "access-control-allow-origin"), "*");
    assert_eq!(header(&post, "content-type"), "application/json");

    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let a = raw(&app, method.clone(), None).await;
        assert_eq!(a.status, 405, "{method}");
        assert_eq!(header(&a, "access-control-allow-origin"), "*");
    }

    let parse = raw(&app, reqwest::Method::POST, Some("{not json".into())).await;
    assert_eq!(parse.body["error"]["code"], -32700, "{}", parse.body);
    assert_eq!(parse.body["id"], Value::Null);

    for bad in [
        json!({"id": 1, "method": "ping"}),
        json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
        json!({"jsonrpc": "2.0", "id": 1}),
        json!([]),
        json!(42),
    ] {
        let a = rpc(&app, bad.clone()).await;
        assert_eq!(a["error"]["code"], -32600, "{bad}: {a}");
    }
    let a = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": 7, "method": "resources/list"}),
    )
    .await;
    assert_eq!(
        (a["id"].as_i64(), a["error"]["code"].as_i64()),
        (Some(7), Some(-32601))
    );
    let a = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "refund_everything", "arguments": {}}}),
    )
    .await;
    assert_eq!(a["error"]["code"], -32602);
    assert!(a["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("tool not found"));
    let a = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"arguments": {}}}),
    )
    .await;
    assert_eq!(a["error"]["code"], -32602);

    // A batch is answered as an array (notifications left out).
    let batch = rpc(
        &app,
        json!([
            {"jsonrpc": "2.0", "id": "a", "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": "b", "method": "nope"}
        ]),
    )
    .await;
    assert_eq!(batch.as_array().map(Vec::len), Some(2), "{batch}");
    assert_eq!(batch[0]["result"], json!({}));
    assert_eq!(batch[1]["error"]["code"], -32601);
}

#[tokio::test]
async fn configured_keys_need_an_authenticated_entity() {
    let app = spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.ifthenpay.mb_key = Some(secrecy::SecretString::from(IFTHENPAY_MB_KEY.to_string()));
    })
    .await;
    // The configured key is optional in the schema; the others stay required.
    let list = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
    )
    .await;
    let required = |name: &str| {
        list["result"]["tools"]
            .as_array()
            .and_then(|t| t.iter().find(|x| x["name"] == name))
            .map(|t| t["inputSchema"]["required"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        required("multibanco_create_reference"),
        json!(["order_id", "amount"])
    );
    assert_eq!(required("payments_list"), json!(["bo_key"]));
    let args = json!({"order_id": "CFG-1", "amount": 3.0});
    let text = tool_error(&app, "multibanco_create_reference", args.clone()).await;
    assert!(text.starts_with("Authentication required"), "{text}");
    assert!(!text.contains(IFTHENPAY_MB_KEY));

    let call_as = |entity: &str, token: &str| {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "multibanco_create_reference", "arguments": args.clone()}});
        reqwest::Client::new()
            .post(format!("{}{ENDPOINT}", app.base_url))
            .header("X-Entity-Id", entity)
            .header("X-Token", token)
            .json(&body)
            .send()
    };
    let wrong: Value = call_as(DEMO_ENTITY_ID, "not-the-token")
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(wrong["result"]["isError"], true, "{wrong}");
    let right: Value = call_as(DEMO_ENTITY_ID, DEMO_TOKEN)
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(right["result"]["isError"], false, "{right}");
    assert!(!right.to_string().contains(IFTHENPAY_MB_KEY));
    let records = app
        .store
        .ifthenpay_requests(DEMO_ENTITY_ID)
        .await
        .expect("records");
    assert_eq!(records.len(), 1, "scoped by the authenticated entity");
    // A key passed as an argument still works without credentials.
    ok(&app, "multibanco_create_reference", mb("CFG-2", json!(1))).await;
}

#[tokio::test]
async fn read_only_mode_hides_and_refuses_creations() {
    let app = spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.safety.read_only = true;
    })
    .await;
    let list = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
    )
    .await;
    let mut names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    names.sort_unstable();
    assert_eq!(names, ["mbway_check_status", "payments_list"]);
    let message = invalid(&app, "multibanco_create_reference", mb("RO-1", json!(1))).await;
    assert!(message.contains("tool not found"), "{message}");
    ok(
        &app,
        "payments_list",
        json!({"bo_key": IFTHENPAY_BACKOFFICE_KEY}),
    )
    .await;
}

#[tokio::test]
async fn the_policy_decides_and_confirm_or_human_go_through_the_gate() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        r#"
[[rule]]
name = "no-big-references"
when = "toolset == 'ifthenpay' && amount_units >= 1000"
action = "deny"
message = "References of 1,000 EUR or more are not allowed"

[[rule]]
name = "mbway-confirm"
when = "tool == 'mbway_request_payment'"
action = "confirm"

[[rule]]
name = "mid-references-need-a-person"
when = "tool == 'multibanco_create_reference' && amount_units >= 500"
action = "human"
message = "References of 500 EUR or more are decided by a person."

[[rule]]
name = "rest"
when = "true"
action = "allow"
"#,
    )
    .expect("policy");
    let app = spawn_app_with(move |c| c.safety.policy_file = Some(path)).await;
    let text = tool_error(
        &app,
        "multibanco_create_reference",
        mb("BIG-1", json!(1000)),
    )
    .await;
    assert!(
        text.contains("denied by policy rule \"no-big-references\""),
        "{text}"
    );
    ok(
        &app,
        "multibanco_create_reference",
        mb("SMALL-1", json!(499.99)),
    )
    .await;
    let mbway_key = format!("key:{}", app.key_ids.id(IFTHENPAY_MBWAY_KEY));
    let mb_key = format!("key:{}", app.key_ids.id(IFTHENPAY_MB_KEY));
    let requests = |entity: String| {
        let store = app.store.clone();
        async move {
            store
                .ifthenpay_requests(&entity)
                .await
                .expect("records")
                .len()
        }
    };

    // `confirm`: a preview with a single-use token; nothing is requested until it comes back.
    let args = json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": "C-1", "amount": 1, "phone": "351#912345678"});
    let preview = ok(&app, "mbway_request_payment", args.clone()).await;
    assert_eq!(preview["status"], "confirmation_required", "{preview}");
    assert_eq!(preview["confirmation"]["rule"], "mbway-confirm");
    assert_eq!(preview["confirmation"]["preview"]["amountMinor"], 100);
    assert_eq!(
        requests(mbway_key.clone()).await,
        0,
        "nothing requested yet"
    );
    let mut made_up = args.clone();
    made_up["confirmation_token"] =
        json!("pwc_0000000000000000000000000000000000000000000000000000000000000000");
    let text = tool_error(&app, "mbway_request_payment", made_up).await;
    assert!(text.contains("never issued"), "{text}");
    let mut higher = args.clone();
    higher["amount"] = json!(2);
    higher["confirmation_token"] = preview["confirmation"]["token"].clone();
    tool_error(&app, "mbway_request_payment", higher).await;
    assert_eq!(
        requests(mbway_key.clone()).await,
        0,
        "nothing requested yet"
    );
    let mut confirmed = args.clone();
    confirmed["confirmation_token"] = preview["confirmation"]["token"].clone();
    let sent = ok(&app, "mbway_request_payment", confirmed.clone()).await;
    assert_eq!(sent["status"], "pending", "{sent}");
    assert_eq!(requests(mbway_key.clone()).await, 1);
    let again = ok(&app, "mbway_request_payment", confirmed).await;
    assert_eq!(
        again["request_id"], sent["request_id"],
        "a replay, not a second request"
    );
    assert_eq!(requests(mbway_key).await, 1);

    // `human`: an approval request only an operator decides; the approved call creates once.
    let args = mb("H-1", json!(600));
    let pending = ok(&app, "multibanco_create_reference", args.clone()).await;
    assert_eq!(pending["status"], "approval_pending", "{pending}");
    let id = pending["approval"]["id"]
        .as_str()
        .expect("approval id")
        .to_string();
    let mut follow_up = args.clone();
    follow_up["approval_id"] = json!(id);
    let text = tool_error(&app, "multibanco_create_reference", follow_up.clone()).await;
    assert!(text.contains("waiting for an operator"), "{text}");
    let mut with_token = args.clone();
    with_token["confirmation_token"] = json!("pwc_made_up");
    let still = tool(&app, "multibanco_create_reference", with_token).await;
    assert!(still["structuredContent"]["reference"].is_null(), "{still}");
    let before = requests(mb_key.clone()).await;
    app.store
        .decide_approval(&id, true, "alice", Some("known customer"))
        .await
        .expect("decided");
    let created = ok(&app, "multibanco_create_reference", follow_up.clone()).await;
    assert_eq!(created["amount"], "600.00", "{created}");
    assert!(created["reference"].as_str().is_some_and(|r| r.len() == 9));
    let replay = ok(&app, "multibanco_create_reference", follow_up).await;
    assert_eq!(replay["reference"], created["reference"]);
    assert_eq!(requests(mb_key).await, before + 1);
    let approval = app
        .store
        .approval(&id)
        .await
        .expect("read")
        .expect("approval");
    assert_eq!(approval.decided_by.as_deref(), Some("alice"));
    assert!(approval.executed_at.is_some());
    drop(dir);
}

#[tokio::test]
async fn the_same_tools_on_the_unified_endpoint() {
    let app = spawn().await;
    let client = app.client("/mcp", Era::Legacy).await;
    let tools = client.list_all_tools().await.expect("tools");
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    for name in paywarden::service::ifthenpay::TOOLS {
        assert!(names.iter().any(|n| n == name), "{name} missing on /mcp");
    }
    let result = call(&client, "multibanco_create_reference", mb("U-1", json!(20)))
        .await
        .expect("answered");
    assert_eq!(result.is_error, Some(false));
    let structured = result.structured_content.clone().expect("structured");
    assert_eq!(structured["amount"], "20.00");
    let text = common::text(&result);
    assert_eq!(serde_json::from_str::<Value>(&text).ok(), Some(structured));
    let err = call(&client, "multibanco_create_reference", mb("U-2", json!(0)))
        .await
        .expect_err("invalid");
    assert!(format!("{err:?}").contains("greater than 0"), "{err:?}");
}

#[tokio::test]
async fn a_database_failure_is_an_internal_error() {
    let app = spawn().await;
    // The app's own database, whichever engine the run uses.
    let url =
        app.database.url.clone().unwrap_or_else(|| {
            paywarden::store::sqlite_url(&app.data_dir.path().join("paywarden.db"))
        });
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("database");
    for table in ["ifthenpay_callbacks", "ifthenpay_requests"] {
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&pool)
            .await
            .expect("dropped");
    }
    let answer = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
               "params": {"name": "multibanco_create_reference", "arguments": mb("DB-1", json!(1))}}),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    assert_eq!(answer["id"], 5);
}

/// Attack: paywarden's database fails after ifthenpay created the reference (recording it in
/// `ifthenpay_requests`). The answer must not say "nothing was sent", and the order's key must
/// stay blocked: releasing it let the retry create a second request at ifthenpay for the same
/// order id.
#[tokio::test]
async fn a_database_failure_after_ifthenpay_created_never_says_nothing_was_sent_nor_creates_twice()
{
    let app = spawn().await;
    let failing = app.fail_writes("INSERT", "ifthenpay_requests").await;
    let answer = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
               "params": {"name": "multibanco_create_reference", "arguments": mb("DB-2", json!(3))}}),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("may have reached ifthenpay")
            && message.contains("may have happened")
            && !message.contains("nothing was sent"),
        "{message}"
    );
    failing.stop().await;
    // The retry neither creates a second request nor claims the order id was used otherwise.
    let text = tool_error(&app, "multibanco_create_reference", mb("DB-2", json!(3))).await;
    assert!(text.contains("UNKNOWN"), "{text}");
    assert!(!text.contains("already used"), "{text}");
    let entity = format!("key:{}", app.key_ids.id(IFTHENPAY_MB_KEY));
    assert!(
        app.store
            .ifthenpay_requests(&entity)
            .await
            .expect("records")
            .is_empty(),
        "a second request was created for order DB-2"
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_a_clear_api_error_and_nothing_is_recorded() {
    // A configured base URL (not the emulator) where nothing listens.
    let app = spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.ifthenpay.base_url = Some("http://127.0.0.1:9".into());
        c.ifthenpay.timeout_ms = 2_000;
    })
    .await;
    let init = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}}),
    )
    .await;
    assert!(
        init["result"].get("instructions").is_none(),
        "not a sandbox: {init}"
    );
    let text = tool_error(&app, "multibanco_create_reference", mb("NET-1", json!(1))).await;
    assert!(
        text.starts_with("API error: ifthenpay could not be reached"),
        "{text}"
    );
    assert!(!text.contains(IFTHENPAY_MB_KEY), "{text}");
    // Nothing was created, so a retry runs again (and fails the same way) rather than replaying.
    let again = tool_error(&app, "multibanco_create_reference", mb("NET-1", json!(1))).await;
    assert!(again.starts_with("API error:"), "{again}");
    let entity = format!("key:{}", app.key_ids.id(IFTHENPAY_MB_KEY));
    assert!(app
        .store
        .ifthenpay_requests(&entity)
        .await
        .expect("records")
        .is_empty());
}

/// A client of a later MCP revision (the rmcp client, in both eras) gets the same nine tools as
/// the seed's clients, as the server `ifthenpay-mcp` 1.0.0, from rmcp's Streamable HTTP service:
/// a session at the seed's 2025-03-26 for the handshake era, the stateless 2026-07-28 protocol,
/// and every capability it answers declared. The seed's own requests are untouched (see
/// `initialize_ping_and_tools_list_follow_the_seed`).
#[tokio::test]
async fn later_mcp_revisions_get_the_seeds_tools_from_rmcp_in_both_eras() {
    let app = spawn().await;
    for era in [Era::Legacy, Era::Stateless] {
        let client = app.client_as(ENDPOINT, era, "", "").await;
        let info = client.peer_info().expect("server info").clone();
        let negotiated = info.protocol_version.as_str().to_string();
        match era {
            Era::Legacy => assert_eq!(negotiated, "2025-03-26", "the seed's version"),
            Era::Stateless => assert_eq!(negotiated, "2026-07-28"),
        }
        let server = info.server_info.as_ref().expect("serverInfo");
        assert_eq!(
            (server.name.as_str(), server.version.as_str()),
            ("ifthenpay-mcp", "1.0.0"),
            "{era:?}"
        );
        let caps = &info.capabilities;
        assert!(caps.tools.is_some(), "{era:?}");
        assert!(
            caps.prompts.is_some() && caps.resources.is_some() && caps.completions.is_some(),
            "{era:?}: {caps:?}"
        );
        assert!(client.list_all_prompts().await.expect("prompts").is_empty());
        assert!(client
            .list_all_resources()
            .await
            .expect("resources")
            .is_empty());

        let tools = client.list_all_tools().await.expect("tools");
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            paywarden::service::ifthenpay::TOOLS,
            "{era:?}: the seed's order"
        );
        for t in &tools {
            assert_eq!(
                t.input_schema["$schema"], "http://json-schema.org/draft-07/schema#",
                "{era:?} {}",
                t.name
            );
        }

        let order = format!("LATER-{era:?}");
        let data = common::call_ok(
            &client,
            "multibanco_create_reference",
            mb(&order, json!(12.5)),
        )
        .await;
        assert_eq!(data["amount"], "12.50", "{era:?}: {data}");
        let err =
            common::call_invalid(&client, "multibanco_create_reference", mb("X", json!(0))).await;
        assert!(err.contains("greater than 0"), "{era:?}: {err}");
        let err = call(&client, "refund_everything", json!({}))
            .await
            .expect_err("unknown tool");
        assert!(format!("{err:?}").contains("refund_everything"), "{err:?}");
    }
}

/// What routes a request to rmcp, at the HTTP level: an `initialize` asking for a later revision
/// gets a session and the full capabilities, with the seed's CORS headers; `OPTIONS` and other
/// methods keep the seed's answers even with MCP headers; a seed request without them keeps
/// `{"tools": {}}` and -32601 for methods the seed doesn't list.
#[tokio::test]
async fn later_revision_requests_keep_the_seeds_cors_and_http_methods() {
    let app = spawn().await;
    let url = format!("{}{ENDPOINT}", app.base_url);
    let http = reqwest::Client::new();
    let init = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "later", "version": "1"}}})
            .to_string(),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(init.status(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header(&init, "access-control-allow-origin"), "*");
    assert_eq!(
        header(&init, "access-control-allow-methods"),
        "POST, OPTIONS"
    );
    let session = header(&init, "mcp-session-id");
    assert!(!session.is_empty(), "a session for the handshake era");
    let body = init.text().await.expect("body");
    let answer: Value = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .chain(std::iter::once(body.as_str()))
        .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .expect("a JSON-RPC answer");
    assert_eq!(
        answer["result"]["protocolVersion"], "2025-03-26",
        "{answer}"
    );
    assert_eq!(answer["result"]["serverInfo"]["name"], "ifthenpay-mcp");
    assert!(
        answer["result"]["capabilities"]["prompts"].is_object(),
        "{answer}"
    );

    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = http
            .request(method.clone(), &url)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-03-26")
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 405, "{method}");
    }

    let seed = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"protocolVersion": "2025-03-26", "clientInfo": {"name": "seed", "version": "1"}}}),
    )
    .await;
    assert_eq!(seed["result"]["capabilities"], json!({"tools": {}}));
    let a = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": 2, "method": "prompts/list"}),
    )
    .await;
    assert_eq!(a["error"]["code"], -32601, "{a}");
}
