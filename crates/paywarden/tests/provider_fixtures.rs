//! The providers' own documented requests and answers (`tests/fixtures/providers/`, each file
//! naming its source and date): paywarden's connectors read every documented answer as the
//! documented outcome, and the emulator answers the same request with the same HTTP status and
//! the same keys with the same JSON types. See tests/fixtures/providers/README.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use paywarden::connectors::ifthenpay::{IfthenpayClient, IfthenpayError};
use paywarden::connectors::opp::{InitialPaymentRequest, OppClient, OppCredentials, OppError};
use paywarden_domain::{Currency, Money, PaymentType};
use paywarden_emulator::{
    Emulator, EmulatorConfig, RunningEmulator, DEMO_ENTITY_ID, DEMO_TOKEN, IFTHENPAY_CCARD_KEY,
    IFTHENPAY_MBWAY_KEY, IFTHENPAY_PAYSHOP_KEY,
};
use secrecy::SecretString;
use serde_json::{json, Value};

fn fixtures(provider: &str) -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/providers")
        .join(provider);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read");
            let v: Value = serde_json::from_str(&text).expect("fixture JSON");
            for field in [
                "source",
                "retrieved",
                "operation",
                "request",
                "response",
                "expect",
            ] {
                assert!(v.get(field).is_some(), "{}: no {field}", p.display());
            }
            (p, v)
        })
        .collect()
}

/// Replaces the demo placeholders of a request.
fn fill(text: &str) -> String {
    text.replace("{entity_id}", DEMO_ENTITY_ID)
        .replace("{mbway_key}", IFTHENPAY_MBWAY_KEY)
        .replace("{ccard_key}", IFTHENPAY_CCARD_KEY)
        .replace("{payshop_key}", IFTHENPAY_PAYSHOP_KEY)
}

