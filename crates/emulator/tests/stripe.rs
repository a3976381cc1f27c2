//! The Stripe API subset over HTTP, against a spawned emulator (reqwest, form-encoded requests
//! as Stripe's client libraries send them).

use std::collections::HashSet;
use std::time::Duration;

use paywarden_emulator::{
    Emulator, EmulatorConfig, RunningEmulator, StripeCredential, DEMO_STRIPE_KEY,
    DEMO_STRIPE_RESTRICTED_KEY,
};
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

struct Stripe {
    running: RunningEmulator,
    dir: TempDir,
    http: reqwest::Client,
    key: String,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    replayed: bool,
    request_id: Option<String>,
    sandbox: bool,
    body: Value,
}

impl Reply {
    fn id(&self) -> String {
        self.body["id"].as_str().unwrap().to_string()
    }
    fn error(&self) -> (&str, &str) {
        (
            self.body["error"]["type"].as_str().unwrap_or(""),
            self.body["error"]["code"].as_str().unwrap_or(""),
        )
    }
}

async fn open(dir: TempDir, config: EmulatorConfig) -> Stripe {
    let emulator = Emulator::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = emulator.spawn(listener).await.unwrap();
    Stripe {
        running,
        dir,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        key: DEMO_STRIPE_KEY.to_string(),
    }
}

async fn start() -> Stripe {
    let dir = tempfile::tempdir().unwrap();
    let config = EmulatorConfig::demo(dir.path().join("emulator.sqlite"));
    open(dir, config).await
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let header = |n: &str| {
        response
            .headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let replayed = header("idempotent-replayed").as_deref() == Some("true");
    let request_id = header("request-id");
    let sandbox = header("x-paywarden-sandbox").as_deref() == Some("true");
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        replayed,
        request_id,
        sandbox,
        body,
    }
}

