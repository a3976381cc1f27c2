//! The Stripe connector (`StripeClient`) against the emulator over real HTTP: every public
//! method, Stripe's error JSON mapped onto `StripeError`, idempotent replays, paging, keys
//! (secret, restricted, live), timeouts and unreachable hosts.

use std::collections::BTreeMap;
use std::time::Duration;

use paywarden::connectors::stripe::{
    PaymentIntentStatus, RefundReason, RefundRequest, RefundStatus, StripeClient, StripeError,
    StripeErrorType, StripeKey, MAX_PAGED_OBJECTS,
};
use paywarden_domain::{Currency, Money};
use paywarden_emulator::{
    Emulator, EmulatorConfig, RunningEmulator, DEMO_STRIPE_KEY, DEMO_STRIPE_RESTRICTED_KEY,
};
use tempfile::TempDir;

struct App {
    running: RunningEmulator,
    _dir: TempDir,
}

async fn spawn_with(config: impl FnOnce(&mut EmulatorConfig)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut c = EmulatorConfig::demo(dir.path().join("stripe.db"));
    config(&mut c);
    let emulator = Emulator::open(c).await.unwrap();
    let running = emulator
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    App { running, _dir: dir }
}

async fn spawn() -> App {
    spawn_with(|_| {}).await
}

impl App {
    fn client_with(&self, key: &str) -> StripeClient {
        StripeClient::new(
            &self.running.base_url,
            StripeKey::parse(key, false).unwrap(),
            Duration::from_secs(10),
        )
        .unwrap()
    }

    fn client(&self) -> StripeClient {
        self.client_with(DEMO_STRIPE_KEY)
    }
}

fn usd(minor: i64) -> Money {
    Money::from_minor(minor, Currency::USD).unwrap()
}

fn no_metadata() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn refund(pi: &str, amount: Option<i64>) -> RefundRequest {
    RefundRequest {
        payment_intent: pi.to_string(),
        amount,
        reason: Some(RefundReason::Duplicate),
        metadata: BTreeMap::from([("order_id".to_string(), "42".to_string())]),
    }
}