/// A server answering every request with `status` and `body` (the provider's documented
/// answer).
async fn stand_in(status: u16, body: Value) -> String {
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                axum::http::StatusCode::from_u16(status).expect("status"),
                axum::Json(body),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn emulator() -> (RunningEmulator, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = Emulator::open(EmulatorConfig::demo(dir.path().join("e.db")))
        .await
        .expect("emulator");
    let running = e
        .spawn(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        )
        .await
        .expect("spawn");
    (running, dir)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key of `documented` is in `actual` with the same JSON type (recursively; arrays by
/// their first elements); top-level keys of `actual` beyond those must be in `extra`.
fn same_shape(documented: &Value, actual: &Value, extra: &[String], at: &str, top: bool) {
    assert_eq!(
        kind(documented),
        kind(actual),
        "{at}: documented {documented}, emulator {actual}"
    );
    match (documented, actual) {
        (Value::Object(d), Value::Object(a)) => {
            for (k, dv) in d {
                let av = a.get(k).unwrap_or_else(|| {
                    panic!("{at}.{k}: missing in the emulator's answer {actual}")
                });
                same_shape(dv, av, extra, &format!("{at}.{k}"), false);
            }
            if top {
                for k in a.keys().filter(|k| !d.contains_key(*k)) {
                    assert!(
                        extra.contains(k),
                        "{at}.{k}: the emulator adds a key the provider's answer does not have"
                    );
                }
            }
        }
        (Value::Array(d), Value::Array(a)) => {
            if let (Some(dv), Some(av)) = (d.first(), a.first()) {
                same_shape(dv, av, extra, &format!("{at}[0]"), false);
            }
        }
        _ => {}
    }
}

async fn emulator_answer(base: &str, fixture: &Value, provider: &str) -> (u16, Value) {
    let request = &fixture["request"];
    let prefix = if fixture["host"] == "legacy" {
        "/api"
    } else {
        ""
    };
    let path = fill(request["path"].as_str().expect("path"));
    let url = format!("{base}{prefix}{path}");
    let http = reqwest::Client::new();
    let builder = match (request["method"].as_str(), provider) {
        (Some("POST"), "opp") => {
            let form: Vec<(String, String)> = request["form"]
                .as_object()
                .expect("form")
                .iter()
                .map(|(k, v)| (k.clone(), fill(v.as_str().unwrap_or_default())))
                .collect();
            http.post(url).bearer_auth(DEMO_TOKEN).form(&form)
        }
        (Some("GET"), "opp") => {
            let query: Vec<(String, String)> = request["query"]
                .as_object()
                .map(|q| {
                    q.iter()
                        .map(|(k, v)| (k.clone(), fill(v.as_str().unwrap_or_default())))
                        .collect()
                })
                .unwrap_or_default();
            http.get(url).bearer_auth(DEMO_TOKEN).query(&query)
        }
        (Some("POST"), _) => {
            let body: Value =
                serde_json::from_str(&fill(&request["json"].to_string())).expect("json body");
            http.post(url).json(&body)
        }
        other => panic!("unsupported request {other:?}"),
    };
    let response = builder.send().await.expect("emulator answered");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn extra_keys(fixture: &Value) -> Vec<String> {
    fixture["emulator"]["extra_keys"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn opp_fixtures_are_read_as_documented_and_the_emulator_answers_alike() {
    let (running, _dir) = emulator().await;
    let credentials = OppCredentials {
        entity_id: DEMO_ENTITY_ID.into(),
        token: SecretString::from(DEMO_TOKEN.to_string()),
    };
    for (path, f) in fixtures("opp") {
        let name = path.display().to_string();
        let status = u16::try_from(f["response"]["status"].as_u64().expect("status")).expect("u16");
        let body = f["response"]["body"].clone();
        let client = OppClient::new(
            &stand_in(status, body.clone()).await,
            Duration::from_secs(5),
        )
        .expect("client");
        let outcome = match f["operation"].as_str() {
            Some("create_payment") => {
                let form = &f["request"]["form"];
                let text = |k: &str| form[k].as_str().unwrap_or_default().to_string();
                let currency = Currency::from_code(&text("currency")).expect("currency");
                let request = InitialPaymentRequest {
                    payment_type: text("paymentType").parse::<PaymentType>().expect("type"),
                    amount: Money::parse(&text("amount"), currency).expect("amount"),
                    payment_brand: text("paymentBrand"),
                    card_number: SecretString::from(text("card.number")),
                    card_holder: text("card.holder"),
                    expiry_month: text("card.expiryMonth"),
                    expiry_year: text("card.expiryYear"),
                    cvv: SecretString::from(text("card.cvv")),
                    merchant_transaction_id: None,
                    custom_parameters: Vec::new(),
                };
                client
                    .create_payment(&credentials, &request)
                    .await
                    .map(|t| vec![t])
            }
            Some("query_by_id") => {
                client
                    .query_by_id(&credentials, "8ac9a4a8658afc790165a3f0e436198d", false, &[])
                    .await
            }
            other => panic!("{name}: unknown operation {other:?}"),
        };
        match (f["expect"].as_str(), &outcome) {
            (Some("approved"), Ok(txs)) => {
                assert_eq!(txs[0].id, body["id"], "{name}");
                assert!(txs[0].result.is_success(), "{name}");
            }
            // The documented refusal has no amount or currency, which paywarden's transaction
            // model requires, so the refused transaction itself is not kept (its result is):
            // a known gap, listed in docs/emulator.md.
            (Some("rejected"), Err(OppError::Rejected { result, .. })) => {
                assert_eq!(
                    result.code,
                    body["result"]["code"].as_str().unwrap_or_default(),
                    "{name}"
                );
            }
            (
                Some("throttled"),
                Err(OppError::Throttled {
                    result: Some(result),
                    ..
                }),
            ) => {
                assert_eq!(result.code, "800.120.100", "{name}");
            }
            (expect, got) => panic!("{name}: expected {expect:?}, the connector gave {got:?}"),
        }
        if f["emulator"]["compare"] == json!(false) {
            continue;
        }
        let (got_status, got) = emulator_answer(&running.base_url, &f, "opp").await;
        assert_eq!(got_status, status, "{name}: {got}");
        same_shape(&body, &got, &extra_keys(&f), &name, true);
    }
}

#[tokio::test]
async fn ifthenpay_fixtures_are_read_as_documented_and_the_emulator_answers_alike() {
    let (running, _dir) = emulator().await;
    for (path, f) in fixtures("ifthenpay") {
        let name = path.display().to_string();
        let status = u16::try_from(f["response"]["status"].as_u64().expect("status")).expect("u16");
        let body = f["response"]["body"].clone();
        // The stand-in plays both hosts: the API host at its root, ifthenpay.com/api under /api.
        let url = stand_in(status, body.clone()).await;
        let client = IfthenpayClient::new(&url, Duration::from_secs(5)).expect("client");
        let request = &f["request"]["json"];
        let text = |k: &str| request[k].as_str().unwrap_or_default().to_string();
        let key = |k: &str| SecretString::from(fill(&text(k)));
        let outcome: Result<String, IfthenpayError> = match f["operation"].as_str() {
            Some("mbway_init") => {
                client
                    .mbway_init(
                        &key("mbWayKey"),
                        &text("orderId"),
                        Money::parse(&text("amount"), Currency::EUR).expect("amount"),
                        &text("mobileNumber"),
                        Some(&text("description")),
                    )
                    .await
            }
            Some("creditcard_init") => client
                .creditcard_init(
                    &SecretString::from(IFTHENPAY_CCARD_KEY.to_string()),
                    request,
                )
                .await
                .map(|c| c.request_id),
            Some("payshop_init") => client
                .payshop_init(
                    &key("payshopkey"),
                    &text("id"),
                    Money::parse(&text("valor"), Currency::EUR).expect("amount"),
                    None,
                )
                .await
                .map(|p| p.request_id),
            other => panic!("{name}: unknown operation {other:?}"),
        };
        let expect = f["expect"].as_str().unwrap_or_default();
        match (expect.split_once(':'), &outcome) {
            (None, Ok(request_id)) if expect == "request_id" => {
                let documented = body["RequestId"].as_str().or(body["requestId"].as_str());
                assert_eq!(Some(request_id.as_str()), documented, "{name}");
            }
            (Some(("rejected", code)), Err(IfthenpayError::Rejected { code: got, .. })) => {
                assert_eq!(got, code, "{name}");
            }
            (_, got) => panic!("{name}: expected {expect}, the connector gave {got:?}"),
        }
        if f["emulator"]["compare"] == json!(false) {
            continue;
        }
        let (got_status, got) = emulator_answer(&running.base_url, &f, "ifthenpay").await;
        assert_eq!(got_status, status, "{name}: {got}");
        same_shape(&body, &got, &extra_keys(&f), &name, true);
        // Refusals carry the documented code, successes the documented one too.
        for code_field in ["Status", "Code", "status"] {
            if let Some(documented) = body.get(code_field) {
                assert_eq!(got.get(code_field), Some(documented), "{name}: {got}");
            }
        }
    }
}