impl Stripe {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base_url)
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        self.post_with(path, form, None).await
    }

    async fn post_with(&self, path: &str, form: &[(&str, &str)], key: Option<&str>) -> Reply {
        let mut request = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.key)
            .form(form);
        if let Some(k) = key {
            request = request.header("Idempotency-Key", k);
        }
        reply(request.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Reply {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.key)
            .query(query)
            .send()
            .await
            .unwrap();
        reply(r).await
    }

    async fn customer(&self, email: &str) -> String {
        let r = self
            .post(
                "/v1/customers",
                &[("email", email), ("name", "Test Person")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.id()
    }

    /// A succeeded PaymentIntent (confirmed with `pm_card_visa`).
    async fn payment(&self, customer: &str, amount: &str) -> Value {
        let r = self
            .post(
                "/v1/payment_intents",
                &[
                    ("customer", customer),
                    ("amount", amount),
                    ("currency", "usd"),
                    ("confirm", "true"),
                    ("payment_method", "pm_card_visa"),
                    ("automatic_payment_methods[enabled]", "true"),
                    ("automatic_payment_methods[allow_redirects]", "never"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body
    }
}

#[tokio::test]
async fn customers_create_list_search_retrieve_update() {
    let s = start().await;
    let sarah = s.customer("sarah@example.com").await;
    assert!(sarah.starts_with("cus_"));
    let _other = s.customer("SARAH@example.com").await;
    s.customer("james@example.com").await;

    let list = s
        .get("/v1/customers", &[("email", "sarah@example.com")])
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.sandbox);
    assert!(list.request_id.unwrap().starts_with("req_"));
    assert_eq!(list.body["object"], "list");
    assert_eq!(list.body["url"], "/v1/customers");
    assert_eq!(list.body["has_more"], false);
    let data = list.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "the email filter is exact: {data:?}");
    assert_eq!(data[0]["id"], sarah.as_str());
    assert_eq!(data[0]["object"], "customer");
    assert_eq!(data[0]["livemode"], false);

    let all = s.get("/v1/customers", &[("limit", "2")]).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(all.body["has_more"], true);

    let found = s
        .get(
            "/v1/customers/search",
            &[("query", "email:'sarah@example.com'")],
        )
        .await;
    assert_eq!(found.status, StatusCode::OK, "{:?}", found.body);
    assert_eq!(found.body["object"], "search_result");
    assert_eq!(
        found.body["data"].as_array().unwrap().len(),
        2,
        "search is case-insensitive"
    );
    let bad = s
        .get("/v1/customers/search", &[("query", "phone:'1'")])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["error"]["param"], "query");

    let one = s.get(&format!("/v1/customers/{sarah}"), &[]).await;
    assert_eq!(one.body["email"], "sarah@example.com");

    let updated = s
        .post(
            &format!("/v1/customers/{sarah}"),
            &[
                ("name", "Sarah Connor"),
                ("metadata[tier]", "gold"),
                ("phone", ""),
            ],
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["name"], "Sarah Connor");
    assert_eq!(updated.body["metadata"]["tier"], "gold");
    let moved = s
        .post(
            &format!("/v1/customers/{sarah}"),
            &[("email", "sarah.c@example.com"), ("metadata[tier]", "")],
        )
        .await;
    assert!(moved.body["metadata"].as_object().unwrap().is_empty());
    let list = s
        .get("/v1/customers", &[("email", "sarah.c@example.com")])
        .await;
    assert_eq!(list.body["data"][0]["id"], sarah.as_str());

    let missing = s.get("/v1/customers/cus_nope", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.error(),
        ("invalid_request_error", "resource_missing")
    );
    assert_eq!(missing.body["error"]["param"], "id");
    assert_eq!(
        missing.body["error"]["message"],
        "No such customer: 'cus_nope'"
    );

    // An empty filter is refused rather than dropped (it would list every customer).
    for (path, name) in [
        ("/v1/customers", "email"),
        ("/v1/payment_intents", "customer"),
        ("/v1/refunds", "payment_intent"),
        ("/v1/refunds", "charge"),
        ("/v1/customers", "starting_after"),
    ] {
        let r = s.get(path, &[(name, "")]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}?{name}=");
        assert_eq!(r.error().1, "parameter_invalid_empty");
        assert_eq!(r.body["error"]["param"], name);
    }

    let bad_email = s.post("/v1/customers", &[("email", "not-an-email")]).await;
    assert_eq!(bad_email.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_email.error().1, "email_invalid");
}

#[tokio::test]
async fn payment_intents_charges_and_pagination() {
    let s = start().await;
    let cus = s.customer("pager@example.com").await;
    let other = s.customer("other@example.com").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let pi = s.payment(&cus, &format!("{}", 1000 + i)).await;
        assert!(pi["id"].as_str().unwrap().starts_with("pi_"));
        assert_eq!(pi["object"], "payment_intent");
        assert_eq!(pi["status"], "succeeded");
        assert_eq!(pi["amount_received"], 1000 + i);
        assert_eq!(pi["automatic_payment_methods"]["enabled"], true);
        ids.push(pi["id"].as_str().unwrap().to_string());
    }
    s.payment(&other, "777").await;
    ids.reverse(); // newest first

    // Page through with starting_after, two at a time.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q = vec![("customer", cus.as_str()), ("limit", "2")];
        if let Some(a) = &after {
            q.push(("starting_after", a.as_str()));
        }
        let page = s.get("/v1/payment_intents", &q).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        assert_eq!(page.body["url"], "/v1/payment_intents");
        let data = page.body["data"].as_array().unwrap();
        seen.extend(data.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        after = data.last().map(|p| p["id"].as_str().unwrap().to_string());
        if page.body["has_more"] == false {
            break;
        }
    }
    assert_eq!(seen, ids);

    // ending_before walks back towards newer objects.
    let back = s
        .get(
            "/v1/payment_intents",
            &[
                ("customer", cus.as_str()),
                ("limit", "2"),
                ("ending_before", ids[4].as_str()),
            ],
        )
        .await;
    let data: Vec<&str> = back.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(data, vec![ids[2].as_str(), ids[3].as_str()]);
    assert_eq!(back.body["has_more"], true);

    let both = s
        .get(
            "/v1/payment_intents",
            &[("starting_after", &ids[0]), ("ending_before", &ids[1])],
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    let unknown_cursor = s
        .get("/v1/payment_intents", &[("starting_after", "pi_nope")])
        .await;
    assert_eq!(unknown_cursor.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown_cursor.error().1, "resource_missing");
    assert_eq!(unknown_cursor.body["error"]["param"], "starting_after");
    for bad in ["0", "101", "x"] {
        let r = s.get("/v1/payment_intents", &[("limit", bad)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "limit={bad}");
        assert_eq!(r.body["error"]["param"], "limit");
    }
    let all = s.get("/v1/payment_intents", &[("limit", "100")]).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 6);

    let pi = s.get(&format!("/v1/payment_intents/{}", ids[0]), &[]).await;
    assert_eq!(pi.status, StatusCode::OK);
    let charge_id = pi.body["latest_charge"].as_str().unwrap().to_string();
    assert!(charge_id.starts_with("ch_"));
    let charge = s.get(&format!("/v1/charges/{charge_id}"), &[]).await;
    assert_eq!(charge.body["object"], "charge");
    assert_eq!(charge.body["amount"], 1004);
    assert_eq!(charge.body["amount_refunded"], 0);
    assert_eq!(charge.body["refunded"], false);
    assert_eq!(charge.body["payment_intent"], ids[0].as_str());
    assert_eq!(
        s.get("/v1/charges/ch_nope", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/v1/payment_intents/pi_nope", &[]).await.status,
        StatusCode::NOT_FOUND
    );

    // Not confirmed: requires_confirmation, no charge.
    let pending = s
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "500"),
                ("currency", "eur"),
                ("payment_method", "pm_card_visa"),
            ],
        )
        .await;
    assert_eq!(pending.body["status"], "requires_confirmation");
    assert!(pending.body["latest_charge"].is_null());
}

