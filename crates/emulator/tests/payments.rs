//! `POST /v1/payments`: initial PA/DB card payments, test cards, and parameter validation.

mod common;

use common::{start, MAIN};
use reqwest::StatusCode;

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn successful_debit_has_opp_shape() {
    let h = start().await;
    let r = h
        .pay(
            MAIN,
            &[
                ("amount", "10.00"),
                ("merchantTransactionId", "order-0001"),
                ("descriptor", "Shop 42"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.sandbox.as_deref(), Some("true"));
    let b = &r.body;
    assert!(is_hex32(b["id"].as_str().unwrap()), "{b}");
    assert!(b.get("referencedId").is_none());
    assert_eq!(b["paymentType"], "DB");
    assert_eq!(b["paymentBrand"], "VISA");
    assert_eq!(b["amount"], "10.00");
    assert_eq!(b["currency"], "EUR");
    assert_eq!(b["descriptor"], "Shop 42");
    assert_eq!(b["merchantTransactionId"], "order-0001");
    assert_eq!(b["result"]["code"], "000.100.110");
    assert_eq!(
        b["result"]["description"],
        "Request successfully processed in 'Merchant in Integrator Test Mode'"
    );
    assert_eq!(b["card"]["bin"], "420000");
    assert_eq!(b["card"]["last4Digits"], "0000");
    assert_eq!(b["card"]["holder"], "Jane Jones");
    assert_eq!(b["card"]["expiryMonth"], "05");
    assert_eq!(b["card"]["expiryYear"], "2034");
    assert!(b["card"].get("number").is_none());
    assert!(b["card"].get("cvv").is_none());
    assert!(b["resultDetails"]["ConnectorTxID1"].as_str().is_some());
    assert!(b["buildNumber"]
        .as_str()
        .unwrap()
        .starts_with("paywarden-emulator@"));
    let ts = b["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S%z").is_ok(),
        "{ts}"
    );
    assert!(ts.ends_with("+0000"));
    assert!(b["ndc"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}_", MAIN.0)));
    assert!(!b.to_string().contains("4200000000000000"));
}

#[tokio::test]
async fn preauthorization_defaults_and_other_currencies() {
    let h = start().await;
    let r = h
        .pay(
            MAIN,
            &[
                ("paymentType", "PA"),
                ("paymentBrand", ""),
                ("card.number", "5454545454545454"),
                ("card.holder", ""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["paymentType"], "PA");
    assert_eq!(r.body["paymentBrand"], "VISA", "default brand");
    assert_eq!(r.body["card"]["bin"], "545454");
    assert!(r.body["card"].get("holder").is_none());
    assert!(r.body["descriptor"]
        .as_str()
        .unwrap()
        .ends_with("PAYWARDEN_SANDBOX"));

    let jpy = h
        .pay(MAIN, &[("amount", "1000"), ("currency", "JPY")])
        .await;
    assert_eq!(jpy.status, StatusCode::OK);
    assert_eq!(jpy.body["amount"], "1000");
    let kwd = h
        .pay(MAIN, &[("amount", "1.50"), ("currency", "KWD")])
        .await;
    assert_eq!(kwd.status, StatusCode::OK);
    assert_eq!(
        kwd.body["amount"], "1.50",
        "N10.N2 for a 3-decimal currency too"
    );
    let amex = h
        .pay(
            MAIN,
            &[
                ("paymentBrand", "AMEX"),
                ("card.number", "378282246310005"),
                ("card.cvv", "1234"),
            ],
        )
        .await;
    assert_eq!(amex.status, StatusCode::OK, "{}", amex.body);
    assert_eq!(amex.body["card"]["last4Digits"], "0005");
}

#[tokio::test]
async fn test_cards_decline_and_declines_are_stored() {
    let h = start().await;
    for (number, code, description) in [
        (
            "4000000000000002",
            "800.100.151",
            "transaction declined (invalid card)",
        ),
        (
            "4000000000000051",
            "800.100.155",
            "transaction declined (amount exceeds credit)",
        ),
        (
            "4200000000000001",
            "100.100.101",
            "invalid creditcard, bank account number or bank name",
        ),
    ] {
        let r = h.pay(MAIN, &[("card.number", number)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{number}");
        assert_eq!(r.code(), code);
        assert_eq!(r.body["result"]["description"], description);
        let id = r.id();
        assert!(is_hex32(&id));
        assert_eq!(r.body["card"]["last4Digits"], &number[12..]);
        let q = h.query_id(MAIN, &id, &[]).await;
        assert_eq!(q.status, StatusCode::OK);
        assert_eq!(q.code(), code, "the declined transaction is stored");
    }
    // Any other Luhn-valid number succeeds.
    h.paid(MAIN, &[("card.number", "4111111111111111")]).await;
}

#[tokio::test]
async fn declined_payment_cannot_be_refunded() {
    let h = start().await;
    let r = h.pay(MAIN, &[("card.number", "4000000000000002")]).await;
    let id = r.id();
    let rf = h.op(MAIN, &id, &[("paymentType", "RF")]).await;
    assert_eq!(rf.status, StatusCode::BAD_REQUEST);
    assert_eq!(rf.code(), "700.300.200");
}

async fn assert_param_error(
    h: &common::Harness,
    overrides: &[(&str, &str)],
    name: &str,
) -> common::Reply {
    let r = h.pay(MAIN, overrides).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "{overrides:?}: {}",
        r.body
    );
    assert_eq!(r.code(), "200.300.404", "{overrides:?}");
    assert_eq!(
        r.body["result"]["description"],
        "invalid or missing parameter"
    );
    assert!(
        r.param_names().iter().any(|n| n == name),
        "{overrides:?}: expected a parameter error on {name}: {}",
        r.body
    );
    assert!(r.body.get("id").is_none(), "nothing is stored");
    assert!(r.body["buildNumber"].is_string());
    assert!(r.body["timestamp"].is_string());
    assert!(r.body["ndc"].is_string());
    for e in r.body["result"]["parameterErrors"].as_array().unwrap() {
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    r
}

#[tokio::test]
async fn amount_and_currency_validation() {
    let h = start().await;
    let r = assert_param_error(&h, &[("amount", "10.001")], "amount").await;
    let e = &r.body["result"]["parameterErrors"][0];
    assert_eq!(e["value"], "10.001");
    assert!(e["message"].as_str().unwrap().contains("10.00"), "{e}");
    for bad in [
        "0", "0.00", "-1.00", "+1.00", "1e3", "1.", ".5", "1,00", " 1.00", "abc", "NaN",
    ] {
        assert_param_error(&h, &[("amount", bad)], "amount").await;
    }
    assert_param_error(&h, &[("amount", "10.5"), ("currency", "JPY")], "amount").await;
    assert_param_error(&h, &[("amount", "")], "amount").await;
    assert_param_error(&h, &[("currency", "eur")], "currency").await;
    assert_param_error(&h, &[("currency", "XXX")], "currency").await;
    assert_param_error(&h, &[("currency", "")], "currency").await;
    // OPP's amount format is N10.N2 (OPP API reference, "Parameters"): decimals, if any, are
    // exactly two, whatever the currency; at most 10 integer digits.
    for bad in ["10.5", "10.500", "12345678901"] {
        assert_param_error(&h, &[("amount", bad)], "amount").await;
    }
    assert_param_error(&h, &[("amount", "1.500"), ("currency", "KWD")], "amount").await;
    assert_param_error(&h, &[("amount", "1.5"), ("currency", "KWD")], "amount").await;
    assert_param_error(&h, &[("amount", "1000.50"), ("currency", "JPY")], "amount").await;
    let ok = h.pay(MAIN, &[("amount", "1234567890.12")]).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["amount"], "1234567890.12");
    let jpy = h
        .pay(MAIN, &[("amount", "1000.00"), ("currency", "JPY")])
        .await;
    assert_eq!(jpy.status, StatusCode::OK);
    assert_eq!(jpy.body["amount"], "1000");
}

#[tokio::test]
async fn field_validation() {
    let h = start().await;
    assert_param_error(&h, &[("paymentType", "CP")], "paymentType").await;
    assert_param_error(&h, &[("paymentType", "XX")], "paymentType").await;
    assert_param_error(&h, &[("paymentType", "")], "paymentType").await;
    assert_param_error(&h, &[("paymentBrand", "BITCOIN")], "paymentBrand").await;
    let r = assert_param_error(&h, &[("card.number", "4200 0000 0000 0000")], "card.number").await;
    assert!(
        !r.body.to_string().contains("4200 0000 0000"),
        "card numbers are masked in parameterErrors: {}",
        r.body
    );
    assert_param_error(&h, &[("card.number", "42000")], "card.number").await;
    assert_param_error(&h, &[("card.number", "")], "card.number").await;
    assert_param_error(&h, &[("card.expiryMonth", "13")], "card.expiryMonth").await;
    assert_param_error(&h, &[("card.expiryMonth", "5")], "card.expiryMonth").await;
    assert_param_error(&h, &[("card.expiryYear", "34")], "card.expiryYear").await;
    assert_param_error(&h, &[("card.expiryYear", "2001")], "card.expiryYear").await;
    let r = assert_param_error(&h, &[("card.cvv", "12")], "card.cvv").await;
    assert_eq!(r.body["result"]["parameterErrors"][0]["value"], "**");
    assert_param_error(
        &h,
        &[("merchantTransactionId", "short")],
        "merchantTransactionId",
    )
    .await;
    let long = "x".repeat(256);
    assert_param_error(
        &h,
        &[("merchantTransactionId", &long)],
        "merchantTransactionId",
    )
    .await;
    let long = "d".repeat(128);
    assert_param_error(&h, &[("descriptor", &long)], "descriptor").await;

    // Several problems are reported together.
    let r = h
        .pay(
            MAIN,
            &[
                ("amount", "1.234"),
                ("card.expiryMonth", "00"),
                ("paymentType", "RF"),
            ],
        )
        .await;
    let names = r.param_names();
    for n in ["amount", "card.expiryMonth", "paymentType"] {
        assert!(names.iter().any(|x| x == n), "{names:?}");
    }
}

#[tokio::test]
async fn nothing_is_stored_on_parameter_errors() {
    let h = start().await;
    let r = h
        .pay(
            MAIN,
            &[
                ("amount", "10.001"),
                ("merchantTransactionId", "never-stored-1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let q = h
        .query(MAIN, &[("merchantTransactionId", "never-stored-1")])
        .await;
    assert_eq!(q.status, StatusCode::NOT_FOUND);
    assert_eq!(q.code(), "700.400.580");
}

#[tokio::test]
async fn duplicate_parameters_and_wrong_content_type() {
    let h = start().await;
    let form = [
        ("entityId", MAIN.0),
        ("amount", "10.00"),
        ("amount", "20.00"),
        ("currency", "EUR"),
        ("paymentType", "DB"),
        ("card.number", "4200000000000000"),
        ("card.expiryMonth", "05"),
        ("card.expiryYear", "2034"),
    ];
    let r = h.post("/v1/payments", Some(MAIN.1), &form).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.param_names(), vec!["amount".to_string()]);

    let response = h
        .http
        .post(h.url("/v1/payments"))
        .bearer_auth(MAIN.1)
        .header("content-type", "application/json")
        .body(r#"{"entityId":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers().get("x-paywarden-sandbox").unwrap(),
        "true"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["result"]["code"], "200.300.404");
    assert_eq!(body["result"]["parameterErrors"][0]["name"], "Content-Type");
}

#[tokio::test]
async fn card_expiry_is_checked_against_the_transaction_time() {
    let h = start().await;
    assert_param_error(
        &h,
        &[("card.expiryMonth", "01"), ("card.expiryYear", "2020")],
        "card.expiryYear",
    )
    .await;
    // A card that expired later than a backdated transaction is fine for that transaction.
    let r = h
        .pay(
            MAIN,
            &[
                ("card.expiryMonth", "12"),
                ("card.expiryYear", "2020"),
                (
                    "customParameters[SANDBOX_TIMESTAMP]",
                    "2020-06-01T10:00:00Z",
                ),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn sandbox_timestamp_backdates() {
    let h = start().await;
    let r = h
        .pay(
            MAIN,
            &[(
                "customParameters[SANDBOX_TIMESTAMP]",
                "2025-03-04T05:06:07+02:00",
            )],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["timestamp"], "2025-03-04 03:06:07+0000");
    let q = h.query_id(MAIN, &r.id(), &[]).await;
    assert_eq!(q.body["timestamp"], "2025-03-04 03:06:07+0000");

    assert_param_error(
        &h,
        &[("customParameters[SANDBOX_TIMESTAMP]", "2025-03-04 05:06:07")],
        "customParameters[SANDBOX_TIMESTAMP]",
    )
    .await;
    assert_param_error(
        &h,
        &[(
            "customParameters[SANDBOX_TIMESTAMP]",
            "2999-01-01T00:00:00Z",
        )],
        "customParameters[SANDBOX_TIMESTAMP]",
    )
    .await;
    // Other custom parameters are accepted and ignored.
    h.paid(MAIN, &[("customParameters[SHOPPER_note]", "hello")])
        .await;
}

#[tokio::test]
async fn the_database_never_holds_the_card_number_or_cvv() {
    let h = start().await;
    h.paid(
        MAIN,
        &[("card.number", "4012888888881881"), ("card.cvv", "987")],
    )
    .await;
    drop(h.running);
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let hay = String::from_utf8_lossy(&bytes);
    assert!(!hay.contains("4012888888881881"));
    assert!(hay.contains("401288"), "the BIN is stored");
}
