//! The ifthenpay side of the emulator over real HTTP: every endpoint, the shopper control, the
//! callback to a merchant server, and the payments list's filters.

mod common;

use std::sync::{Arc, Mutex};

use paywarden_emulator::ifthenpay::values;
use paywarden_emulator::{
    IFTHENPAY_ANTI_PHISHING_KEY, IFTHENPAY_BACKOFFICE_KEY, IFTHENPAY_CCARD_KEY,
    IFTHENPAY_COFIDIS_KEY, IFTHENPAY_GATEWAY_KEY, IFTHENPAY_MBWAY_KEY, IFTHENPAY_MB_ENTITY,
    IFTHENPAY_MB_KEY, IFTHENPAY_PAYSHOP_KEY, IFTHENPAY_PIX_KEY,
};
use serde_json::{json, Value};

struct Merchant {
    url: String,
    calls: Arc<Mutex<Vec<String>>>,
}

/// A merchant server that records the query string of every callback.
async fn merchant() -> Merchant {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::get(move |uri: axum::http::Uri| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(uri.query().unwrap_or("").to_string());
                "OK"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Merchant { url, calls }
}

async fn post(h: &common::Harness, path: &str, body: Value) -> (u16, Value) {
    let r = h
        .http
        .post(format!("{}{path}", h.running.base_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(h: &common::Harness, path: &str) -> Value {
    h.http
        .get(format!("{}{path}", h.running.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn shopper(h: &common::Harness, body: Value) -> (u16, Value) {
    post(h, "/sandbox/ifthenpay/shopper", body).await
}

async fn activate(h: &common::Harness, key: &str, url: &str) {
    let template = format!(
        "{url}?key=[ANTI_PHISHING_KEY]&orderId=[ORDER_ID]&amount=[AMOUNT]&requestId=[REQUEST_ID]&entity=[ENTITY]&reference=[REFERENCE]&payment_datetime=[PAYMENT_DATETIME]&payment_method=[PAYMENT_METHOD]"
    );
    let (status, body) = post(
        h,
        "/api/endpoint/callback/activation",
        json!({"chave": IFTHENPAY_BACKOFFICE_KEY, "entidade": "MB", "subentidade": key,
               "apKey": IFTHENPAY_ANTI_PHISHING_KEY, "urlCb": template}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.as_str().is_some_and(|b| b.starts_with("OK:")),
        "{body}"
    );
}

#[tokio::test]
async fn multibanco_reference_is_valid_and_paying_it_calls_the_merchant_back() {
    let h = common::start().await;
    let m = merchant().await;
    activate(&h, IFTHENPAY_MB_KEY, &m.url).await;
    let (status, r) = post(
        &h,
        "/multibanco/reference/init",
        json!({"mbKey": IFTHENPAY_MB_KEY, "orderId": "1001", "amount": "25.00"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(r["Status"], "0", "{r}");
    assert_eq!(r["Entity"], IFTHENPAY_MB_ENTITY);
    assert_eq!(r["Amount"], "25.00");
    assert_eq!(r["ExpiryDate"], "");
    let reference = r["Reference"].as_str().unwrap().to_string();
    assert!(values::multibanco_reference_is_valid(
        IFTHENPAY_MB_ENTITY,
        &reference,
        2500
    ));
    assert_eq!(r["RequestId"].as_str().unwrap().len(), 20);

    let (status, paid) = shopper(&h, json!({"action": "pay", "reference": reference})).await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["callback"]["status"], 200, "{paid}");
    let calls = m.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0].contains(&format!("key={IFTHENPAY_ANTI_PHISHING_KEY}")),
        "{}",
        calls[0]
    );
    assert!(
        calls[0].contains("orderId=1001&amount=25.00"),
        "{}",
        calls[0]
    );
    assert!(calls[0].contains(&format!("reference={reference}")));
    assert!(calls[0].contains(&format!("entity={IFTHENPAY_MB_ENTITY}")));

    // Paid once only.
    let (status, _) = shopper(&h, json!({"action": "pay", "reference": reference})).await;
    assert_eq!(status, 409);

    // With an expiry.
    let (_, r) = post(
        &h,
        "/multibanco/reference/init",
        json!({"mbKey": IFTHENPAY_MB_KEY, "orderId": "1002", "amount": 10.5, "expiryDays": 3}),
    )
    .await;
    assert_eq!(r["Amount"], "10.50");
    assert_eq!(r["ExpiryDate"].as_str().unwrap().len(), 10, "{r}");

    // Refusals in ifthenpay's shape.
    let (_, r) = post(
        &h,
        "/multibanco/reference/init",
        json!({"mbKey": "XXX-000000", "orderId": "1", "amount": "1.00"}),
    )
    .await;
    assert_eq!(
        (r["Status"].as_str(), r["Message"].as_str()),
        (Some("-1"), Some("Invalid mbKey"))
    );
    let (_, r) = post(
        &h,
        "/multibanco/reference/init",
        json!({"mbKey": IFTHENPAY_MB_KEY, "orderId": "1", "amount": "1.001"}),
    )
    .await;
    assert_eq!(r["Status"], "-1");
}

#[tokio::test]
async fn mbway_requests_are_pending_until_the_shopper_pays_rejects_or_lets_them_expire() {
    let h = common::start().await;
    let m = merchant().await;
    activate(&h, IFTHENPAY_MBWAY_KEY, &m.url).await;
    let mut ids = Vec::new();
    for order in ["A1", "A2", "A3"] {
        let (_, r) = post(
            &h,
            "/spg/payment/mbway",
            json!({"mbWayKey": IFTHENPAY_MBWAY_KEY, "orderId": order, "amount": "15.50", "mobileNumber": "351#912345678"}),
        )
        .await;
        assert_eq!(r["Status"], "000", "{r}");
        assert_eq!(r["Message"], "Pending");
        ids.push(r["RequestId"].as_str().unwrap().to_string());
    }
    let status = |id: &str| {
        format!("/spg/payment/mbway/status?mbWayKey={IFTHENPAY_MBWAY_KEY}&requestId={id}")
    };
    let s = get(&h, &status(&ids[0])).await;
    assert_eq!(
        (s["Status"].as_str(), s["Message"].as_str()),
        (Some("123"), Some("Pending"))
    );
    assert_eq!(s["CreatedAt"].as_str().unwrap().len(), 19);

    let (code, paid) = shopper(&h, json!({"action": "pay", "request_id": ids[0]})).await;
    assert_eq!(code, 200);
    assert_eq!(paid["callback"]["status"], 200);
    assert_eq!(get(&h, &status(&ids[0])).await["Status"], "000");

    shopper(&h, json!({"action": "reject", "request_id": ids[1]})).await;
    assert_eq!(get(&h, &status(&ids[1])).await["Status"], "020");
    shopper(&h, json!({"action": "expire", "request_id": ids[2]})).await;
    assert_eq!(get(&h, &status(&ids[2])).await["Status"], "101");
    // Only the payment called back.
    assert_eq!(m.calls.lock().unwrap().len(), 1);
    // An expired request cannot be paid.
    let (code, _) = shopper(&h, json!({"action": "pay", "request_id": ids[2]})).await;
    assert_eq!(code, 409);

    let (_, r) = post(
        &h,
        "/spg/payment/mbway",
        json!({"mbWayKey": IFTHENPAY_MBWAY_KEY, "orderId": "B", "amount": "1.00", "mobileNumber": "912345678"}),
    )
    .await;
    assert_eq!(r["Status"], "100");
    let s = get(
        &h,
        &format!(
            "/spg/payment/mbway/status?mbWayKey=nope&requestId={}",
            ids[0]
        ),
    )
    .await;
    assert_eq!(s["Status"], "999");
}

#[tokio::test]
async fn payshop_card_pinpay_cofidis_and_pix() {
    let h = common::start().await;
    let (_, r) = post(
        &h,
        "/api/payshop/reference/",
        json!({"payshopkey": IFTHENPAY_PAYSHOP_KEY, "id": "2024001", "valor": "50.00"}),
    )
    .await;
    assert_eq!(r["Code"], "0", "{r}");
    assert!(values::payshop_reference_is_valid(
        r["Reference"].as_str().unwrap()
    ));

    let urls = json!({"successUrl": "https://shop.example/ok", "errorUrl": "https://shop.example/err", "cancelUrl": "https://shop.example/cancel"});
    let mut body = json!({"orderId": "C1", "amount": "12.00", "language": "en"});
    body.as_object_mut()
        .unwrap()
        .extend(urls.as_object().unwrap().clone());
    let (_, r) = post(&h, &format!("/creditcard/init/{IFTHENPAY_CCARD_KEY}"), body).await;
    assert_eq!(r["Status"], "0", "{r}");
    let page = r["PaymentUrl"].as_str().unwrap();
    let described: Value = h.http.get(page).send().await.unwrap().json().await.unwrap();
    assert_eq!(described["sandbox"], true);
    assert_eq!(described["method"], "CCARD");

    let (status, r) = post(
        &h,
        &format!("/gateway/pinpay/{IFTHENPAY_GATEWAY_KEY}"),
        json!({"id": "CC-001", "amount": "99.99", "accounts": format!("CCARD|{IFTHENPAY_CCARD_KEY}"), "selected_method": "4", "otp": "true"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let pin = r["PinCode"].as_str().unwrap().to_string();
    assert_eq!(pin.len(), 6);
    assert!(r["PinpayUrl"].as_str().unwrap().ends_with(&pin));
    let (status, r) = post(
        &h,
        &format!("/gateway/pinpay/{IFTHENPAY_GATEWAY_KEY}"),
        json!({"id": "CC-002", "amount": "1.00", "accounts": "CCARD|wrong"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(r["error"].as_str().unwrap().contains("CCARD"));
    let (code, paid) = shopper(
        &h,
        json!({"action": "pay", "pin_code": pin, "method": "CCARD"}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(paid["paid_method"], "CCARD");

    let (_, r) = post(
        &h,
        &format!("/cofidis/init/{IFTHENPAY_COFIDIS_KEY}"),
        json!({"orderId": "CF1", "amount": "30.00", "returnUrl": "https://shop.example/r"}),
    )
    .await;
    assert_eq!(r["status"], "-1", "below the Cofidis minimum: {r}");
    let (_, r) = post(
        &h,
        &format!("/cofidis/init/{IFTHENPAY_COFIDIS_KEY}"),
        json!({"orderId": "CF1", "amount": "300.00", "returnUrl": "https://shop.example/r"}),
    )
    .await;
    assert_eq!(r["status"], "0", "{r}");

    let (_, r) = post(
        &h,
        &format!("/pix/init/{IFTHENPAY_PIX_KEY}"),
        json!({"orderId": "PX1", "amount": "50.00", "redirectUrl": "https://shop.example/r",
               "customerName": "Ana", "customerCpf": "74026594025", "customerEmail": "a@example.com", "customerPhone": "+5585912345678"}),
    )
    .await;
    assert_eq!(r["status"], "0", "{r}");
    assert!(values::pix_brcode_is_valid(
        r["qrCodeValue"].as_str().unwrap()
    ));
}

#[tokio::test]
async fn payments_read_filters_and_refuses_a_wrong_backoffice_key() {
    let h = common::start().await;
    let mut refs = Vec::new();
    for (order, amount) in [("1001", "25.00"), ("1002", "80.00"), ("1003", "5.00")] {
        let (_, r) = post(
            &h,
            "/multibanco/reference/init",
            json!({"mbKey": IFTHENPAY_MB_KEY, "orderId": order, "amount": amount}),
        )
        .await;
        refs.push(r["Reference"].as_str().unwrap().to_string());
    }
    let (_, r) = post(
        &h,
        "/spg/payment/mbway",
        json!({"mbWayKey": IFTHENPAY_MBWAY_KEY, "orderId": "W1", "amount": "7.00", "mobileNumber": "351#912345678"}),
    )
    .await;
    let mbway = r["RequestId"].as_str().unwrap().to_string();
    for reference in &refs[..2] {
        shopper(&h, json!({"action": "pay", "reference": reference})).await;
    }
    shopper(&h, json!({"action": "pay", "request_id": mbway})).await;

    let read = |filters: Value| {
        let mut body = json!({"boKey": IFTHENPAY_BACKOFFICE_KEY});
        body.as_object_mut()
            .unwrap()
            .extend(filters.as_object().unwrap().clone());
        body
    };
    let (_, all) = post(&h, "/v2/payments/read", read(json!({}))).await;
    assert_eq!(all["status"], 200);
    assert_eq!(all["payments"].as_array().unwrap().len(), 3, "{all}");
    let (_, mb) = post(&h, "/v2/payments/read", read(json!({"entity": "MB"}))).await;
    assert_eq!(mb["payments"].as_array().unwrap().len(), 2);
    let (_, by_entity) = post(
        &h,
        "/v2/payments/read",
        read(json!({"entity": IFTHENPAY_MB_ENTITY})),
    )
    .await;
    assert_eq!(by_entity["payments"].as_array().unwrap().len(), 2);
    let (_, w) = post(&h, "/v2/payments/read", read(json!({"entity": "MBWAY"}))).await;
    assert_eq!(w["payments"][0]["orderId"], "W1");
    assert_eq!(w["payments"][0]["amount"], json!(7.0));
    let (_, o) = post(&h, "/v2/payments/read", read(json!({"orderId": "1002"}))).await;
    assert_eq!(o["payments"][0]["amount"], json!(80.0));
    let (_, a) = post(&h, "/v2/payments/read", read(json!({"amount": "25.00"}))).await;
    assert_eq!(a["payments"][0]["orderId"], "1001");
    let (_, rf) = post(&h, "/v2/payments/read", read(json!({"reference": refs[1]}))).await;
    assert_eq!(rf["payments"].as_array().unwrap().len(), 1);
    let (_, rq) = post(&h, "/v2/payments/read", read(json!({"requestId": mbway}))).await;
    assert_eq!(rq["payments"].as_array().unwrap().len(), 1);
    let (_, sub) = post(
        &h,
        "/v2/payments/read",
        read(json!({"subEntity": IFTHENPAY_MBWAY_KEY})),
    )
    .await;
    assert_eq!(sub["payments"].as_array().unwrap().len(), 1);
    let (_, past) = post(
        &h,
        "/v2/payments/read",
        read(json!({"dateStart": "01-06-2020 00:00:00", "dateEnd": "30-06-2020 23:59:59"})),
    )
    .await;
    assert_eq!(past["payments"].as_array().unwrap().len(), 0);
    let (_, bad) = post(&h, "/v2/payments/read", json!({"boKey": "nope"})).await;
    assert_eq!(
        (bad["status"].as_i64(), bad["message"].as_str()),
        (Some(403), Some("Invalid boKey"))
    );

    let (_, invalid) = post(
        &h,
        "/api/endpoint/callback/activation",
        json!({"chave": "nope", "entidade": "MB", "subentidade": IFTHENPAY_MB_KEY, "apKey": "x", "urlCb": "http://x"}),
    )
    .await;
    assert_eq!(invalid, json!("INVALID"));
}

#[tokio::test]
async fn without_filters_the_list_holds_the_1000_most_recent_payments() {
    let h = common::start().await;
    for i in 0..1001 {
        let (_, r) = post(
            &h,
            "/spg/payment/mbway",
            json!({"mbWayKey": IFTHENPAY_MBWAY_KEY, "orderId": format!("N{i}"), "amount": "1.00", "mobileNumber": "351#912345678"}),
        )
        .await;
        let (code, _) = shopper(&h, json!({"action": "pay", "request_id": r["RequestId"]})).await;
        assert_eq!(code, 200);
    }
    let (_, all) = post(
        &h,
        "/v2/payments/read",
        json!({"boKey": IFTHENPAY_BACKOFFICE_KEY}),
    )
    .await;
    let payments = all["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 1000);
    // The oldest one is the one left out.
    assert!(payments.iter().all(|p| p["orderId"] != "N0"));
    let (_, filtered) = post(
        &h,
        "/v2/payments/read",
        json!({"boKey": IFTHENPAY_BACKOFFICE_KEY, "entity": "MBWAY"}),
    )
    .await;
    assert_eq!(filtered["payments"].as_array().unwrap().len(), 1001);
}

/// Activates `template` (a URL with any placeholders) for `key`.
async fn activate_template(h: &common::Harness, key: &str, template: &str) {
    let (status, body) = post(
        h,
        "/api/endpoint/callback/activation",
        json!({"chave": IFTHENPAY_BACKOFFICE_KEY, "entidade": "X", "subentidade": key,
               "apKey": IFTHENPAY_ANTI_PHISHING_KEY, "urlCb": template}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn payshop_lives_under_api_refuses_ids_over_15_with_documented_codes() {
    let h = common::start().await;
    // Not at the API host's root: ifthenpay serves Payshop at ifthenpay.com/api/payshop/....
    let (status, _) = post(
        &h,
        "/payshop/reference/",
        json!({"payshopkey": IFTHENPAY_PAYSHOP_KEY, "id": "1", "valor": "5.00"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &h,
        "/endpoint/callback/activation",
        json!({"chave": IFTHENPAY_BACKOFFICE_KEY}),
    )
    .await;
    assert_eq!(status, 404);
    let (_, r) = post(
        &h,
        "/api/payshop/reference/",
        json!({"payshopkey": IFTHENPAY_PAYSHOP_KEY, "id": "1234567890123456", "valor": "5.00"}),
    )
    .await;
    assert_eq!(r["Code"], "103", "16 characters: {r}");
    let (_, r) = post(
        &h,
        "/api/payshop/reference/",
        json!({"payshopkey": "nope", "id": "1", "valor": "5.00"}),
    )
    .await;
    assert_eq!(r["Code"], "102", "invalid key: {r}");
    let (_, r) = post(
        &h,
        "/api/payshop/reference/",
        json!({"payshopkey": IFTHENPAY_PAYSHOP_KEY, "id": "123456789012345", "valor": "5.00"}),
    )
    .await;
    assert_eq!(r["Code"], "0", "15 characters: {r}");
}

#[tokio::test]
async fn callbacks_fill_only_each_methods_placeholders_and_refunds_say_devolvido() {
    let h = common::start().await;
    let m = merchant().await;
    let every = "o=[ORDER_ID]&i=[ID]&r=[REQUEST_ID]&s=[STATUS]&ref=[REFERENCE]&e=[ENTITY]&pm=[PAYMENT_METHOD]&a=[AMOUNT]";
    activate_template(&h, IFTHENPAY_CCARD_KEY, &format!("{}?{every}", m.url)).await;
    activate_template(&h, IFTHENPAY_MB_KEY, &format!("{}?{every}", m.url)).await;
    activate_template(&h, IFTHENPAY_GATEWAY_KEY, &format!("{}?{every}", m.url)).await;

    // A card payment: the order as [ID], a status, no [ORDER_ID], [REFERENCE] or [ENTITY].
    let (_, r) = post(
        &h,
        &format!("/creditcard/init/{IFTHENPAY_CCARD_KEY}"),
        json!({"orderId": "C77", "amount": "12.00", "successUrl": "https://s.example/ok",
               "errorUrl": "https://s.example/err", "cancelUrl": "https://s.example/c"}),
    )
    .await;
    let request_id = r["RequestId"].as_str().unwrap().to_string();
    let (_, paid) = shopper(&h, json!({"action": "pay", "request_id": request_id})).await;
    assert_eq!(paid["callback"]["status"], 200, "{paid}");
    let card = m.calls.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        card,
        format!("o=[ORDER_ID]&i=C77&r={request_id}&s=PAGO&ref=[REFERENCE]&e=[ENTITY]&pm=[PAYMENT_METHOD]&a=12.00")
    );
    // Refunded in the backoffice: the same callback with DEVOLVIDO.
    let (status, refunded) =
        shopper(&h, json!({"action": "refund", "request_id": request_id})).await;
    assert_eq!(status, 200, "{refunded}");
    assert_eq!(refunded["callback"]["status"], 200, "{refunded}");
    let refund = m.calls.lock().unwrap().last().cloned().unwrap();
    assert!(refund.contains("&s=DEVOLVIDO&"), "{refund}");

    // Multibanco: order, reference and entity; no status, no [ID]-only card fields.
    let (_, r) = post(
        &h,
        "/multibanco/reference/init",
        json!({"mbKey": IFTHENPAY_MB_KEY, "orderId": "M77", "amount": "3.00"}),
    )
    .await;
    let reference = r["Reference"].as_str().unwrap().to_string();
    shopper(&h, json!({"action": "pay", "reference": reference})).await;
    let mb = m.calls.lock().unwrap().last().cloned().unwrap();
    assert!(mb.starts_with("o=M77&i=M77&"), "{mb}");
    assert!(mb.contains("&s=[STATUS]&"), "{mb}");
    assert!(
        mb.contains(&format!(
            "&ref={reference}&e={IFTHENPAY_MB_ENTITY}&pm=[PAYMENT_METHOD]"
        )),
        "{mb}"
    );
    // Multibanco payments are not refunded by callback.
    let (status, _) = shopper(&h, json!({"action": "refund", "reference": reference})).await;
    assert_eq!(status, 409);

    // PinPay paid by card: the method used, the status.
    let (_, r) = post(
        &h,
        &format!("/gateway/pinpay/{IFTHENPAY_GATEWAY_KEY}"),
        json!({"id": "P77", "amount": "4.00", "accounts": format!("CCARD|{IFTHENPAY_CCARD_KEY}")}),
    )
    .await;
    let pin = r["PinCode"].as_str().unwrap().to_string();
    shopper(
        &h,
        json!({"action": "pay", "pin_code": pin, "method": "CCARD"}),
    )
    .await;
    let pinpay = m.calls.lock().unwrap().last().cloned().unwrap();
    assert!(pinpay.starts_with("o=[ORDER_ID]&i=P77&"), "{pinpay}");
    assert!(
        pinpay.contains("&s=PAGO&ref=[REFERENCE]&e=[ENTITY]&pm=CCARD&a=4.00"),
        "{pinpay}"
    );
}

#[tokio::test]
async fn documented_length_limits_of_mb_way_and_callback_activation() {
    let h = common::start().await;
    for field in ["description", "email"] {
        let mut body = json!({"mbWayKey": IFTHENPAY_MBWAY_KEY, "orderId": "L1", "amount": "1.00",
                              "mobileNumber": "351#912345678"});
        body[field] = json!("x".repeat(101));
        let (_, r) = post(&h, "/spg/payment/mbway", body).await;
        assert_eq!(r["Status"], "100", "{field}: {r}");
    }
    let long = format!("https://shop.example/cb?{}", "a".repeat(300));
    let (_, r) = post(
        &h,
        "/api/endpoint/callback/activation",
        json!({"chave": IFTHENPAY_BACKOFFICE_KEY, "entidade": "MB", "subentidade": IFTHENPAY_MB_KEY,
               "apKey": IFTHENPAY_ANTI_PHISHING_KEY, "urlCb": long}),
    )
    .await;
    assert_eq!(r, json!("INVALID"));
}