#[tokio::test]
async fn payment_intent_errors() {
    let s = start().await;
    let declined = s
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "500"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method", "pm_card_chargeDeclinedInsufficientFunds"),
            ],
        )
        .await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(declined.error(), ("card_error", "card_declined"));
    assert_eq!(declined.body["error"]["decline_code"], "insufficient_funds");
    let pi = &declined.body["error"]["payment_intent"];
    assert_eq!(pi["status"], "requires_payment_method");
    let stored = s
        .get(
            &format!("/v1/payment_intents/{}", pi["id"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(stored.status, StatusCode::OK);

    for (form, param, code) in [
        (vec![("currency", "usd")], "amount", "parameter_missing"),
        (
            vec![("amount", "0"), ("currency", "usd")],
            "amount",
            "parameter_invalid_integer",
        ),
        (
            vec![("amount", "12.5"), ("currency", "usd")],
            "amount",
            "parameter_invalid_integer",
        ),
        (
            vec![("amount", "100"), ("currency", "usd"), ("colour", "red")],
            "colour",
            "parameter_unknown",
        ),
        (
            vec![
                ("amount", "100"),
                ("currency", "usd"),
                ("customer", "cus_x"),
            ],
            "customer",
            "resource_missing",
        ),
    ] {
        let r = s.post("/v1/payment_intents", &form).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{form:?}: {:?}", r.body);
        assert_eq!(r.error(), ("invalid_request_error", code), "{form:?}");
        assert_eq!(r.body["error"]["param"], param, "{form:?}");
        assert!(r.body["error"]["message"].as_str().unwrap().len() > 5);
    }
    let r = s
        .post(
            "/v1/payment_intents",
            &[("amount", "100"), ("currency", "xyz")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["param"], "currency");
}

#[tokio::test]
async fn refunds_partial_full_and_beyond_the_remainder() {
    let s = start().await;
    let cus = s.customer("refund@example.com").await;
    let pi = s.payment(&cus, "4999").await;
    let pi_id = pi["id"].as_str().unwrap();
    let charge_id = pi["latest_charge"].as_str().unwrap();

    let first = s
        .post(
            "/v1/refunds",
            &[
                ("payment_intent", pi_id),
                ("amount", "1000"),
                ("reason", "duplicate"),
                ("metadata[order_id]", "42"),
            ],
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert!(first.id().starts_with("re_"));
    assert_eq!(first.body["object"], "refund");
    assert_eq!(first.body["status"], "succeeded");
    assert_eq!(first.body["amount"], 1000);
    assert_eq!(first.body["currency"], "usd");
    assert_eq!(first.body["charge"], charge_id);
    assert_eq!(first.body["payment_intent"], pi_id);
    assert_eq!(first.body["reason"], "duplicate");
    assert_eq!(first.body["metadata"]["order_id"], "42");

    let charge = s.get(&format!("/v1/charges/{charge_id}"), &[]).await;
    assert_eq!(charge.body["amount_refunded"], 1000);
    assert_eq!(charge.body["refunded"], false);

    let too_much = s
        .post(
            "/v1/refunds",
            &[("payment_intent", pi_id), ("amount", "4000")],
        )
        .await;
    assert_eq!(too_much.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        too_much.error(),
        ("invalid_request_error", "amount_too_large")
    );
    assert_eq!(too_much.body["error"]["param"], "amount");
    assert_eq!(
        too_much.body["error"]["message"],
        "Refund amount ($40.00) is greater than unrefunded amount on charge ($39.99)"
    );

    // By charge, the rest (no amount).
    let rest = s.post("/v1/refunds", &[("charge", charge_id)]).await;
    assert_eq!(rest.status, StatusCode::OK, "{:?}", rest.body);
    assert_eq!(rest.body["amount"], 3999);
    let charge = s.get(&format!("/v1/charges/{charge_id}"), &[]).await;
    assert_eq!(charge.body["amount_refunded"], 4999);
    assert_eq!(charge.body["refunded"], true);

    let again = s.post("/v1/refunds", &[("payment_intent", pi_id)]).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        again.error(),
        ("invalid_request_error", "charge_already_refunded")
    );

    let list = s.get("/v1/refunds", &[("payment_intent", pi_id)]).await;
    assert_eq!(list.body["object"], "list");
    assert_eq!(list.body["url"], "/v1/refunds");
    let ids: Vec<&str> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![rest.id(), first.id()]);
    let by_charge = s.get("/v1/refunds", &[("charge", charge_id)]).await;
    assert_eq!(by_charge.body["data"].as_array().unwrap().len(), 2);
    let one = s.get(&format!("/v1/refunds/{}", first.id()), &[]).await;
    assert_eq!(one.body["amount"], 1000);

    for (form, code, param) in [
        (vec![], "parameter_missing", None),
        (
            vec![("payment_intent", "pi_nope")],
            "resource_missing",
            Some("payment_intent"),
        ),
        (
            vec![("charge", "ch_nope")],
            "resource_missing",
            Some("charge"),
        ),
        (
            vec![("payment_intent", pi_id), ("amount", "0")],
            "parameter_invalid_integer",
            Some("amount"),
        ),
    ] {
        let r = s.post("/v1/refunds", &form).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{form:?}");
        assert_eq!(r.error().1, code, "{form:?}");
        if let Some(p) = param {
            assert_eq!(r.body["error"]["param"], p);
        }
    }
    let pi2 = s.payment(&cus, "100").await;
    let bad_reason = s
        .post(
            "/v1/refunds",
            &[
                ("payment_intent", pi2["id"].as_str().unwrap()),
                ("reason", "because"),
            ],
        )
        .await;
    assert_eq!(bad_reason.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_reason.body["error"]["param"], "reason");
}

#[tokio::test]
async fn idempotent_replay_and_idempotency_error() {
    let s = start().await;
    let cus = s.customer("idem@example.com").await;
    let pi = s.payment(&cus, "2000").await;
    let pi_id = pi["id"].as_str().unwrap();
    let form = [("payment_intent", pi_id), ("amount", "500")];

    let first = s.post_with("/v1/refunds", &form, Some("key-1")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(!first.replayed);
    let second = s.post_with("/v1/refunds", &form, Some("key-1")).await;
    assert_eq!(second.status, StatusCode::OK);
    assert!(
        second.replayed,
        "a replay carries Idempotent-Replayed: true"
    );
    assert_eq!(second.body, first.body);

    let list = s.get("/v1/refunds", &[("payment_intent", pi_id)]).await;
    assert_eq!(
        list.body["data"].as_array().unwrap().len(),
        1,
        "no second refund"
    );

    let other = s
        .post_with(
            "/v1/refunds",
            &[("payment_intent", pi_id), ("amount", "600")],
            Some("key-1"),
        )
        .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert_eq!(other.error().0, "idempotency_error");
    assert!(other.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("same parameters"));
    let other_path = s
        .post_with("/v1/customers", &[("email", "x@y.z")], Some("key-1"))
        .await;
    assert_eq!(other_path.error().0, "idempotency_error");

    // An execution error is stored and replayed too ...
    let too_much = [("payment_intent", pi_id), ("amount", "99999")];
    let e1 = s.post_with("/v1/refunds", &too_much, Some("key-2")).await;
    assert_eq!(e1.error().1, "amount_too_large");
    let e2 = s.post_with("/v1/refunds", &too_much, Some("key-2")).await;
    assert!(e2.replayed);
    assert_eq!(e2.body, e1.body);
    assert_eq!(e2.status, StatusCode::BAD_REQUEST);

    // ... a parameter-validation failure is not: the key stays usable.
    let invalid = s
        .post_with(
            "/v1/refunds",
            &[("payment_intent", pi_id), ("amount", "x")],
            Some("key-3"),
        )
        .await;
    assert_eq!(invalid.error().1, "parameter_invalid_integer");
    let fixed = s
        .post_with(
            "/v1/refunds",
            &[("payment_intent", pi_id), ("amount", "100")],
            Some("key-3"),
        )
        .await;
    assert_eq!(fixed.status, StatusCode::OK);
    assert!(!fixed.replayed);

    // A decline (402) is an execution result: stored and replayed, no second PaymentIntent.
    let decline = [
        ("amount", "700"),
        ("currency", "usd"),
        ("confirm", "true"),
        ("payment_method", "pm_card_chargeDeclined"),
    ];
    let d1 = s
        .post_with("/v1/payment_intents", &decline, Some("key-4"))
        .await;
    assert_eq!(d1.status, StatusCode::PAYMENT_REQUIRED);
    let d2 = s
        .post_with("/v1/payment_intents", &decline, Some("key-4"))
        .await;
    assert_eq!(d2.status, StatusCode::PAYMENT_REQUIRED);
    assert!(d2.replayed);
    assert_eq!(d2.body, d1.body);
    let all = s.get("/v1/payment_intents", &[("limit", "100")]).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 2);

    let too_long = s
        .post_with("/v1/customers", &[], Some(&"k".repeat(256)))
        .await;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);

    // Creating customers idempotently.
    let c1 = s
        .post_with("/v1/customers", &[("email", "a@b.c")], Some("cust-1"))
        .await;
    let c2 = s
        .post_with("/v1/customers", &[("email", "a@b.c")], Some("cust-1"))
        .await;
    assert_eq!(c1.id(), c2.id());
    assert!(c2.replayed);
    let list = s.get("/v1/customers", &[("email", "a@b.c")]).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_charge() {
    let s = start().await;
    let cus = s.customer("race@example.com").await;
    let pi = s.payment(&cus, "1000").await;
    let pi_id = pi["id"].as_str().unwrap().to_string();
    let charge_id = pi["latest_charge"].as_str().unwrap().to_string();

    // 20 concurrent refunds of 150 against 1000: at most 6 can succeed.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = s.http.clone();
        let url = s.url("/v1/refunds");
        let key = s.key.clone();
        let pi_id = pi_id.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .form(&[("payment_intent", pi_id.as_str()), ("amount", "150")])
                .send()
                .await
                .unwrap();
            reply(r).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::BAD_REQUEST => assert_eq!(r.error().1, "amount_too_large", "{:?}", r.body),
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert_eq!(ok, 6);
    let charge = s.get(&format!("/v1/charges/{charge_id}"), &[]).await;
    assert_eq!(charge.body["amount_refunded"], 900);
    let list = s
        .get(
            "/v1/refunds",
            &[("payment_intent", pi_id.as_str()), ("limit", "100")],
        )
        .await;
    let total: i64 = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 900);

    // 20 concurrent retries of one idempotent refund: one refund, 19 replays.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = s.http.clone();
        let url = s.url("/v1/refunds");
        let key = s.key.clone();
        let pi_id = pi_id.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", "same-retry")
                .form(&[("payment_intent", pi_id.as_str()), ("amount", "100")])
                .send()
                .await
                .unwrap();
            reply(r).await
        }));
    }
    let mut ids = HashSet::new();
    let mut replays = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        ids.insert(r.id());
        replays += usize::from(r.replayed);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(replays, 19);
    let charge = s.get(&format!("/v1/charges/{charge_id}"), &[]).await;
    assert_eq!(charge.body["amount_refunded"], 1000);
    assert_eq!(charge.body["refunded"], true);
}

