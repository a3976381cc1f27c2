//! The ops toolset (Stripe + the orders database) end to end: the real server on port 0, the
//! Stripe emulator behind it, rmcp's client over Streamable HTTP.

mod common;

use common::*;
use indicatif::ProgressBar;
use paywarden::connectors::stripe::{StripeClient, StripeKey};
use paywarden_emulator::{DEMO_ENTITY_ID, DEMO_STRIPE_KEY, SECOND_ENTITY_ID, SECOND_TOKEN};
use serde_json::json;
use std::time::Duration;

const SARAH: &str = "sarah@example.com";

fn stripe(app: &TestApp) -> StripeClient {
    StripeClient::new(
        app.emulator_url.as_deref().expect("emulator"),
        StripeKey::parse(DEMO_STRIPE_KEY, false).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap()
}

/// paywarden with the emulator and the ops demo data (the seed's five customers).
async fn ops_app(adjust: impl FnOnce(&mut paywarden::config::Config)) -> TestApp {
    let app = spawn_app_with(adjust).await;
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

/// Sarah's two $49.99 charges (the seed's duplicate), newest first.
async fn sarahs_duplicates(client: &Client) -> (String, String) {
    let listed = call_ok(
        client,
        "list_payments",
        json!({"email": SARAH, "limit": 10}),
    )
    .await;
    let dupes: Vec<String> = listed["payments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["amount_cents"] == 4999)
        .map(|p| p["payment_intent_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dupes.len(), 2, "{listed}");
    (dupes[0].clone(), dupes[1].clone())
}

/// Preview, then confirm: returns the executed structured result.
async fn refund_confirmed(client: &Client, args: serde_json::Value) -> serde_json::Value {
    let preview = call_ok(client, "issue_refund", args.clone()).await;
    assert_eq!(preview["status"], "confirmation_required", "{preview}");
    let token = preview["confirmation"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut confirmed = args;
    confirmed["confirmation_token"] = json!(token);
    let done = call_ok(client, "issue_refund", confirmed).await;
    assert_eq!(done["status"], "executed", "{done}");
    done
}

#[tokio::test]
async fn the_seeds_demo_looks_up_previews_confirms_and_records_the_refund() {
    let app = ops_app(|c| c.safety.policy_file = None).await;
    let client = app.client("/mcp", Era::Legacy).await;

    let profile = call_ok(&client, "lookup_customer", json!({"email": SARAH})).await;
    assert_eq!(profile["customer"]["name"], "Sarah Test");
    assert_eq!(profile["order_count"], 3);
    assert_eq!(profile["stripe"]["status"], "ok", "{profile}");
    assert_eq!(
        profile["lifetime_value"][0]["amount_cents"],
        4999 + 4999 + 2999
    );

    let (newest, _older) = sarahs_duplicates(&client).await;
    let args =
        json!({"email": SARAH, "charge_id": newest, "reason": "duplicate", "confirmed": true});

    // The model's `confirmed: true` is a preview, not a refund.
    let preview = call_ok(&client, "issue_refund", args.clone()).await;
    assert_eq!(preview["status"], "confirmation_required", "{preview}");
    assert_eq!(preview["confirmation"]["preview"]["amountMinor"], 4999);
    assert_eq!(preview["confirmation"]["preview"]["currency"], "USD");
    assert!(stripe(&app)
        .refunds_for(&newest)
        .await
        .unwrap()
        .data
        .is_empty());

    let token = preview["confirmation"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut confirmed = args.clone();
    confirmed["confirmation_token"] = json!(token);
    let done = call_ok(&client, "issue_refund", confirmed.clone()).await;
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(done["refund"]["amount_cents"], 4999);
    assert_eq!(done["refund"]["status"], "succeeded");
    assert_eq!(done["order"]["status"], "refunded");
    // refund_log's `refunded_by` keeps the seed's meaning; who called is in the audit log.
    assert_eq!(done["refunded_by"], "ai-assistant");

    // In Stripe (the emulator)...
    let refunds = stripe(&app).refunds_for(&newest).await.unwrap().data;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].id, done["refund"]["stripe_refund_id"]);
    // ...in the orders database...
    let order = app
        .store
        .order_by_charge(DEMO_ENTITY_ID, &newest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.status, paywarden::store::OrderStatus::Refunded);
    let log = app
        .store
        .refund_log(DEMO_ENTITY_ID, &order.id)
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].reason, "duplicate");
    assert_eq!(log[0].refunded_by, "ai-assistant");
    assert_eq!(log[0].id, done["refund_log_id"]);
    // ...and in the audit log.
    let audit = app.store.audit_records(None).await.unwrap();
    let refund_rows: Vec<_> = audit
        .iter()
        .filter(|r| r.entry.tool == "issue_refund")
        .collect();
    assert!(refund_rows
        .iter()
        .any(|r| r.entry.outcome == "confirmation_required"));
    assert!(refund_rows.iter().any(|r| r.entry.outcome == "ok"
        && r.entry.transaction_id.as_deref() == Some(refunds[0].id.as_str())));

    // A retry of the confirmed call replays; Stripe still has one refund.
    let again = call_ok(&client, "issue_refund", confirmed).await;
    assert_eq!(again["idempotentReplay"], true, "{again}");
    assert_eq!(
        stripe(&app).refunds_for(&newest).await.unwrap().data.len(),
        1
    );

    // The order history shows it.
    let history = call_ok(&client, "get_order_history", json!({"email": SARAH})).await;
    let entry = history["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["stripe_charge_id"] == newest.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["status"], "refunded");
    assert_eq!(entry["refunds"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn two_partial_refunds_of_one_order_both_work_and_a_retry_duplicates_neither() {
    let app = ops_app(|_| {}).await;
    let client = app.client("/mcp", Era::Stateless).await;
    let (_, older) = sarahs_duplicates(&client).await;
    let args =
        json!({"email": SARAH, "charge_id": older, "amount_cents": 1000, "reason": "partial"});
    let first = refund_confirmed(&client, args.clone()).await;
    let second = refund_confirmed(&client, args.clone()).await;
    assert_ne!(
        first["refund"]["stripe_refund_id"],
        second["refund"]["stripe_refund_id"]
    );
    assert_eq!(second["order"]["status"], "partially_refunded");
    assert_eq!(second["order"]["refunded_cents"], 2000);
    assert_eq!(second["order"]["refundable_cents"], 2999);
    assert_eq!(
        stripe(&app).refunds_for(&older).await.unwrap().data.len(),
        2
    );

    // A caller's own idempotency key: the retry replays, no third refund.
    let keyed = json!({"email": SARAH, "charge_id": older, "amount_cents": 500, "idempotency_key": "ticket-4711"});
    let done = refund_confirmed(&client, keyed.clone()).await;
    let mut retry = keyed;
    retry["confirmation_token"] = json!("pwc_any_token_the_key_replays_first");
    let replay = call_ok(&client, "issue_refund", retry).await;
    assert_eq!(replay["idempotentReplay"], true);
    assert_eq!(replay["refund"], done["refund"]);
    assert_eq!(
        stripe(&app).refunds_for(&older).await.unwrap().data.len(),
        3
    );
}

#[tokio::test]
async fn bad_refunds_are_refused_and_change_nothing() {
    let app = ops_app(|_| {}).await;
    let client = app.client("/mcp", Era::Legacy).await;
    let (newest, older) = sarahs_duplicates(&client).await;

    let err = call_err(
        &client,
        "issue_refund",
        json!({"email": "nobody@example.com"}),
    )
    .await;
    assert!(err.contains("No customer found"), "{err}");

    // A charge of another customer than the one named.
    let james = call_ok(
        &client,
        "list_payments",
        json!({"email": "james@example.com"}),
    )
    .await;
    let james_charge = james["payments"][0]["payment_intent_id"]
        .as_str()
        .unwrap()
        .to_string();
    let err = call_err(
        &client,
        "issue_refund",
        json!({"email": SARAH, "charge_id": james_charge}),
    )
    .await;
    assert!(err.contains("belongs to another customer"), "{err}");

    // Unknown charge.
    let err = call_err(
        &client,
        "issue_refund",
        json!({"email": SARAH, "charge_id": "pi_doesnotexist"}),
    )
    .await;
    assert!(err.contains("No order found"), "{err}");

    // Beyond the refundable remainder: the error names it.
    let err = call_err(
        &client,
        "issue_refund",
        json!({"email": SARAH, "charge_id": newest, "amount_cents": 5000}),
    )
    .await;
    assert!(
        err.contains("refundable remainder") && err.contains("4999") && err.contains("49.99"),
        "{err}"
    );

    // Older than 90 days: the error names the rule.
    let bob = call_ok(
        &client,
        "get_order_history",
        json!({"email": "bob@example.com"}),
    )
    .await;
    let old = bob["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["age_days"].as_i64().unwrap() > 90)
        .expect("the seed's old order")["stripe_charge_id"]
        .as_str()
        .unwrap()
        .to_string();
    let err = call_err(
        &client,
        "issue_refund",
        json!({"email": "bob@example.com", "charge_id": old}),
    )
    .await;
    assert!(err.contains("90-day refund rule"), "{err}");

    // An already refunded order.
    refund_confirmed(&client, json!({"email": SARAH, "charge_id": older})).await;
    let err = call_err(
        &client,
        "issue_refund",
        json!({"email": SARAH, "charge_id": older}),
    )
    .await;
    assert!(err.contains("already refunded"), "{err}");

    // A made-up token moves nothing.
    let err = call_err(
        &client,
        "issue_refund",
        json!({"email": SARAH, "charge_id": newest, "confirmation_token": "pwc_made_up"}),
    )
    .await;
    assert!(err.contains("refused"), "{err}");

    // Malformed arguments are invalid params.
    call_invalid(&client, "issue_refund", json!({"email": "not-an-email"})).await;
    call_invalid(
        &client,
        "issue_refund",
        json!({"email": SARAH, "amount_cents": 0}),
    )
    .await;
    call_invalid(
        &client,
        "issue_refund",
        json!({"email": SARAH, "amount_cents": "10.00"}),
    )
    .await;
    call_invalid(
        &client,
        "issue_refund",
        json!({"email": SARAH, "surprise": 1}),
    )
    .await;

    // Nothing moved on `newest`: no refund at Stripe, no refund_log row.
    assert!(stripe(&app)
        .refunds_for(&newest)
        .await
        .unwrap()
        .data
        .is_empty());
    let order = app
        .store
        .order_by_charge(DEMO_ENTITY_ID, &newest)
        .await
        .unwrap()
        .unwrap();
    assert!(app
        .store
        .refund_log(DEMO_ENTITY_ID, &order.id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(order.status, paywarden::store::OrderStatus::Paid);
}

#[tokio::test]
async fn payment_links_revenue_and_review_flags() {
    let app = ops_app(|_| {}).await;
    let client = app.client("/mcp", Era::Legacy).await;

    let link = call_ok(
        &client,
        "create_payment_link",
        json!({"amount_cents": 4999, "description": "Pro plan", "quantity": 2}),
    )
    .await;
    assert!(link["url"].as_str().unwrap().starts_with("http"), "{link}");
    assert!(link["payment_link_id"]
        .as_str()
        .unwrap()
        .starts_with("plink_"));
    assert_eq!(link["amount"], "49.99");
    let keyed = json!({"amount_cents": 1500, "description": "Gift card", "currency": "eur", "idempotency_key": "link-1"});
    let first = call_ok(&client, "create_payment_link", keyed.clone()).await;
    let again = call_ok(&client, "create_payment_link", keyed).await;
    assert_eq!(first["url"], again["url"]);
    assert_eq!(first["currency"], "EUR");
    // No amount, a zero amount, a zero quantity, an unknown currency: invalid params.
    call_invalid(&client, "create_payment_link", json!({"description": "x"})).await;
    call_invalid(
        &client,
        "create_payment_link",
        json!({"amount_cents": 0, "description": "x"}),
    )
    .await;
    call_invalid(
        &client,
        "create_payment_link",
        json!({"amount_cents": 100, "description": "x", "quantity": 0}),
    )
    .await;
    call_invalid(
        &client,
        "create_payment_link",
        json!({"amount_cents": 100, "description": "x", "currency": "XYZ"}),
    )
    .await;
    call_invalid(
        &client,
        "create_payment_link",
        json!({"amount_cents": 100, "description": "  "}),
    )
    .await;

    let today = chrono::Utc::now().date_naive();
    let start = (today - chrono::Duration::days(200)).to_string();
    let revenue = call_ok(
        &client,
        "revenue_summary",
        json!({"start_date": start, "end_date": today.to_string()}),
    )
    .await;
    let total = &revenue["totals"][0];
    assert_eq!(total["currency"], "USD");
    assert_eq!(total["orders"], 13);
    let seeded: i64 = paywarden::seed_ops::DEMO_CUSTOMERS
        .iter()
        .flat_map(|(_, _, c)| c.iter().map(|(cents, _)| *cents))
        .sum();
    assert_eq!(total["net_cents"], seeded);
    call_invalid(
        &client,
        "revenue_summary",
        json!({"start_date": "2026-02-30", "end_date": "2026-03-01"}),
    )
    .await;
    call_invalid(
        &client,
        "revenue_summary",
        json!({"start_date": "2026-03-02", "end_date": "2026-03-01"}),
    )
    .await;

    let (newest, _) = sarahs_duplicates(&client).await;
    let flag = call_ok(
        &client,
        "flag_for_review",
        json!({"charge_id": newest, "note": "customer says duplicate"}),
    )
    .await;
    assert_eq!(flag["status"], "open");
    assert_eq!(
        app.store.review_flags(DEMO_ENTITY_ID).await.unwrap().len(),
        1
    );
    let err = call_err(
        &client,
        "flag_for_review",
        json!({"charge_id": "pi_unknown", "note": "x"}),
    )
    .await;
    assert!(err.contains("No order found"), "{err}");
    call_invalid(
        &client,
        "flag_for_review",
        json!({"charge_id": newest, "note": ""}),
    )
    .await;
}

#[tokio::test]
async fn entities_are_isolated_and_unknown_tokens_refused() {
    let app = ops_app(|_| {}).await;
    let second = app
        .client_as("/mcp", Era::Legacy, SECOND_ENTITY_ID, SECOND_TOKEN)
        .await;
    let err = call_err(&second, "lookup_customer", json!({"email": SARAH})).await;
    assert!(err.contains("No customer found"), "{err}");
    let err = call_err(&second, "issue_refund", json!({"email": SARAH})).await;
    assert!(err.contains("No customer found"), "{err}");

    // An unknown token is refused before any tool, resource or session (HTTP 401).
    let err = try_connect_client(
        &app.base_url,
        "/mcp",
        Era::Legacy,
        DEMO_ENTITY_ID,
        "not-the-token",
    )
    .await
    .expect_err("an unknown token is refused");
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("not-the-token"));
    // The OPP compat endpoint does not serve the ops tools.
    let opp = app.client("/agentic/v1/mcp", Era::Legacy).await;
    let tools = opp.list_all_tools().await.unwrap();
    assert!(!tools.iter().any(|t| t.name == "issue_refund"));
}

#[tokio::test]
async fn a_person_approves_a_large_refund_and_it_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "default = \"confirm\"\n[[rule]]\nname = \"refunds-need-a-person\"\nwhen = \"tool == 'issue_refund'\"\naction = \"human\"\nmessage = \"A person decides refunds.\"\n",
    )
    .unwrap();
    let app = ops_app(|c| c.safety.policy_file = Some(policy)).await;
    let client = app.client("/mcp", Era::Legacy).await;
    let (newest, _) = sarahs_duplicates(&client).await;
    let args = json!({"email": SARAH, "charge_id": newest, "reason": "duplicate"});
    let pending = call_ok(&client, "issue_refund", args.clone()).await;
    assert_eq!(pending["status"], "approval_pending", "{pending}");
    let id = pending["approval"]["id"].as_str().unwrap().to_string();
    // The model cannot use the approval before a person decides.
    let mut with_id = args.clone();
    with_id["approval_id"] = json!(id);
    let err = call_err(&client, "issue_refund", with_id.clone()).await;
    assert!(err.contains("refused"), "{err}");
    app.store
        .decide_approval(&id, true, "alice", Some("ok"))
        .await
        .unwrap();
    let done = call_ok(&client, "get_approval", json!({"approvalId": id})).await;
    assert_eq!(done["status"], "executed", "{done}");
    let again = call_ok(&client, "get_approval", json!({"approvalId": id})).await;
    assert_eq!(again["refund"], done["refund"]);
    assert_eq!(
        stripe(&app).refunds_for(&newest).await.unwrap().data.len(),
        1
    );
}

#[tokio::test]
async fn resources_prompts_and_completions() {
    use rmcp::model::{
        ArgumentInfo, CompleteRequestParams, GetPromptRequestParams, ReadResourceRequestParams,
        Reference,
    };
    let app = ops_app(|_| {}).await;
    let client = app.client("/mcp", Era::Legacy).await;
    let templates = client.list_all_resource_templates().await.unwrap();
    let uris: Vec<_> = templates.iter().map(|t| t.uri_template.as_str()).collect();
    assert_eq!(
        uris,
        vec![
            "customer://{email}",
            "payment://{charge_id}",
            "paywarden://payments/{provider}/{payment_id}"
        ]
    );

    let read = client
        .read_resource(ReadResourceRequestParams::new(
            "customer://sarah@example.com",
        ))
        .await
        .unwrap();
    let text = match &read.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    };
    let profile: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(profile["customer"]["email"], SARAH);

    let (newest, _) = sarahs_duplicates(&client).await;
    let read = client
        .read_resource(ReadResourceRequestParams::new(format!(
            "payment://{newest}"
        )))
        .await
        .unwrap();
    let rmcp::model::ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
        panic!("text");
    };
    assert!(
        text.contains(&newest) && text.contains("\"amount_cents\":4999"),
        "{text}"
    );
    assert!(client
        .read_resource(ReadResourceRequestParams::new(
            "customer://nobody@example.com"
        ))
        .await
        .is_err());

    let prompts = client.list_all_prompts().await.unwrap();
    let names: Vec<_> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["daily_revenue_report", "find_refund_candidates"]
    );
    let mut request = GetPromptRequestParams::new("daily_revenue_report");
    request.arguments = Some(json!({"date": "2026-03-01"}).as_object().unwrap().clone());
    let prompt = client.get_prompt(request).await.unwrap();
    let rendered = serde_json::to_string(&prompt).unwrap();
    assert!(rendered.contains("start_date='2026-03-01'"), "{rendered}");
    let mut bad = GetPromptRequestParams::new("daily_revenue_report");
    bad.arguments = Some(json!({"date": "yesterday"}).as_object().unwrap().clone());
    assert!(client.get_prompt(bad).await.is_err());

    let completion = client
        .complete(CompleteRequestParams::new(
            Reference::for_resource("customer://{email}"),
            ArgumentInfo::new("email", "sa"),
        ))
        .await
        .unwrap();
    assert_eq!(completion.completion.values, vec![SARAH.to_string()]);
}

#[tokio::test]
async fn stripe_failures_are_clear_and_nothing_is_written() {
    use axum::{http::StatusCode, routing::any, Json, Router};
    // A "Stripe" that fails every request with HTTP 500 and Stripe's error JSON.
    let broken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broken_url = format!("http://{}", broken.local_addr().unwrap());
    tokio::spawn(async move {
        let router = Router::new().fallback(any(|| async {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": {"type": "api_error", "message": "Something went wrong on Stripe's end."}})),
            )
        }));
        axum::serve(broken, router).await.unwrap();
    });
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for (base_url, key, needle) in [
        (broken_url.clone(), "sk_test_whatever_key_1234", "HTTP 500"),
        (closed, "sk_test_whatever_key_1234", "could not be reached"),
    ] {
        let app = spawn_app_with(|c| {
            c.stripe.base_url = Some(base_url.clone());
            c.stripe.api_key = Some(secrecy::SecretString::from(key.to_string()));
            c.stripe.timeout_ms = 2_000;
        })
        .await;
        let customer = app
            .store
            .ensure_customer(DEMO_ENTITY_ID, SARAH, "Sarah Test", Some("cus_1"))
            .await
            .unwrap();
        let order = app
            .store
            .insert_order(&paywarden::store::NewOrder {
                entity_id: DEMO_ENTITY_ID,
                customer_id: &customer.id,
                stripe_charge_id: "pi_1",
                amount_cents: 4999,
                currency: "usd",
                created_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
        let client = app.client("/mcp", Era::Legacy).await;
        let err = call_err(
            &client,
            "issue_refund",
            json!({"email": SARAH, "charge_id": "pi_1"}),
        )
        .await;
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains(key), "the key leaked: {err}");
        let profile = call_ok(&client, "lookup_customer", json!({"email": SARAH})).await;
        assert_eq!(profile["stripe"]["status"], "unavailable");
        assert!(app
            .store
            .refund_log(DEMO_ENTITY_ID, &order.id)
            .await
            .unwrap()
            .is_empty());
        let order = app
            .store
            .order(DEMO_ENTITY_ID, &order.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(order.status, paywarden::store::OrderStatus::Paid);
    }
}

#[tokio::test]
async fn an_invalid_stripe_key_is_a_clear_error_and_a_live_key_stops_start_up() {
    // The emulator refuses an unknown key as Stripe does (401).
    let emulator_app = spawn_app().await;
    let emulator = emulator_app.emulator_url.clone().unwrap();
    let app = spawn_app_with(|c| {
        c.stripe.base_url = Some(emulator.clone());
        c.stripe.api_key = Some(secrecy::SecretString::from(
            "sk_test_not_a_key_of_the_emulator".to_string(),
        ));
    })
    .await;
    app.store
        .ensure_customer(DEMO_ENTITY_ID, SARAH, "Sarah Test", Some("cus_1"))
        .await
        .unwrap();
    let client = app.client("/mcp", Era::Legacy).await;
    let profile = call_ok(&client, "lookup_customer", json!({"email": SARAH})).await;
    assert_eq!(profile["stripe"]["status"], "unavailable");
    assert!(
        profile["stripe"]["error"]
            .as_str()
            .unwrap()
            .contains("API key"),
        "{profile}"
    );
    assert!(!profile
        .to_string()
        .contains("sk_test_not_a_key_of_the_emulator"));
    let err = call_err(&client, "list_payments", json!({"email": SARAH})).await;
    assert!(err.contains("key"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.stripe.api_key = Some(secrecy::SecretString::from(
        "sk_live_0123456789abcdef".to_string(),
    ));
    let err = paywarden::app::App::build(
        config,
        paywarden::app::SeedMode::Off,
        &ProgressBar::hidden(),
    )
    .await
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(err.contains("LIVE"), "{err}");
    assert!(!err.contains("0123456789abcdef"), "{err}");
}

#[tokio::test]
async fn a_refund_that_times_out_is_resolved_at_stripe_before_any_retry() {
    // A Stripe emulator that answers every POST 1.5 s after doing it; paywarden waits 1 s.
    let dir = tempfile::tempdir().unwrap();
    let mut config = paywarden_emulator::EmulatorConfig::demo(dir.path().join("slow.db"));
    config.write_latency = Duration::from_millis(1_500);
    let emulator = paywarden_emulator::Emulator::open(config).await.unwrap();
    let running = emulator
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    let slow_url = running.base_url.clone();
    let app = spawn_app_with(|c| {
        c.stripe.base_url = Some(slow_url.clone());
        c.stripe.api_key = Some(secrecy::SecretString::from(DEMO_STRIPE_KEY.to_string()));
        c.stripe.timeout_ms = 1_000;
    })
    .await;
    // One customer and charge, created with a patient client.
    let patient = StripeClient::new(
        &slow_url,
        StripeKey::parse(DEMO_STRIPE_KEY, false).unwrap(),
        Duration::from_secs(10),
    )
    .unwrap();
    let customer = patient
        .create_customer(SARAH, Some("Sarah Test"), &Default::default(), None)
        .await
        .unwrap();
    let pi = patient
        .create_payment_intent(
            &customer.id,
            paywarden_domain::Money::from_minor(4999, paywarden_domain::Currency::USD).unwrap(),
            &Default::default(),
            None,
        )
        .await
        .unwrap();
    let record = app
        .store
        .ensure_customer(DEMO_ENTITY_ID, SARAH, "Sarah Test", Some(&customer.id))
        .await
        .unwrap();
    app.store
        .insert_order(&paywarden::store::NewOrder {
            entity_id: DEMO_ENTITY_ID,
            customer_id: &record.id,
            stripe_charge_id: &pi.id,
            amount_cents: 4999,
            currency: "usd",
            created_at: chrono::Utc::now(),
        })
        .await
        .unwrap();

    let client = app.client("/mcp", Era::Legacy).await;
    let args = json!({"email": SARAH, "charge_id": pi.id, "amount_cents": 1000});
    let preview = call_ok(&client, "issue_refund", args.clone()).await;
    let mut confirmed = args;
    confirmed["confirmation_token"] = preview["confirmation"]["token"].clone();
    let err = call_err(&client, "issue_refund", confirmed.clone()).await;
    assert!(err.contains("UNKNOWN"), "{err}");
    tokio::time::sleep(Duration::from_millis(800)).await; // Stripe has done it by now
                                                          // The retry asks Stripe first, finds the refund it made, records it, and sends nothing.
    let resolved = call_ok(&client, "issue_refund", confirmed.clone()).await;
    assert_eq!(resolved["status"], "executed", "{resolved}");
    assert_eq!(resolved["refund"]["amount_cents"], 1000);
    let refunds = patient.refunds_for(&pi.id).await.unwrap().data;
    assert_eq!(refunds.len(), 1, "one refund at Stripe");
    let order = app
        .store
        .order_by_charge(DEMO_ENTITY_ID, &pi.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.refunded_cents, 1000);
    assert_eq!(
        app.store
            .refund_log(DEMO_ENTITY_ID, &order.id)
            .await
            .unwrap()
            .len(),
        1
    );
    // And again: a replay.
    let replay = call_ok(&client, "issue_refund", confirmed).await;
    assert_eq!(replay["idempotentReplay"], true);
    assert_eq!(patient.refunds_for(&pi.id).await.unwrap().data.len(), 1);
}

#[tokio::test]
async fn a_confirmation_never_executes_something_other_than_its_preview() {
    let app = ops_app(|_| {}).await;
    let client = app.client("/mcp", Era::Legacy).await;
    let (newest, older) = sarahs_duplicates(&client).await;

    // "Refund the most recent payment": previewed as `newest`...
    let vague = json!({"email": SARAH});
    let preview = call_ok(&client, "issue_refund", vague.clone()).await;
    assert_eq!(
        preview["confirmation"]["preview"]["referenceId"],
        newest.as_str()
    );
    // ...which someone refunds meanwhile; the most recent paid order is now `older`.
    refund_confirmed(&client, json!({"email": SARAH, "charge_id": newest})).await;
    let mut confirmed = vague;
    confirmed["confirmation_token"] = preview["confirmation"]["token"].clone();
    let err = call_err(&client, "issue_refund", confirmed).await;
    assert!(err.contains("payment changed"), "{err}");
    assert!(stripe(&app)
        .refunds_for(&older)
        .await
        .unwrap()
        .data
        .is_empty());

    // A full refund previewed at 49.99 is not executed at another amount.
    let full = json!({"email": SARAH, "charge_id": older});
    let preview = call_ok(&client, "issue_refund", full.clone()).await;
    assert_eq!(preview["confirmation"]["preview"]["amountMinor"], 4999);
    refund_confirmed(
        &client,
        json!({"email": SARAH, "charge_id": older, "amount_cents": 1000}),
    )
    .await;
    let mut confirmed = full;
    confirmed["confirmation_token"] = preview["confirmation"]["token"].clone();
    let err = call_err(&client, "issue_refund", confirmed).await;
    assert!(err.contains("amount changed"), "{err}");
    let refunds = stripe(&app).refunds_for(&older).await.unwrap().data;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount.minor_units(), 1000);
}

/// The seed's demo, step 2: the model calls `list_payments(customer="cus_...")` with the id
/// `lookup_customer` returned. An e-mail in `customer` works too; one of the two is required;
/// another entity's Stripe customer id is not found.
#[tokio::test]
async fn list_payments_takes_the_customer_id_lookup_customer_returned() {
    let app = ops_app(|c| c.safety.policy_file = None).await;
    let client = app.client("/mcp", Era::Legacy).await;
    let profile = call_ok(&client, "lookup_customer", json!({"email": SARAH})).await;
    let cus = profile["customer"]["stripe_customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cus.starts_with("cus_"), "{profile}");

    let by_id = call_ok(&client, "list_payments", json!({"customer": cus})).await;
    let by_email = call_ok(&client, "list_payments", json!({"email": SARAH})).await;
    let by_email_in_customer = call_ok(&client, "list_payments", json!({"customer": SARAH})).await;
    assert_eq!(by_id["customer"]["email"], SARAH);
    assert_eq!(by_id["payments"], by_email["payments"]);
    assert_eq!(by_email_in_customer["payments"], by_email["payments"]);
    assert_eq!(
        by_id["payments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["amount_cents"] == 4999)
            .count(),
        2,
        "{by_id}"
    );
    // Both, naming the same customer: fine.
    call_ok(
        &client,
        "list_payments",
        json!({"customer": cus, "email": SARAH}),
    )
    .await;

    // Neither, a malformed one, or two different customers: invalid params naming the fields.
    let neither = call_invalid(&client, "list_payments", json!({})).await;
    assert!(neither.contains("customer"), "{neither}");
    let bad = call_invalid(&client, "list_payments", json!({"customer": "sarah"})).await;
    assert!(bad.contains("cus_"), "{bad}");
    let other = call_ok(
        &client,
        "lookup_customer",
        json!({"email": "bob@example.com"}),
    )
    .await;
    let mixed = call_invalid(
        &client,
        "list_payments",
        json!({"customer": other["customer"]["stripe_customer_id"], "email": SARAH}),
    )
    .await;
    assert!(mixed.contains("two different customers"), "{mixed}");
    let unknown = call_err(
        &client,
        "list_payments",
        json!({"customer": "cus_NotOneOfOurs"}),
    )
    .await;
    assert!(unknown.contains("No customer"), "{unknown}");

    // Another entity cannot use Sarah's Stripe customer id.
    let second = app
        .client_as("/mcp", Era::Legacy, SECOND_ENTITY_ID, SECOND_TOKEN)
        .await;
    let foreign = call_err(&second, "list_payments", json!({"customer": cus})).await;
    assert!(foreign.contains("No customer"), "{foreign}");
}

/// Issue 12: `create_payment_link` used to skip the policy, so `paywarden policy check` named a
/// decision the server never made. Now the policy decides it through the same gate as every
/// other call: a rule asking for a confirmation gets a preview and a token, and only the token
/// creates the link; a deny rule creates nothing.
#[tokio::test]
async fn the_policy_decides_payment_links_through_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("links.toml");
    std::fs::write(
        &policy,
        r#"default = "allow"

[[rule]]
name = "big-links-confirmed"
when = "tool == 'create_payment_link' && amount_minor >= 10000"
action = "confirm"
message = "Links of 100.00 or more are confirmed."

[[rule]]
name = "no-gbp-links"
when = "tool == 'create_payment_link' && currency == 'GBP'"
action = "deny"
message = "No GBP links."
"#,
    )
    .unwrap();
    let app = ops_app(|c| c.safety.policy_file = Some(policy.clone())).await;
    let client = app.client("/mcp", Era::Legacy).await;

    // Small: allowed, created at once.
    let small = call_ok(
        &client,
        "create_payment_link",
        json!({"amount_cents": 999, "description": "Socks"}),
    )
    .await;
    assert_eq!(small["status"], "created", "{small}");

    // 3 x 49.99 = 149.97: the rule asks for a confirmation; nothing is created at Stripe yet.
    let args = json!({"amount_cents": 4999, "description": "Pro plan", "quantity": 3});
    let preview = call_ok(&client, "create_payment_link", args.clone()).await;
    assert_eq!(preview["status"], "confirmation_required", "{preview}");
    assert!(preview.get("url").is_none(), "{preview}");
    assert_eq!(preview["confirmation"]["preview"]["amountMinor"], 14_997);
    assert_eq!(preview["confirmation"]["rule"], "big-links-confirmed");
    let mut confirmed = args.clone();
    confirmed["confirmation_token"] = preview["confirmation"]["token"].clone();
    let created = call_ok(&client, "create_payment_link", confirmed.clone()).await;
    assert_eq!(created["status"], "created", "{created}");
    assert!(created["url"].as_str().unwrap().starts_with("http"));
    // The token is single use: the same confirmed call replays, it creates no second link.
    let again = call_ok(&client, "create_payment_link", confirmed).await;
    assert_eq!(again["url"], created["url"]);
    assert_eq!(again["idempotentReplay"], true, "{again}");

    let denied = call_err(
        &client,
        "create_payment_link",
        json!({"amount_cents": 500, "description": "Tea", "currency": "gbp"}),
    )
    .await;
    assert!(denied.contains("no-gbp-links"), "{denied}");

    // `paywarden policy check` names the decision the server made.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paywarden"))
        .args([
            "policy",
            "check",
            "--tool",
            "create_payment_link",
            "--amount",
            "149.97",
        ])
        .args(["--currency", "USD", "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("deciding rule: big-links-confirmed")
            && text.contains("toolset              = \"ops\""),
        "{text}"
    );
}

/// Attack: paywarden's database fails after Stripe created the payment link (settling the
/// gate's cumulative-limit reservation). The answer must not say "nothing was sent": the link
/// exists at Stripe.
#[tokio::test]
async fn a_database_failure_after_stripe_created_a_payment_link_never_says_nothing_was_sent() {
    let app = ops_app(|_| {}).await;
    let client = app.client("/mcp", Era::Legacy).await;
    let failing = app.fail_writes("DELETE", "limit_reservations").await;
    let args = json!({"amount_cents": 2500, "description": "Workshop seat", "currency": "eur", "idempotency_key": "link-db-1"});
    let answer = call(&client, "create_payment_link", args.clone()).await;
    failing.stop().await;
    let message = match answer {
        Err(rmcp::ServiceError::McpError(e)) => e.message.to_string(),
        other => panic!("expected an internal error, got {other:?}"),
    };
    assert!(
        message.contains("may have reached Stripe")
            && message.contains("may have happened")
            && !message.contains("nothing was sent"),
        "{message}"
    );
}

/// `revenue_summary` reads the daily totals `order_days` (migration 0016) that triggers keep.
/// They must be exactly what grouping the orders by UTC day and currency gives, whoever writes
/// the orders: the totals backfilled from orders written before the migration; orders paywarden
/// adds and refunds; and orders the merchant's own application inserts, refunds, moves to
/// another day, currency or entity and deletes with plain SQL. Also 20 concurrent inserts of
/// one day. Runs on SQLite, or PostgreSQL with `PAYWARDEN_TEST_DATABASE=postgres`.
#[tokio::test]
async fn revenue_days_are_the_orders_grouped_by_day_whatever_writes_them() {
    use chrono::{NaiveDate, TimeZone, Utc};
    use paywarden::store::{NewOrder, RevenueLine, Store};
    use sqlx::Row;

    let db = TestDatabase::fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let url = db.url_in(dir.path());
    // The schema before the daily totals (migrations up to 0015), with orders written then.
    let before = db.migrations_up_to(15);
    sqlx::any::install_default_drivers();
    // The merchant's application: a connection of its own, plain SQL.
    let app = sqlx::AnyPool::connect(&url).await.unwrap();
    before.run(&app).await.unwrap();
    for (customer, entity) in [("c1", "e1"), ("c2", "e2")] {
        sqlx::query(
            "INSERT INTO customers (id, entity_id, email, name, stripe_customer_id, created_at) \
             VALUES ($1, $2, $3, 'N', NULL, '2026-01-01T00:00:00.000000Z')",
        )
        .bind(customer)
        .bind(entity)
        .bind(format!("{customer}@example.com"))
        .execute(&app)
        .await
        .unwrap();
    }
    let insert = |id: &'static str,
                  entity: &'static str,
                  amount: i64,
                  refunded: i64,
                  currency: &'static str,
                  at: &'static str| {
        let app = app.clone();
        async move {
            let customer = if entity == "e1" { "c1" } else { "c2" };
            let status = match refunded {
                0 => "paid",
                r if r == amount => "refunded",
                _ => "partially_refunded",
            };
            sqlx::query(
                "INSERT INTO orders (id, entity_id, customer_id, stripe_charge_id, amount_cents, \
                 refunded_cents, currency, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id)
            .bind(entity)
            .bind(customer)
            .bind(format!("pi_{id}"))
            .bind(amount)
            .bind(refunded)
            .bind(currency)
            .bind(status)
            .bind(at)
            .execute(&app)
            .await
            .unwrap();
        }
    };
    for (id, entity, amount, refunded, currency, at) in [
        ("o1", "e1", 1_000, 0, "eur", "2026-03-01T00:00:00.000000Z"),
        ("o2", "e1", 2_500, 500, "eur", "2026-03-01T23:59:59.999999Z"),
        ("o3", "e1", 700, 0, "usd", "2026-03-01T12:00:00.000000Z"),
        ("o4", "e1", 999, 999, "eur", "2026-03-02T08:00:00.000000Z"),
        ("o5", "e2", 4_000, 0, "eur", "2026-03-01T09:00:00.000000Z"),
        ("o6", "e1", 123, 0, "eur", "2026-02-28T23:59:59.999999Z"),
    ] {
        insert(id, entity, amount, refunded, currency, at).await;
    }

    // What the orders themselves say, grouped as the summary groups them.
    let grouped = |entity: &'static str| {
        let app = app.clone();
        async move {
            sqlx::query(
                "SELECT substr(created_at, 1, 10) AS day, currency, CAST(count(*) AS BIGINT) AS n, \
                 CAST(sum(amount_cents) AS BIGINT) AS gross, CAST(sum(refunded_cents) AS BIGINT) AS refunded \
                 FROM orders WHERE entity_id = $1 GROUP BY substr(created_at, 1, 10), currency \
                 ORDER BY substr(created_at, 1, 10), currency",
            )
            .bind(entity)
            .fetch_all(&app)
            .await
            .unwrap()
            .iter()
            .map(|row| RevenueLine {
                day: row.get::<String, _>("day").parse().unwrap(),
                currency: row.get("currency"),
                orders: row.get("n"),
                gross_cents: row.get("gross"),
                refunded_cents: row.get("refunded"),
            })
            .collect::<Vec<_>>()
        }
    };
    let first = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();
    let last = NaiveDate::from_ymd_opt(2099, 12, 31).unwrap();
    let store: Store = db.store(dir.path()).await;
    let agrees = |store: Store, what: &'static str| {
        let grouped = &grouped;
        async move {
            for entity in ["e1", "e2"] {
                let read = store.revenue(entity, first, last).await.unwrap();
                assert_eq!(read, grouped(entity).await, "{what}: entity {entity}");
            }
        }
    };

    // Opening the store applies 0016: the backfill.
    agrees(store.clone(), "backfilled").await;
    let day = |d: u32| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    let march_1 = store.revenue("e1", day(1), day(1)).await.unwrap();
    assert_eq!(
        march_1,
        vec![
            RevenueLine {
                day: day(1),
                currency: "eur".into(),
                orders: 2,
                gross_cents: 3_500,
                refunded_cents: 500
            },
            RevenueLine {
                day: day(1),
                currency: "usd".into(),
                orders: 1,
                gross_cents: 700,
                refunded_cents: 0
            },
        ],
        "a one-day range holds that day only, both ends included"
    );
    assert!(store.revenue("e3", first, last).await.unwrap().is_empty());

    // paywarden's own writes: an order added, refunded in part and then in full.
    let added = store
        .insert_order(&NewOrder {
            entity_id: "e1",
            customer_id: "c1",
            stripe_charge_id: "pi_added",
            amount_cents: 5_000,
            currency: "eur",
            created_at: Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap(),
        })
        .await
        .unwrap();
    agrees(store.clone(), "an order added").await;
    store
        .record_refund(
            "e1",
            &added.id,
            "re_1",
            1_000,
            1_000,
            "x",
            "agent",
            "succeeded",
        )
        .await
        .unwrap();
    store
        .record_refund(
            "e1",
            &added.id,
            "re_2",
            4_000,
            5_000,
            "x",
            "agent",
            "succeeded",
        )
        .await
        .unwrap();
    agrees(store.clone(), "an order refunded").await;

    // The merchant's application: a refund, a move to another day, currency and entity, a
    // change of amount with a move, a change of something else, and removals.
    for (statement, what) in [
        ("UPDATE orders SET refunded_cents = 1000, status = 'refunded' WHERE id = 'o1'", "refunded by the application"),
        ("UPDATE orders SET created_at = '2026-03-05T01:00:00.000000Z' WHERE id = 'o2'", "moved to another day"),
        ("UPDATE orders SET currency = 'usd' WHERE id = 'o4'", "moved to another currency"),
        ("UPDATE orders SET entity_id = 'e2', customer_id = 'c2' WHERE id = 'o6'", "moved to another entity"),
        ("UPDATE orders SET amount_cents = 9000, created_at = '2026-03-09T01:00:00.000000Z' WHERE id = 'o3'", "changed and moved at once"),
        ("UPDATE orders SET status = 'paid', stripe_charge_id = 'pi_other' WHERE id = 'o5'", "a column the totals do not hold"),
        ("DELETE FROM orders WHERE id = 'o5'", "the only order of its day removed"),
        ("DELETE FROM refund_log", "refund log cleared"),
        ("DELETE FROM orders WHERE entity_id = 'e1' AND currency = 'eur'", "several removed at once"),
    ] {
        sqlx::query(statement).execute(&app).await.unwrap();
        agrees(store.clone(), what).await;
    }
    assert!(
        store
            .revenue("e2", day(1), day(1))
            .await
            .unwrap()
            .is_empty(),
        "a day whose orders are all gone has no line"
    );

    // Concurrent orders of one entity, day and currency: none is lost.
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_order(&NewOrder {
                        entity_id: "e1",
                        customer_id: "c1",
                        stripe_charge_id: &format!("pi_concurrent_{i}"),
                        amount_cents: 100 + i,
                        currency: "gbp",
                        created_at: Utc.with_ymd_and_hms(2026, 3, 7, 12, 0, 0).unwrap(),
                    })
                    .await
                    .unwrap();
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    agrees(store.clone(), "20 concurrent orders").await;
    let gbp = store.revenue("e1", day(7), day(7)).await.unwrap();
    assert_eq!((gbp[0].orders, gbp[0].gross_cents), (20, 2_000 + 190));
    app.close().await;
}