#[tokio::test]
async fn customers_by_email_search_and_retrieve() {
    let app = spawn().await;
    let stripe = app.client();
    let meta = BTreeMap::from([("db_id".to_string(), "7".to_string())]);
    let sarah = stripe
        .create_customer(
            "sarah@example.com",
            Some("Sarah Lee"),
            &meta,
            Some("seed-sarah"),
        )
        .await
        .unwrap();
    assert!(sarah.id.starts_with("cus_"));
    assert_eq!(sarah.email.as_deref(), Some("sarah@example.com"));
    assert_eq!(sarah.name.as_deref(), Some("Sarah Lee"));
    // The seed retried: same customer, not a second one.
    let again = stripe
        .create_customer(
            "sarah@example.com",
            Some("Sarah Lee"),
            &meta,
            Some("seed-sarah"),
        )
        .await
        .unwrap();
    assert_eq!(again, sarah);
    stripe
        .create_customer("james@example.com", None, &no_metadata(), None)
        .await
        .unwrap();

    let found = stripe
        .customers_by_email("sarah@example.com")
        .await
        .unwrap();
    assert_eq!(found, vec![sarah.clone()]);
    assert!(stripe
        .customers_by_email("nobody@example.com")
        .await
        .unwrap()
        .is_empty());
    assert!(
        stripe
            .customers_by_email("SARAH@example.com")
            .await
            .unwrap()
            .is_empty(),
        "the list filter is exact"
    );

    let page = stripe
        .search_customers("email:'SARAH@example.com'")
        .await
        .unwrap();
    assert_eq!(page.data, vec![sarah.clone()]);
    assert!(!page.has_more);
    match stripe.search_customers("email~'sarah'").await {
        Err(StripeError::Api {
            status: 400,
            kind: StripeErrorType::InvalidRequestError,
            param,
            ..
        }) => assert_eq!(param.as_deref(), Some("query")),
        other => panic!("{other:?}"),
    }

    assert_eq!(stripe.customer(&sarah.id).await.unwrap(), sarah);
    match stripe.customer("cus_missing").await {
        Err(StripeError::NotFound { param, message, .. }) => {
            assert_eq!(param.as_deref(), Some("id"));
            assert!(message.contains("cus_missing"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A crafted id cannot escape its path segment.
    assert!(matches!(
        stripe.customer("../payment_intents").await,
        Err(StripeError::NotFound { .. })
    ));
}

#[tokio::test]
async fn payment_intents_charges_and_paging() {
    let app = spawn().await;
    let stripe = app.client();
    let cus = stripe
        .create_customer("pager@example.com", None, &no_metadata(), None)
        .await
        .unwrap();
    let other = stripe
        .create_customer("other@example.com", None, &no_metadata(), None)
        .await
        .unwrap();
    let meta = BTreeMap::from([("order_id".to_string(), "1".to_string())]);
    let first = stripe
        .create_payment_intent(&cus.id, usd(4999), &meta, Some("pi-seed-1"))
        .await
        .unwrap();
    assert!(first.id.starts_with("pi_"));
    assert_eq!(first.status, PaymentIntentStatus::Succeeded);
    assert_eq!(first.amount, usd(4999));
    assert_eq!(first.amount_received, usd(4999));
    assert_eq!(first.customer.as_deref(), Some(cus.id.as_str()));
    assert_eq!(first.metadata, meta);
    let retried = stripe
        .create_payment_intent(&cus.id, usd(4999), &meta, Some("pi-seed-1"))
        .await
        .unwrap();
    assert_eq!(
        retried, first,
        "an idempotent retry creates no second payment"
    );

    for i in 0..104 {
        stripe
            .create_payment_intent(&cus.id, usd(100 + i), &no_metadata(), None)
            .await
            .unwrap();
    }
    stripe
        .create_payment_intent(&other.id, usd(1), &no_metadata(), None)
        .await
        .unwrap();

    let page = stripe
        .payment_intents(Some(&cus.id), 3, None)
        .await
        .unwrap();
    assert_eq!(page.data.len(), 3);
    assert!(page.has_more);
    assert_eq!(page.data[0].amount, usd(203), "newest first");
    let next = stripe
        .payment_intents(Some(&cus.id), 3, Some(&page.data[2].id))
        .await
        .unwrap();
    assert_eq!(next.data[0].amount, usd(200));

    let all = stripe.all_payment_intents(Some(&cus.id)).await.unwrap();
    assert_eq!(all.data.len(), 105, "paged past Stripe's 100 per page");
    assert!(!all.has_more);
    assert_eq!(all.data.last().unwrap().id, first.id);
    let everyone = stripe.all_payment_intents(None).await.unwrap();
    assert_eq!(everyone.data.len(), 106);
    const { assert!(MAX_PAGED_OBJECTS >= 106) };

    for bad in [0u8, 101] {
        assert!(matches!(
            stripe.payment_intents(None, bad, None).await,
            Err(StripeError::InvalidArgument { .. })
        ));
    }
    match stripe.payment_intents(None, 10, Some("pi_unknown")).await {
        Err(StripeError::NotFound { param, .. }) => {
            assert_eq!(param.as_deref(), Some("starting_after"))
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(stripe.payment_intent(&first.id).await.unwrap(), first);
    assert!(matches!(
        stripe.payment_intent("pi_unknown").await,
        Err(StripeError::NotFound { .. })
    ));
    let charge_id = first.latest_charge.clone().unwrap();
    let charge = stripe.charge(&charge_id).await.unwrap();
    assert!(charge.id.starts_with("ch_"));
    assert_eq!(charge.amount, usd(4999));
    assert_eq!(charge.amount_refunded, usd(0));
    assert!(!charge.refunded);
    assert_eq!(charge.payment_intent.as_deref(), Some(first.id.as_str()));
    assert!(matches!(
        stripe.charge("ch_unknown").await,
        Err(StripeError::NotFound { .. })
    ));

    // Bad arguments are refused before any request.
    assert!(matches!(
        stripe
            .create_payment_intent(&cus.id, usd(0), &no_metadata(), None)
            .await,
        Err(StripeError::InvalidArgument { .. })
    ));
    match stripe
        .create_payment_intent("cus_unknown", usd(5), &no_metadata(), None)
        .await
    {
        Err(StripeError::NotFound { param, .. }) => assert_eq!(param.as_deref(), Some("customer")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn refunds_replays_and_refusals() {
    let app = spawn().await;
    let stripe = app.client();
    let cus = stripe
        .create_customer("refund@example.com", None, &no_metadata(), None)
        .await
        .unwrap();
    let pi = stripe
        .create_payment_intent(&cus.id, usd(4999), &no_metadata(), None)
        .await
        .unwrap();

    let (first, replayed) = stripe
        .create_refund(&refund(&pi.id, Some(1000)), "refund-order-42-1")
        .await
        .unwrap();
    assert!(first.id.starts_with("re_"));
    assert!(!replayed.replayed);
    assert!(replayed.request_id.as_deref().unwrap().starts_with("req_"));
    assert_eq!(first.amount, usd(1000));
    assert_eq!(first.status, RefundStatus::Succeeded);
    assert_eq!(first.payment_intent.as_deref(), Some(pi.id.as_str()));
    assert_eq!(first.charge, pi.latest_charge);
    assert_eq!(first.reason, Some(RefundReason::Duplicate));
    assert_eq!(
        first.metadata.get("order_id").map(String::as_str),
        Some("42")
    );

    // A retry with the same key: the same refund, marked replayed, no money moved again.
    let (again, replayed) = stripe
        .create_refund(&refund(&pi.id, Some(1000)), "refund-order-42-1")
        .await
        .unwrap();
    assert_eq!(again, first);
    assert!(replayed.replayed);
    // A second, legitimate partial refund of the same amount with its own key.
    let (second, _) = stripe
        .create_refund(&refund(&pi.id, Some(1000)), "refund-order-42-2")
        .await
        .unwrap();
    assert_ne!(second.id, first.id);
    let charge = stripe
        .charge(pi.latest_charge.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(charge.amount_refunded, usd(2000));

    // The same key with other parameters.
    match stripe
        .create_refund(&refund(&pi.id, Some(5)), "refund-order-42-1")
        .await
    {
        Err(StripeError::Api {
            status: 400,
            kind: StripeErrorType::IdempotencyError,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }

    // Beyond the remainder.
    match stripe
        .create_refund(&refund(&pi.id, Some(3000)), "too-much")
        .await
    {
        Err(StripeError::Api {
            status: 400,
            kind: StripeErrorType::InvalidRequestError,
            code,
            message,
            param,
            ..
        }) => {
            assert_eq!(code.as_deref(), Some("amount_too_large"));
            assert_eq!(param.as_deref(), Some("amount"));
            assert!(message.contains("($29.99)"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Everything left (no amount), then nothing is left.
    let (rest, _) = stripe
        .create_refund(&refund(&pi.id, None), "rest")
        .await
        .unwrap();
    assert_eq!(rest.amount, usd(2999));
    let charge = stripe
        .charge(pi.latest_charge.as_deref().unwrap())
        .await
        .unwrap();
    assert!(charge.refunded);
    assert_eq!(charge.amount_refunded, charge.amount);
    match stripe.create_refund(&refund(&pi.id, None), "again").await {
        Err(StripeError::Api { code, .. }) => {
            assert_eq!(code.as_deref(), Some("charge_already_refunded"))
        }
        other => panic!("{other:?}"),
    }
    match stripe
        .create_refund(&refund("pi_unknown", None), "unknown")
        .await
    {
        Err(StripeError::NotFound { param, .. }) => {
            assert_eq!(param.as_deref(), Some("payment_intent"))
        }
        other => panic!("{other:?}"),
    }

    let refunds = stripe.refunds_for(&pi.id).await.unwrap();
    let ids: Vec<&str> = refunds.data.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec![&rest.id, &second.id, &first.id]);
    assert!(!refunds.has_more);
    assert!(stripe
        .refunds_for("pi_unknown")
        .await
        .unwrap()
        .data
        .is_empty());

    // Refused before sending.
    for (request, key) in [
        (refund(&pi.id, Some(0)), "k"),
        (refund(&pi.id, Some(-5)), "k"),
        (
            RefundRequest {
                reason: Some(RefundReason::ExpiredUncapturedCharge),
                ..refund(&pi.id, None)
            },
            "k",
        ),
        (refund(&pi.id, None), ""),
        (refund(&pi.id, None), "has space"),
    ] {
        assert!(
            matches!(
                stripe.create_refund(&request, key).await,
                Err(StripeError::InvalidArgument { .. })
            ),
            "{request:?} {key:?}"
        );
    }
}

#[tokio::test]
async fn products_prices_and_payment_links() {
    let app = spawn().await;
    let stripe = app.client();
    let product = stripe
        .create_product("Annual plan", Some("prod-1"))
        .await
        .unwrap();
    assert!(product.id.starts_with("prod_"));
    assert_eq!(product.name, "Annual plan");
    let price = stripe
        .create_price(&product.id, usd(4999), None)
        .await
        .unwrap();
    assert!(price.id.starts_with("price_"));
    assert_eq!(price.product, product.id);
    assert_eq!(price.unit_amount, usd(4999));
    let meta = BTreeMap::from([("order_id".to_string(), "9".to_string())]);
    let link = stripe
        .create_payment_link(&[(&price.id, 2)], &meta, Some("link-1"))
        .await
        .unwrap();
    assert!(link.id.starts_with("plink_"));
    assert!(link.url.starts_with(&app.running.base_url), "{}", link.url);
    let replay = stripe
        .create_payment_link(&[(&price.id, 2)], &meta, Some("link-1"))
        .await
        .unwrap();
    assert_eq!(replay, link);

    assert!(matches!(
        stripe.create_payment_link(&[], &meta, None).await,
        Err(StripeError::InvalidArgument { .. })
    ));
    assert!(matches!(
        stripe
            .create_payment_link(&[(&price.id, 0)], &meta, None)
            .await,
        Err(StripeError::InvalidArgument { .. })
    ));
    match stripe
        .create_payment_link(&[("price_unknown", 1)], &meta, None)
        .await
    {
        Err(StripeError::NotFound { param, .. }) => {
            assert_eq!(param.as_deref(), Some("line_items[0][price]"))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        stripe.create_price("prod_unknown", usd(1), None).await,
        Err(StripeError::NotFound { .. })
    ));
    let isk = Currency::from_code("ISK").unwrap();
    assert!(matches!(
        stripe
            .create_price(&product.id, Money::from_minor(100, isk).unwrap(), None)
            .await,
        Err(StripeError::InvalidArgument { .. })
    ));
}

#[tokio::test]
async fn keys_restricted_invalid_and_live() {
    let app = spawn().await;
    // The restricted demo key works for what the ops toolset does.
    let restricted = app.client_with(DEMO_STRIPE_RESTRICTED_KEY);
    assert!(restricted.key().is_restricted());
    let cus = restricted
        .create_customer("rk@example.com", None, &no_metadata(), None)
        .await
        .unwrap();
    let pi = restricted
        .create_payment_intent(&cus.id, usd(500), &no_metadata(), None)
        .await
        .unwrap();
    let (r, _) = restricted
        .create_refund(&refund(&pi.id, Some(100)), "rk-refund")
        .await
        .unwrap();
    assert_eq!(r.amount, usd(100));
    // Both demo keys belong to one account.
    assert_eq!(
        app.client()
            .customers_by_email("rk@example.com")
            .await
            .unwrap(),
        vec![cus]
    );

    // A well-formed test key the emulator does not know: HTTP 401, masked, never echoed.
    let unknown = "sk_test_not_configured_anywhere_1234";
    let client = app.client_with(unknown);
    match client.customers_by_email("rk@example.com").await {
        Err(e @ StripeError::Authentication { .. }) => {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(unknown), "{shown}");
            assert!(shown.contains("Invalid API Key provided"), "{shown}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{client:?}").contains(unknown));

    // Live keys are refused unless explicitly allowed; allowed, the emulator refuses them.
    let live = "sk_live_51PaywardenNotARealKey0000";
    assert!(matches!(
        StripeKey::parse(live, false),
        Err(StripeError::LiveKeyRefused { .. })
    ));
    assert!(matches!(
        StripeKey::parse("rk_live_51PaywardenNotARealKey0000", false),
        Err(StripeError::LiveKeyRefused { .. })
    ));
    let key = StripeKey::parse(live, true).unwrap();
    assert!(key.is_live());
    let client = StripeClient::new(&app.running.base_url, key, Duration::from_secs(5)).unwrap();
    assert!(matches!(
        client.customer("cus_x").await,
        Err(StripeError::Authentication { .. })
    ));
    assert!(matches!(
        StripeKey::parse("pk_test_51PaywardenPublishable", false),
        Err(StripeError::InvalidKey { .. })
    ));
}

#[tokio::test]
async fn timeouts_and_unreachable_hosts() {
    let app = spawn_with(|c| c.latency = Duration::from_millis(600)).await;
    let key = StripeKey::parse(DEMO_STRIPE_KEY, false).unwrap();
    let slow = StripeClient::new(
        &app.running.base_url,
        key.clone(),
        Duration::from_millis(100),
    )
    .unwrap();
    assert_eq!(slow.timeout(), Duration::from_millis(100));
    assert_eq!(slow.base_url(), app.running.base_url);
    match slow.customers_by_email("x@example.com").await {
        Err(StripeError::Timeout(d)) => assert_eq!(d, Duration::from_millis(100)),
        other => panic!("{other:?}"),
    }

    // A write whose answer comes late: timed out for the caller, done in the emulator; the
    // retry with the same Idempotency-Key gets the stored result.
    let late = spawn_with(|c| c.write_latency = Duration::from_millis(600)).await;
    let fast = StripeClient::new(
        &late.running.base_url,
        key.clone(),
        Duration::from_millis(200),
    )
    .unwrap();
    let patient = late.client();
    let cus = patient
        .create_customer("late@example.com", None, &no_metadata(), None)
        .await
        .unwrap();
    let pi = patient
        .create_payment_intent(&cus.id, usd(1000), &no_metadata(), None)
        .await
        .unwrap();
    assert!(matches!(
        fast.create_refund(&refund(&pi.id, Some(400)), "late-1")
            .await,
        Err(StripeError::Timeout(_))
    ));
    let (r, replayed) = patient
        .create_refund(&refund(&pi.id, Some(400)), "late-1")
        .await
        .unwrap();
    assert!(replayed.replayed, "the timed-out refund happened once");
    assert_eq!(r.amount, usd(400));
    let charge = patient
        .charge(pi.latest_charge.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(charge.amount_refunded, usd(400));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gone = StripeClient::new(&url, key, Duration::from_secs(2)).unwrap();
    match gone.payment_intent("pi_x").await {
        Err(StripeError::Unreachable { base_url, reason }) => {
            assert_eq!(base_url, url);
            assert!(!reason.contains(DEMO_STRIPE_KEY));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn concurrent_refunds_through_the_connector_never_exceed_the_charge() {
    let app = spawn().await;
    let stripe = app.client();
    let cus = stripe
        .create_customer("race@example.com", None, &no_metadata(), None)
        .await
        .unwrap();
    let pi = stripe
        .create_payment_intent(&cus.id, usd(1000), &no_metadata(), None)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let stripe = stripe.clone();
        let pi = pi.id.clone();
        tasks.push(tokio::spawn(async move {
            stripe
                .create_refund(&refund(&pi, Some(300)), &format!("race-{i}"))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StripeError::Api { code, .. }) => {
                assert_eq!(code.as_deref(), Some("amount_too_large"))
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(ok, 3);
    let charge = stripe
        .charge(pi.latest_charge.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(charge.amount_refunded, usd(900));
}

#[tokio::test]
async fn empty_filters_and_path_tricks_are_refused_before_sending() {
    let app = spawn().await;
    let stripe = app.client();
    let plus = stripe
        .create_customer("sarah+orders@example.com", None, &no_metadata(), None)
        .await
        .unwrap();
    stripe
        .create_customer("sarah orders@example.com", None, &no_metadata(), None)
        .await
        .unwrap_err();
    assert_eq!(
        stripe
            .customers_by_email("sarah+orders@example.com")
            .await
            .unwrap(),
        vec![plus.clone()],
        "`+` survives the query encoding"
    );
    let pi = stripe
        .create_payment_intent(&plus.id, usd(100), &no_metadata(), None)
        .await
        .unwrap();

    // An empty filter would list the whole account: refused, never sent.
    let invalid = |r: Result<_, StripeError>| matches!(r, Err(StripeError::InvalidArgument { .. }));
    assert!(invalid(stripe.customers_by_email("").await.map(|_| ())));
    assert!(invalid(stripe.customers_by_email(" ").await.map(|_| ())));
    assert!(invalid(stripe.search_customers("").await.map(|_| ())));
    assert!(invalid(
        stripe.payment_intents(Some(""), 10, None).await.map(|_| ())
    ));
    assert!(invalid(stripe.refunds_for("").await.map(|_| ())));
    assert!(invalid(
        stripe
            .create_refund(&refund("", Some(1)), "empty-pi")
            .await
            .map(|_| ())
    ));
    assert!(invalid(
        stripe
            .create_payment_intent("", usd(100), &no_metadata(), None)
            .await
            .map(|_| ())
    ));
    // `/v1/customers/`, `/v1/payment_intents/..`: URL normalisation would reach another endpoint.
    for id in ["", ".", ".."] {
        assert!(invalid(stripe.customer(id).await.map(|_| ())), "{id:?}");
        assert!(
            invalid(stripe.payment_intent(id).await.map(|_| ())),
            "{id:?}"
        );
        assert!(invalid(stripe.charge(id).await.map(|_| ())), "{id:?}");
    }
    assert!(matches!(
        stripe.payment_intent(&format!("{}/../..", pi.id)).await,
        Err(StripeError::NotFound { .. })
    ));
    // Nothing was refunded along the way.
    let charge = stripe
        .charge(pi.latest_charge.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(charge.amount_refunded, usd(0));
}