#[tokio::test]
async fn products_prices_and_payment_links() {
    let s = start().await;
    let product = s.post("/v1/products", &[("name", "Pro plan")]).await;
    assert_eq!(product.status, StatusCode::OK, "{:?}", product.body);
    let prod = product.id();
    assert!(prod.starts_with("prod_"));
    assert_eq!(product.body["object"], "product");
    assert_eq!(product.body["name"], "Pro plan");

    let price = s
        .post(
            "/v1/prices",
            &[
                ("product", &prod),
                ("unit_amount", "4999"),
                ("currency", "usd"),
            ],
        )
        .await;
    assert_eq!(price.status, StatusCode::OK, "{:?}", price.body);
    let price_id = price.id();
    assert!(price_id.starts_with("price_"));
    assert_eq!(price.body["unit_amount"], 4999);
    assert_eq!(price.body["type"], "one_time");
    assert_eq!(price.body["product"], prod.as_str());

    let link = s
        .post(
            "/v1/payment_links",
            &[
                ("line_items[0][price]", &price_id),
                ("line_items[0][quantity]", "2"),
                ("metadata[order]", "7"),
            ],
        )
        .await;
    assert_eq!(link.status, StatusCode::OK, "{:?}", link.body);
    assert!(link.id().starts_with("plink_"));
    assert_eq!(link.body["object"], "payment_link");
    assert_eq!(link.body["currency"], "usd");
    let url = link.body["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&s.running.base_url), "{url}");
    let page = s.http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let text = page.text().await.unwrap();
    assert!(text.contains("PAYWARDEN SANDBOX"), "{text}");
    assert!(text.contains("Total: 9998"), "{text}");

    for (path, id) in [
        ("/v1/products", &prod),
        ("/v1/prices", &price_id),
        ("/v1/payment_links", &link.id()),
    ] {
        let r = s.get(&format!("{path}/{id}"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(&r.id(), id);
        let missing = s.get(&format!("{path}/nope"), &[]).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
    }

    let no_name = s.post("/v1/products", &[]).await;
    assert_eq!(no_name.error().1, "parameter_missing");
    let no_product = s
        .post(
            "/v1/prices",
            &[
                ("product", "prod_nope"),
                ("unit_amount", "1"),
                ("currency", "usd"),
            ],
        )
        .await;
    assert_eq!(no_product.error().1, "resource_missing");
    assert_eq!(no_product.body["error"]["param"], "product");
    for (form, param, code) in [
        (vec![], "line_items", "parameter_missing"),
        (
            vec![
                ("line_items[0][price]", price_id.as_str()),
                ("line_items[0][quantity]", "0"),
            ],
            "line_items[0][quantity]",
            "parameter_invalid_integer",
        ),
        (
            vec![("line_items[0][price]", price_id.as_str())],
            "line_items[0][quantity]",
            "parameter_missing",
        ),
        (
            vec![
                ("line_items[0][price]", "price_nope"),
                ("line_items[0][quantity]", "1"),
            ],
            "line_items[0][price]",
            "resource_missing",
        ),
    ] {
        let r = s.post("/v1/payment_links", &form).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{form:?}");
        assert_eq!(r.error().1, code, "{form:?}: {:?}", r.body);
        assert_eq!(r.body["error"]["param"], param, "{form:?}");
    }
}

#[tokio::test]
async fn authentication_and_unknown_paths() {
    let s = start().await;
    let none = reply(s.http.get(s.url("/v1/customers")).send().await.unwrap()).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body["error"]["type"], "invalid_request_error");
    assert!(none.sandbox);

    let wrong = "sk_test_this_is_not_a_configured_key_9876";
    let bad = reply(
        s.http
            .get(s.url("/v1/customers"))
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let message = bad.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Invalid API Key provided: sk_test_"),
        "{message}"
    );
    assert!(message.ends_with("9876"), "{message}");
    assert!(
        !message.contains("configured"),
        "the key is masked: {message}"
    );

    // The restricted demo key and HTTP Basic (curl -u key:) both work.
    let restricted = reply(
        s.http
            .post(s.url("/v1/customers"))
            .bearer_auth(DEMO_STRIPE_RESTRICTED_KEY)
            .form(&[("email", "r@example.com")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(restricted.status, StatusCode::OK);
    let basic = reply(
        s.http
            .get(s.url("/v1/customers"))
            .basic_auth(DEMO_STRIPE_KEY, Some(""))
            .query(&[("email", "r@example.com")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(basic.status, StatusCode::OK);
    assert_eq!(basic.body["data"][0]["id"], restricted.id());

    let json_body = reply(
        s.http
            .post(s.url("/v1/customers"))
            .bearer_auth(DEMO_STRIPE_KEY)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(json_body.status, StatusCode::BAD_REQUEST);

    let unknown = s.get("/v1/balance_transactions", &[]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["type"], "invalid_request_error");
    assert!(unknown.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Unrecognized request URL"));
}

#[tokio::test]
async fn accounts_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::demo(dir.path().join("iso.sqlite"));
    config.stripe_keys.push(StripeCredential {
        account: "acct_other".into(),
        key: "sk_test_other_account_key_0001".into(),
    });
    let mut a = open(dir, config).await;
    let cus = a.customer("mine@example.com").await;
    let pi = a.payment(&cus, "100").await;
    let pi_id = pi["id"].as_str().unwrap().to_string();
    a.key = "sk_test_other_account_key_0001".into();
    assert_eq!(
        a.get(&format!("/v1/customers/{cus}"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let list = a
        .get("/v1/customers", &[("email", "mine@example.com")])
        .await;
    assert!(list.body["data"].as_array().unwrap().is_empty());
    let refund = a.post("/v1/refunds", &[("payment_intent", &pi_id)]).await;
    assert_eq!(refund.error().1, "resource_missing");

    // Idempotency keys are per account: the same key in another account is a fresh request.
    a.key = DEMO_STRIPE_KEY.into();
    let mine = a
        .post_with(
            "/v1/customers",
            &[("email", "k@example.com")],
            Some("shared-key"),
        )
        .await;
    a.key = "sk_test_other_account_key_0001".into();
    let theirs = a
        .post_with(
            "/v1/customers",
            &[("email", "k@example.com")],
            Some("shared-key"),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::OK);
    assert!(!theirs.replayed);
    assert_ne!(theirs.id(), mine.id());
}

#[tokio::test]
async fn backdated_payment_intents() {
    let s = start().await;
    let cus = s.customer("old@example.com").await;
    let old = chrono::Utc::now().timestamp() - 100 * 86_400;
    let old_s = old.to_string();
    let r = s
        .post(
            "/v1/payment_intents",
            &[
                ("customer", &cus),
                ("amount", "2500"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method", "pm_card_visa"),
                ("metadata[sandbox_created]", &old_s),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["created"], old);
    let charge = s
        .get(
            &format!("/v1/charges/{}", r.body["latest_charge"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(charge.body["created"], old);
    let newer = s.payment(&cus, "100").await;
    let list = s
        .get("/v1/payment_intents", &[("customer", cus.as_str())])
        .await;
    assert_eq!(list.body["data"][0]["id"], newer["id"]);
    assert_eq!(list.body["data"][1]["id"], r.body["id"]);
    let future = (chrono::Utc::now().timestamp() + 1000).to_string();
    let r = s
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1"),
                ("currency", "usd"),
                ("metadata[sandbox_created]", &future),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("persist.sqlite");
    let s = open(dir, EmulatorConfig::demo(path.clone())).await;
    let cus = s.customer("persist@example.com").await;
    let pi = s.payment(&cus, "3000").await;
    let pi_id = pi["id"].as_str().unwrap().to_string();
    let refund = s
        .post_with(
            "/v1/refunds",
            &[("payment_intent", &pi_id), ("amount", "1000")],
            Some("persist-key"),
        )
        .await;
    assert_eq!(refund.status, StatusCode::OK);
    let Stripe { running, dir, .. } = s;
    drop(running);

    let s = open(dir, EmulatorConfig::demo(path)).await;
    let list = s
        .get("/v1/customers", &[("email", "persist@example.com")])
        .await;
    assert_eq!(list.body["data"][0]["id"], cus.as_str());
    let charge = s
        .get(
            &format!("/v1/charges/{}", pi["latest_charge"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(charge.body["amount_refunded"], 1000);
    let replay = s
        .post_with(
            "/v1/refunds",
            &[("payment_intent", &pi_id), ("amount", "1000")],
            Some("persist-key"),
        )
        .await;
    assert!(replay.replayed);
    assert_eq!(replay.id(), refund.id());
    let _ = &s.dir;
}

#[tokio::test]
async fn opp_and_stripe_share_the_port() {
    let s = start().await;
    // OPP's paths still answer OPP's way.
    let opp = s.http.get(s.url("/v1/query")).send().await.unwrap();
    assert_eq!(opp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = opp.json().await.unwrap();
    assert_eq!(body["result"]["code"], "800.900.300");
}
