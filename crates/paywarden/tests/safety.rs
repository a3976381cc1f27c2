//! The safety layer through the real server and the built-in policy: confirmation tokens,
//! human approval, concurrency of refunds and retries, read-only mode, policy errors.

mod common;

use common::*;
use paywarden_domain::{Currency, PaymentType};
use serde_json::json;

/// A server with the built-in policy (small operations confirmed, large ones human).
async fn guarded_app() -> TestApp {
    spawn_app_with(|c| c.safety.policy_file = None).await
}

#[tokio::test]
async fn confirm_returns_a_preview_and_only_the_token_executes_it() {
    let app = guarded_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "80.00",
            Currency::EUR,
        )
        .await;
    let client = app.client("/mcp", Era::Legacy).await;
    let args = json!({"referenceId": pa, "amount": "30.00", "currency": "EUR"});

    // First call: a preview, nothing moves.
    let preview = call_ok(&client, "perform_capture", args.clone()).await;
    assert_eq!(preview["status"], "confirmation_required", "{preview}");
    let confirmation = &preview["confirmation"];
    let token = confirmation["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("pwc_"));
    assert_eq!(confirmation["preview"]["amount"], "30.00");
    assert_eq!(confirmation["preview"]["currency"], "EUR");
    assert_eq!(confirmation["preview"]["referenceId"], pa.as_str());
    assert!(confirmation["preview"]["from"]
        .as_str()
        .unwrap()
        .contains("card"));
    assert!(!confirmation["rule"].as_str().unwrap().is_empty());
    let linked = call_ok(&client, "get_transactions", json!({"id": pa})).await;
    assert_eq!(
        linked["payments"].as_array().unwrap().len(),
        1,
        "nothing moved yet"
    );

    // A made-up token, or the model's own `confirmed: true`, do nothing.
    let mut fake = args.clone();
    fake["confirmationToken"] =
        json!("pwc_0000000000000000000000000000000000000000000000000000000000000000");
    let text = call_err(&client, "perform_capture", fake).await;
    assert!(text.contains("never issued"), "{text}");
    let mut boolean = args.clone();
    boolean["confirmed"] = json!(true);
    call_invalid(&client, "perform_capture", boolean).await;

    // The token with a higher amount is refused.
    let mut higher = args.clone();
    higher["amount"] = json!("70.00");
    higher["confirmationToken"] = json!(token);
    let text = call_err(&client, "perform_capture", higher).await;
    assert!(text.contains("different arguments"), "{text}");

    // Another entity cannot use it.
    let other = app
        .client_as(
            "/mcp",
            Era::Legacy,
            paywarden_emulator::SECOND_ENTITY_ID,
            paywarden_emulator::SECOND_TOKEN,
        )
        .await;
    let mut theirs = args.clone();
    theirs["confirmationToken"] = json!(token);
    let text = call_err(&other, "perform_capture", theirs).await;
    assert!(
        text.contains("700.100.100") || text.contains("another entity"),
        "{text}"
    );

    // The right token executes exactly the previewed operation.
    let mut confirmed = args.clone();
    confirmed["confirmationToken"] = json!(token);
    let done = call_ok(&client, "perform_capture", confirmed.clone()).await;
    assert_eq!(done["status"], "executed");
    assert_eq!(done["amount"], "30.00");
    assert_eq!(done["paymentType"], "CP");

    // A retry with the same token replays the outcome (its derived idempotency key); it never
    // captures twice.
    let again = call_ok(&client, "perform_capture", confirmed).await;
    assert_eq!(again["id"], done["id"]);
    assert_eq!(again["idempotentReplay"], true);
    let linked = call_ok(
        &client,
        "get_transactions",
        json!({"id": pa, "paymentTypes": ["CP"]}),
    )
    .await;
    assert_eq!(linked["payments"].as_array().unwrap().len(), 1);

    // A used token cannot confirm a new operation (new key).
    let mut reuse = args.clone();
    reuse["confirmationToken"] = json!(token);
    reuse["idempotencyKey"] = json!("a-fresh-key");
    let text = call_err(&client, "perform_capture", reuse).await;
    assert!(text.contains("already used"), "{text}");

    // The audit log records the decisions.
    let outcomes: Vec<_> = app
        .store
        .audit_records(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.outcome)
        .collect();
    assert!(
        outcomes.contains(&"confirmation_required".to_string()),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let app = spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.safety.confirmation_ttl_secs = 0;
    })
    .await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "20.00",
            Currency::EUR,
        )
        .await;
    let client = app.client("/mcp", Era::Stateless).await;
    let args = json!({"referenceId": db, "amount": "5.00", "currency": "EUR"});
    let preview = call_ok(&client, "perform_refund", args.clone()).await;
    let mut confirmed = args.clone();
    confirmed["confirmationToken"] = preview["confirmation"]["token"].clone();
    let text = call_err(&client, "perform_refund", confirmed).await;
    assert!(text.contains("expired"), "{text}");
}

#[tokio::test]
async fn human_approval_is_decided_by_a_person_and_executes_once() {
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "900.00",
            Currency::EUR,
        )
        .await;
    let client = app.client("/mcp", Era::Legacy).await;
    let args = json!({"referenceId": db, "amount": "750.00", "currency": "EUR"});
    let pending = call_ok(&client, "perform_refund", args.clone()).await;
    assert_eq!(pending["status"], "approval_pending", "{pending}");
    let approval = &pending["approval"];
    let id = approval["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("apr_"));
    assert!(approval["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/approvals/{id}")));
    assert_eq!(approval["preview"]["amount"], "750.00");

    // The model cannot get past it: follow-up and polling before a decision move nothing.
    let mut follow_up = args.clone();
    follow_up["approvalId"] = json!(id);
    let text = call_err(&client, "perform_refund", follow_up.clone()).await;
    assert!(text.contains("waiting for an operator"), "{text}");
    let polled = call_ok(&client, "get_approval", json!({"approvalId": id})).await;
    assert_eq!(polled["status"], "approval_pending");
    // A token does not replace a person.
    let mut with_token = args.clone();
    with_token["confirmationToken"] = json!("pwc_made_up");
    let still = call(&client, "perform_refund", with_token).await.unwrap();
    assert_ne!(
        still
            .structured_content
            .as_ref()
            .map(|s| s["status"].clone()),
        Some(json!("executed"))
    );

    // A person approves (the CLI's store call), then the agent's polling executes it once.
    app.store
        .decide_approval(&id, true, "alice", Some("customer called"))
        .await
        .unwrap();
    let done = call_ok(&client, "get_approval", json!({"approvalId": id})).await;
    assert_eq!(done["status"], "executed", "{done}");
    assert_eq!(done["amount"], "750.00");
    // The follow-up call and another poll return the same outcome; one refund only.
    let again = call(&client, "perform_refund", follow_up).await.unwrap();
    let again_text = text_of(&again);
    assert!(
        again
            .structured_content
            .as_ref()
            .is_some_and(|s| s["id"] == done["id"])
            || again_text.contains("already"),
        "{again_text}"
    );
    let polled = call_ok(&client, "get_approval", json!({"approvalId": id})).await;
    assert_eq!(polled["id"], done["id"]);
    let linked = call_ok(
        &client,
        "get_transactions",
        json!({"id": db, "paymentTypes": ["RF"]}),
    )
    .await;
    assert_eq!(linked["payments"].as_array().unwrap().len(), 1, "{linked}");
    let approval = app.store.approval(&id).await.unwrap().unwrap();
    assert_eq!(approval.decided_by.as_deref(), Some("alice"));
    assert!(approval.executed_at.is_some());
}

#[tokio::test]
async fn a_denied_approval_never_moves_money() {
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "50.00",
            Currency::EUR,
        )
        .await;
    let client = app.client("/mcp", Era::Stateless).await;
    // Chargebacks always go to a person in the built-in policy.
    let pending = call_ok(&client, "perform_chargeback", json!({"referenceId": db})).await;
    assert_eq!(pending["status"], "approval_pending");
    let id = pending["approval"]["id"].as_str().unwrap().to_string();
    app.store
        .decide_approval(&id, false, "bob", None)
        .await
        .unwrap();
    let polled = call_ok(&client, "get_approval", json!({"approvalId": id})).await;
    assert_eq!(polled["status"], "approval_denied");
    let text = call_err(
        &client,
        "perform_chargeback",
        json!({"referenceId": db, "approvalId": id}),
    )
    .await;
    assert!(text.contains("denied"), "{text}");
    let linked = call_ok(&client, "get_transactions", json!({"id": db})).await;
    assert_eq!(linked["payments"].as_array().unwrap().len(), 1);
    // Another entity cannot see it.
    let other = app
        .client_as(
            "/mcp",
            Era::Legacy,
            paywarden_emulator::SECOND_ENTITY_ID,
            paywarden_emulator::SECOND_TOKEN,
        )
        .await;
    let text = call_err(&other, "get_approval", json!({"approvalId": id})).await;
    assert!(text.contains("no approval request"), "{text}");
    // The operator's decision is in the audit chain.
    let records = app.store.audit_records(None).await.unwrap();
    let decision = records
        .iter()
        .find(|r| {
            r.entry.outcome == "denied" && r.entry.transaction_id.as_deref() == Some(id.as_str())
        })
        .expect("the decision is audited");
    assert_eq!(decision.entry.client_name.as_deref(), Some("operator:bob"));
    assert!(app.store.verify_audit().await.unwrap().is_none());
}

#[tokio::test]
async fn fifty_concurrent_refunds_never_exceed_the_refundable_amount() {
    let app = spawn_app().await; // allow-all: the invariants hold without any confirmation
    let (db, clients) = debit_and_clients(&app, 5).await;
    let mut handles = Vec::new();
    for i in 0..50 {
        let client = clients[i % clients.len()].clone();
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            call(
                &client,
                "perform_refund",
                json!({"referenceId": db, "amount": "5.00", "currency": "EUR"}),
            )
            .await
            .map(|r| r.is_error == Some(false))
            .unwrap_or(false)
        }));
    }
    let mut ok = 0;
    for h in handles {
        ok += usize::from(h.await.unwrap());
    }
    assert_eq!(ok, 20, "exactly 100.00 / 5.00 refunds succeed");
    // paywarden serialised them and refused the rest before sending: OPP saw no refused refund.
    assert_refunded(&clients[0], &db, 20, 10_000).await;
}

/// A 100.00 EUR debit at the emulator and `n` stateless clients of `app`.
async fn debit_and_clients(app: &TestApp, n: usize) -> (String, Vec<std::sync::Arc<Client>>) {
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "100.00",
            Currency::EUR,
        )
        .await;
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(std::sync::Arc::new(
            app.client("/mcp", Era::Stateless).await,
        ));
    }
    (db, clients)
}

/// OPP holds exactly `count` refunds of `db`, all successful, of `total_minor` together.
async fn assert_refunded(client: &Client, db: &str, count: usize, total_minor: i64) {
    let linked = call_ok(
        client,
        "get_transactions",
        json!({"id": db, "paymentTypes": ["RF"]}),
    )
    .await;
    let refunds = linked["payments"].as_array().unwrap();
    assert_eq!(refunds.len(), count, "{linked}");
    assert!(refunds.iter().all(|r| r["resultCategory"] == "success"));
    let total: i64 = refunds
        .iter()
        .map(|r| r["amountMinor"].as_i64().unwrap())
        .sum();
    assert_eq!(total, total_minor);
}

/// The confirmed path of the test above, as an agent refunding one payment from many
/// conversations would: 20 previews of 7.00 EUR on a 100.00 EUR debit, then all 20
/// confirmations at once through 5 clients. A confirmation checks OPP's rules on the payment
/// under the payment's lease (taken before its check, `Operation::lease_before_check`), so
/// exactly 14 execute and the other 6 are refused by paywarden before anything is sent: none of
/// them reached OPP. A confirmation whose check ran outside the lease would pass it on a stale
/// remainder and be sent, and OPP's own refusal ("OPP rejected it") fails this test.
#[tokio::test]
async fn twenty_concurrent_confirmed_refunds_are_checked_under_the_payments_lease() {
    let app = guarded_app().await;
    let (db, clients) = debit_and_clients(&app, 5).await;
    let args = json!({"referenceId": db, "amount": "7.00", "currency": "EUR"});
    let mut confirmations = Vec::new();
    for i in 0..20 {
        let preview = call_ok(&clients[i % clients.len()], "perform_refund", args.clone()).await;
        assert_eq!(preview["status"], "confirmation_required", "{preview}");
        let mut confirmed = args.clone();
        confirmed["confirmationToken"] = preview["confirmation"]["token"].clone();
        confirmations.push(confirmed);
    }
    let mut handles = Vec::new();
    for (i, confirmed) in confirmations.into_iter().enumerate() {
        let client = clients[i % clients.len()].clone();
        handles.push(tokio::spawn(async move {
            let result = call(&client, "perform_refund", confirmed)
                .await
                .expect("tool call answered");
            let text = text(&result);
            (result.is_error, result.structured_content, text)
        }));
    }
    let mut executed = 0;
    let mut refused = Vec::new();
    for h in handles {
        match h.await.unwrap() {
            (Some(false), structured, _) => {
                let structured = structured.unwrap_or_default();
                assert_eq!(structured["status"], "executed", "{structured}");
                executed += 1;
            }
            (_, _, text) => refused.push(text),
        }
    }
    assert_eq!(
        executed, 14,
        "exactly 100.00 / 7.00 refunds execute: {refused:?}"
    );
    assert_eq!(refused.len(), 6);
    for text in &refused {
        // The tool error's words for a refusal by OPP's rules before sending (`sentToProvider:
        // false`); OPP's own refusal says "OPP rejected it".
        assert!(
            text.contains("paywarden refused it before sending anything to OPP")
                && text.contains("700.400.200"),
            "refused by paywarden's check under the lease, never sent to OPP: {text}"
        );
    }
    assert_refunded(&clients[0], &db, 14, 9_800).await;
}

/// Confirmations of one payment that arrive while another holds the payment's lease run in
/// the order they arrived: each refund is held 400 ms at OPP (an emulator delay), eight
/// confirmations arrive 150 ms apart, and they execute first come, first served. Before the
/// in-process gate every waiting call polled the database's lease every 15 ms and whichever
/// polled first after a release took it, so the order was a lottery (and a call could wait
/// its whole 30 s while later ones went ahead).
#[tokio::test]
async fn confirmations_waiting_for_a_payments_lease_run_in_the_order_they_arrived() {
    let app = guarded_app().await;
    let (db, clients) = debit_and_clients(&app, 8).await;
    let args = json!({"referenceId": db, "amount": "1.00", "currency": "EUR"});
    let mut confirmations = Vec::new();
    for client in &clients {
        let preview = call_ok(client, "perform_refund", args.clone()).await;
        assert_eq!(preview["status"], "confirmation_required", "{preview}");
        let mut confirmed = args.clone();
        confirmed["confirmationToken"] = preview["confirmation"]["token"].clone();
        confirmations.push(confirmed);
    }
    app.arm_fault(
        json!({"provider": "opp", "method": "POST", "path": "/v1/payments/*",
                         "action": {"kind": "delay", "delay_ms": 400}, "times": 8}),
    )
    .await;
    let finished = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for (n, (client, confirmed)) in clients.into_iter().zip(confirmations).enumerate() {
        let finished = finished.clone();
        handles.push(tokio::spawn(async move {
            let done = call_ok(&client, "perform_refund", confirmed).await;
            finished.lock().unwrap().push(n);
            done
        }));
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    for h in handles {
        let done = h.await.unwrap();
        assert_eq!(done["status"], "executed", "{done}");
    }
    assert_eq!(
        *finished.lock().unwrap(),
        (0..8).collect::<Vec<_>>(),
        "first come, first served"
    );
    assert_refunded(&app.client("/mcp", Era::Stateless).await, &db, 8, 800).await;
}

#[tokio::test]
async fn fifty_concurrent_retries_with_one_key_make_one_provider_call() {
    let app = spawn_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "100.00",
            Currency::EUR,
        )
        .await;
    let client = std::sync::Arc::new(app.client("/mcp", Era::Stateless).await);
    let mut handles = Vec::new();
    for _ in 0..50 {
        let client = client.clone();
        let pa = pa.clone();
        handles.push(tokio::spawn(async move {
            call(
                &client,
                "perform_capture",
                json!({"referenceId": pa, "amount": "1.00", "currency": "EUR", "idempotencyKey": "one-key"}),
            )
            .await
        }));
    }
    for h in handles {
        let _ = h.await.unwrap();
    }
    let linked = call_ok(
        &client,
        "get_transactions",
        json!({"id": pa, "paymentTypes": ["CP"]}),
    )
    .await;
    assert_eq!(linked["payments"].as_array().unwrap().len(), 1, "{linked}");
}

#[tokio::test]
async fn read_only_mode_hides_and_refuses_money_moving_tools() {
    let app = spawn_app_with(|c| c.safety.read_only = true).await;
    let client = app.client("/mcp", Era::Legacy).await;
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    // Reads only: the tool catalogue's one definition (a review flag writes, so it is hidden too).
    assert_eq!(
        names,
        [
            "get_order_history",
            "get_transactions",
            "list_payments",
            "lookup_customer",
            "mbway_check_status",
            "payments_list",
            "revenue_summary",
            "search_transactions"
        ]
    );
    for refused in [
        "issue_refund",
        "create_payment_link",
        "flag_for_review",
        "get_approval",
        "multibanco_create_reference",
    ] {
        let err = call(&client, refused, json!({})).await.unwrap_err();
        assert!(format!("{err:?}").contains("unknown tool"), "{err:?}");
    }
    let err = call(
        &client,
        "perform_refund",
        json!({"referenceId": "abcdefgh"}),
    )
    .await
    .unwrap_err();
    assert!(format!("{err:?}").contains("unknown tool"), "{err:?}");
}

#[tokio::test]
async fn a_policy_with_a_syntax_error_stops_start_up_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "default = \"confirm\"\n\n[[rule]]\nname = \"ok\"\nwhen = \"!moves_money\"\naction = \"allow\"\nmessage = \"reads\"\n\n[[rule]]\nname = \"broken\"\nwhen = \"amount_minor > \"\naction = \"human\"\nmessage = \"x\"\n",
    )
    .unwrap();
    let mut config = test_config(dir.path());
    config.safety.policy_file = Some(path.clone());
    let err = paywarden::app::App::build(
        config,
        paywarden::app::SeedMode::Off,
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("11"), "the line of the broken `when`: {err}");
    assert!(err.contains("broken"), "{err}");

    let mut config = test_config(dir.path());
    config.safety.toolsets = vec!["payouts".into()];
    let err = paywarden::app::App::build(
        config,
        paywarden::app::SeedMode::Off,
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(err.contains("payouts"), "{err}");
}

fn text_of(result: &rmcp::model::CallToolResult) -> String {
    text(result)
}

#[tokio::test]
async fn a_timed_out_write_is_looked_up_at_the_provider_before_any_retry() {
    // An emulator that processes writes but answers them 1.5 s late; paywarden waits 500 ms.
    let dir = tempfile::tempdir().unwrap();
    let mut emulator_config = paywarden_emulator::EmulatorConfig::demo(dir.path().join("late.db"));
    emulator_config.write_latency = std::time::Duration::from_millis(1_500);
    let emulator = paywarden_emulator::Emulator::open(emulator_config)
        .await
        .unwrap();
    let running = emulator
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    let url = running.base_url.clone();
    let app = spawn_app_with(|c| {
        c.opp.base_url = Some(url.clone());
        c.opp.timeout_ms = 500;
    })
    .await;
    let direct =
        paywarden::connectors::opp::OppClient::new(&url, std::time::Duration::from_secs(10))
            .unwrap();
    let request = paywarden::connectors::opp::InitialPaymentRequest {
        payment_type: PaymentType::Preauthorization,
        amount: paywarden_domain::Money::parse("40.00", Currency::EUR).unwrap(),
        payment_brand: "VISA".into(),
        card_number: secrecy::SecretString::from("4200000000000000".to_string()),
        card_holder: "Jane Jones".into(),
        expiry_month: "05".into(),
        expiry_year: "2034".into(),
        cvv: secrecy::SecretString::from("123".to_string()),
        merchant_transaction_id: None,
        custom_parameters: vec![],
    };
    let pa = direct
        .create_payment(&demo_credentials(), &request)
        .await
        .unwrap()
        .id;
    let client = app.client("/mcp", Era::Legacy).await;
    let args = json!({"referenceId": pa, "amount": "10.00", "currency": "EUR", "idempotencyKey": "slow-1"});
    let text = call_err(&client, "perform_capture", args.clone()).await;
    assert!(text.contains("UNKNOWN"), "{text}");
    // Let the late answer arrive at the emulator side; the capture happened.
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;

    // The retry asks OPP first, finds the capture by the key's merchant reference, and replays
    // it instead of capturing again.
    let replay = call_ok(&client, "perform_capture", args.clone()).await;
    assert_eq!(replay["status"], "executed", "{replay}");
    assert_eq!(replay["idempotentReplay"], true);
    assert_eq!(replay["amount"], "10.00");
    let captures = direct
        .query_by_id(&demo_credentials(), &pa, true, &[PaymentType::Capture])
        .await
        .unwrap();
    assert_eq!(captures.len(), 1, "{captures:?}");
    assert_eq!(replay["id"], captures[0].id.as_str());
    assert_eq!(
        captures[0].merchant_transaction_id.as_deref(),
        Some(
            paywarden::service::opp::derived_merchant_reference(
                paywarden_emulator::DEMO_ENTITY_ID,
                "slow-1"
            )
            .as_str()
        )
    );

    // When OPP has nothing under the key once the settle window has passed, the operation never
    // happened: the retry runs it, once.
    let hash = paywarden::service::safety::binding_hash(
        "perform_capture",
        &json!({"referenceId": pa, "amount": "5.00", "currency": "EUR"}),
    );
    app.store
        .begin_idempotent(
            paywarden_emulator::DEMO_ENTITY_ID,
            "never-sent",
            ("opp", "perform_capture"),
            &hash,
            "a-dead-call",
            chrono::Duration::seconds(60),
        )
        .await
        .unwrap();
    let intent = paywarden::service::reconcile::Intent {
        toolset: "opp".into(),
        tool: "perform_capture".into(),
        reference_id: pa.clone(),
        operation: "CP".into(),
        amount_minor: Some(500),
        currency: "EUR".into(),
        marker: paywarden::service::opp::derived_merchant_reference(
            paywarden_emulator::DEMO_ENTITY_ID,
            "never-sent",
        ),
        settle_window_ms: 0,
        extra: serde_json::Value::Null,
    };
    app.store
        .record_idempotent_intent(
            paywarden_emulator::DEMO_ENTITY_ID,
            "never-sent",
            "a-dead-call",
            &serde_json::to_value(&intent).unwrap(),
            chrono::Duration::seconds(60),
        )
        .await
        .unwrap();
    app.store
        .mark_idempotent_unknown(
            paywarden_emulator::DEMO_ENTITY_ID,
            "never-sent",
            Some(chrono::Utc::now()),
        )
        .await
        .unwrap();
    let fresh = call(&client, "perform_capture", json!({"referenceId": pa, "amount": "5.00", "currency": "EUR", "idempotencyKey": "never-sent"}))
        .await
        .unwrap();
    // It was sent again (and, with this slow emulator, timed out again: still at most once).
    assert!(text_of(&fresh).contains("UNKNOWN"), "{}", text_of(&fresh));
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let captures = direct
        .query_by_id(&demo_credentials(), &pa, true, &[PaymentType::Capture])
        .await
        .unwrap();
    assert_eq!(captures.len(), 2, "{captures:?}");
    drop(running);
}

#[tokio::test]
async fn the_policy_decides_reads_and_denials_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strict.toml");
    std::fs::write(
        &path,
        r#"
default = "deny"

[[rule]]
name = "no-bulk-search"
when = "tool == 'search_transactions'"
action = "deny"
message = "Searching is not allowed for agents here."

[[rule]]
name = "reads"
when = "!moves_money"
action = "allow"
message = "Reads are allowed."

[[rule]]
name = "no-refunds-in-gbp"
when = "tool == 'perform_refund' && currency == 'GBP'"
action = "deny"
message = "GBP refunds go through finance."
"#,
    )
    .unwrap();
    let app = spawn_app_with(|c| c.safety.policy_file = Some(path.clone())).await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "10.00",
            Currency::GBP,
        )
        .await;
    let client = app.client("/mcp", Era::Legacy).await;
    let text = call_err(&client, "search_transactions", json!({})).await;
    assert!(
        text.contains("no-bulk-search") && text.contains("not allowed"),
        "{text}"
    );
    call_ok(&client, "get_transactions", json!({"id": db})).await;
    let text = call_err(&client, "perform_refund", json!({"referenceId": db})).await;
    assert!(
        text.contains("no-refunds-in-gbp") && text.contains("finance"),
        "{text}"
    );
    // Nothing matched: the file's default (deny).
    let text = call_err(
        &client,
        "perform_rebill",
        json!({"referenceId": db, "amount": "1.00", "currency": "GBP"}),
    )
    .await;
    assert!(text.contains("denied by policy"), "{text}");
    let linked = call_ok(&client, "get_transactions", json!({"id": db})).await;
    assert_eq!(linked["payments"].as_array().unwrap().len(), 1);
    let outcomes: Vec<_> = app
        .store
        .audit_records(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.outcome)
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "denied").count(),
        3,
        "{outcomes:?}"
    );
}

/// A hostile (or merely automated) client that answers any approval question itself: "accept,
/// approve". The server cannot tell a person from client code, so this must never approve.
#[derive(Clone)]
struct ClientThatAnswersForItself {
    config: rmcp::model::ClientConfig,
}

impl rmcp::ClientHandler for ClientThatAnswersForItself {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        self.config.clone()
    }

    async fn create_elicitation(
        &self,
        _request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        Ok(
            rmcp::model::ElicitResult::new(rmcp::model::ElicitationAction::Accept)
                .with_content(json!({"approve": true, "note": "approved by the client itself"})),
        )
    }
}

/// A client of `era` declaring form elicitation (and URL elicitation when `url`), acting as
/// the demo entity.
async fn self_answering_client(
    app: &TestApp,
    era: Era,
    url: bool,
) -> rmcp::service::RunningService<rmcp::RoleClient, ClientThatAnswersForItself> {
    use rmcp::ClientServiceExt;
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        http::HeaderName::from_static("x-entity-id"),
        http::HeaderValue::from_static(paywarden_emulator::DEMO_ENTITY_ID),
    );
    headers.insert(
        http::HeaderName::from_static("x-token"),
        http::HeaderValue::from_static(paywarden_emulator::DEMO_TOKEN),
    );
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            format!("{}/mcp", app.base_url),
        )
        .custom_headers(headers),
    );
    let mut capabilities = rmcp::model::ClientCapabilities::default();
    let mut elicitation = rmcp::model::ElicitationCapability::default();
    elicitation.form = Some(rmcp::model::FormElicitationCapability::default());
    if url {
        elicitation.url = Some(rmcp::model::UrlElicitationCapability::default());
    }
    capabilities.elicitation = Some(elicitation);
    let mut info = rmcp::model::Implementation::default();
    info.name = "desk-app".into();
    info.version = "1".into();
    let (version, lifecycle) = match era {
        Era::Legacy => (
            rmcp::model::ProtocolVersion::V_2025_11_25,
            rmcp::ClientLifecycleMode::Initialize,
        ),
        Era::Stateless => (
            rmcp::model::ProtocolVersion::V_2026_07_28,
            rmcp::ClientLifecycleMode::Discover {
                preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
            },
        ),
    };
    let config = rmcp::model::ClientConfig::new(capabilities, info).with_protocol_version(version);
    ClientThatAnswersForItself { config }
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("client connects")
}

/// The attack of issue 12: a client that declares elicitation answers the server's approval
/// question itself, in either protocol era. A `human` verdict means a person holding an
/// operator credential; the client's answer moves nothing and decides nothing, and the
/// approval stays pending for an operator, who can still approve it.
#[tokio::test]
async fn a_clients_own_answer_never_approves_a_human_call() {
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "900.00",
            Currency::EUR,
        )
        .await;
    let args = json!({"referenceId": db, "amount": "750.00", "currency": "EUR"});
    for (era, url) in [
        (Era::Legacy, false),
        (Era::Legacy, true),
        (Era::Stateless, false),
        (Era::Stateless, true),
    ] {
        let client = self_answering_client(&app, era, url).await;
        // rmcp's client answers any question through its handler (and, for input_required,
        // retries with the answer by itself).
        let result = client
            .call_tool(
                rmcp::model::CallToolRequestParams::new("perform_refund")
                    .with_arguments(args.as_object().unwrap().clone()),
            )
            .await
            .unwrap();
        let out = result.structured_content.clone().unwrap();
        assert_eq!(
            out["status"], "approval_pending",
            "{era:?} url={url}: {out}"
        );
        let refunds = app
            .opp()
            .query_by_id(&demo_credentials(), &db, true, &[PaymentType::Refund])
            .await
            .unwrap();
        assert!(refunds.is_empty(), "{era:?} url={url}: money moved");
    }
    let approvals = app.store.list_approvals(None).await.unwrap();
    assert_eq!(approvals.len(), 4);
    for a in &approvals {
        assert_eq!(a.status, paywarden::store::ApprovalStatus::Pending, "{a:?}");
        assert!(a.decided_by.is_none(), "{a:?}");
    }
    let audit = format!("{:?}", app.store.audit_records(None).await.unwrap());
    assert!(!audit.contains("via MCP elicitation"), "{audit}");

    // A hand-made 2026-07-28 retry carrying a real requestState and an "approve" answer.
    let stateless = app.client("/mcp", Era::Stateless).await;
    let mut retry = rmcp::model::CallToolRequestParams::new("perform_refund")
        .with_arguments(args.as_object().unwrap().clone())
        .with_request_state("forged-state");
    retry.input_responses = Some(
        [(
            "approval".to_string(),
            json!({"action": "accept", "content": {"approve": true}}),
        )]
        .into(),
    );
    let err = stateless.call_tool(retry).await.unwrap_err();
    assert!(format!("{err:?}").contains("requestState"), "{err:?}");

    // An operator (the page and the CLI decide through the store) approves one; the agent's
    // re-call with the approval id executes it, once.
    let id = approvals[0].id.clone();
    app.store
        .decide_approval(&id, true, "operator:carol", Some("checked"))
        .await
        .unwrap();
    let client = app.client("/mcp", Era::Legacy).await;
    let mut approved = args.clone();
    approved["approvalId"] = json!(id);
    let done = call_ok(&client, "perform_refund", approved.clone()).await;
    assert_eq!(done["status"], "executed", "{done}");
    let again = call_ok(&client, "perform_refund", approved).await;
    assert_eq!(again["idempotentReplay"], true, "{again}");
    let refunds = app
        .opp()
        .query_by_id(&demo_credentials(), &db, true, &[PaymentType::Refund])
        .await
        .unwrap();
    assert_eq!(refunds.len(), 1);
}

/// A session client that can only open URLs: its user goes to the approval page, where an
/// operator (here, the store call the page makes) approves.
#[derive(Clone)]
struct UserWhoOpensTheApprovalPage {
    store: paywarden::store::Store,
    config: rmcp::model::ClientConfig,
}

impl rmcp::ClientHandler for UserWhoOpensTheApprovalPage {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        self.config.clone()
    }

    async fn create_elicitation(
        &self,
        request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        let rmcp::model::ElicitRequestParams::UrlElicitationParams { url, .. } = request else {
            panic!("a URL-only client must be sent a URL");
        };
        let id = url.rsplit('/').next().unwrap().to_string();
        assert!(url.contains("/approvals/apr_"), "{url}");
        self.store
            .decide_approval(&id, true, "carol", Some("on the page"))
            .await
            .unwrap();
        Ok(rmcp::model::ElicitResult::new(
            rmcp::model::ElicitationAction::Accept,
        ))
    }
}

#[tokio::test]
async fn a_url_mode_client_sends_its_user_to_the_approval_page() {
    use rmcp::ClientServiceExt;
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "2000.00",
            Currency::USD,
        )
        .await;
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        http::HeaderName::from_static("x-entity-id"),
        http::HeaderValue::from_static(paywarden_emulator::DEMO_ENTITY_ID),
    );
    headers.insert(
        http::HeaderName::from_static("x-token"),
        http::HeaderValue::from_static(paywarden_emulator::DEMO_TOKEN),
    );
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            format!("{}/mcp", app.base_url),
        )
        .custom_headers(headers.clone()),
    );
    let mut capabilities = rmcp::model::ClientCapabilities::default();
    let mut elicitation = rmcp::model::ElicitationCapability::default();
    elicitation.url = Some(rmcp::model::UrlElicitationCapability::default());
    capabilities.elicitation = Some(elicitation);
    let mut info = rmcp::model::Implementation::default();
    info.name = "browser-app".into();
    info.version = "1".into();
    let stateless_config = rmcp::model::ClientConfig::new(capabilities.clone(), info.clone())
        .with_protocol_version(rmcp::model::ProtocolVersion::V_2026_07_28);
    let stateless_transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            format!("{}/mcp", app.base_url),
        )
        .custom_headers(headers.clone()),
    );
    let config = rmcp::model::ClientConfig::new(capabilities, info)
        .with_protocol_version(rmcp::model::ProtocolVersion::V_2025_11_25);
    let client = UserWhoOpensTheApprovalPage {
        store: app.store.clone(),
        config,
    }
    .serve_with_lifecycle(transport, rmcp::ClientLifecycleMode::Initialize)
    .await
    .unwrap();

    let result = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("perform_refund").with_arguments(
                json!({"referenceId": db, "amount": "1500.00", "currency": "USD"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    let out = result.structured_content.clone().unwrap();
    assert_eq!(out["status"], "executed", "{out}");
    assert_eq!(out["amount"], "1500.00");
    let approvals = app.store.list_approvals(None).await.unwrap();
    assert_eq!(approvals[0].decided_by.as_deref(), Some("carol"));

    // A 2026-07-28 client: the same page, through an input_required round trip.
    let stateless = UserWhoOpensTheApprovalPage {
        store: app.store.clone(),
        config: stateless_config,
    }
    .serve_with_lifecycle(
        stateless_transport,
        rmcp::ClientLifecycleMode::Discover {
            preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
        },
    )
    .await
    .unwrap();
    let second = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "2000.00",
            Currency::USD,
        )
        .await;
    let result = stateless
        .call_tool(
            rmcp::model::CallToolRequestParams::new("perform_refund").with_arguments(
                json!({"referenceId": second, "amount": "1500.00", "currency": "USD"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    let out = result.structured_content.clone().unwrap();
    assert_eq!(out["status"], "executed", "{out}");
    assert_eq!(out["referencedId"], second.as_str());
}

/// The attack of issue 12: 20 separately confirmed refunds of 450 CHF on 20 different debits,
/// confirmed at once. The built-in rule wants a person from 2,000 moved today; one at a time it
/// holds, and it must hold under concurrency too: exactly 4 execute (1,800 CHF) and the rest
/// become approval requests. The daily total is evaluated and reserved atomically.
#[tokio::test]
async fn twenty_concurrent_confirmations_never_race_past_the_daily_cap() {
    let app = guarded_app().await;
    let client = std::sync::Arc::new(app.client("/mcp", Era::Stateless).await);
    let mut confirmed = Vec::new();
    for _ in 0..20 {
        let db = app
            .create_payment(
                &demo_credentials(),
                PaymentType::Debit,
                "450.00",
                Currency::from_code("CHF").unwrap(),
            )
            .await;
        let args = json!({"referenceId": db, "amount": "450.00", "currency": "CHF"});
        let preview = call_ok(&client, "perform_refund", args.clone()).await;
        assert_eq!(preview["status"], "confirmation_required", "{preview}");
        let mut with_token = args;
        with_token["confirmationToken"] = preview["confirmation"]["token"].clone();
        confirmed.push(with_token);
    }
    let mut handles = Vec::new();
    for args in confirmed {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            call_ok(&client, "perform_refund", args).await["status"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.unwrap());
    }
    let executed = statuses.iter().filter(|s| *s == "executed").count();
    assert_eq!(executed, 4, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| *s == "approval_pending").count(),
        16,
        "{statuses:?}"
    );
    let moved = app
        .store
        .moved_today(paywarden_emulator::DEMO_ENTITY_ID, "CHF")
        .await
        .unwrap();
    assert_eq!(moved, 180_000);
    // Nothing stays reserved once the calls have settled.
    assert_eq!(
        app.store
            .reserved_today(paywarden_emulator::DEMO_ENTITY_ID, "CHF")
            .await
            .unwrap(),
        0
    );
}

/// The attack of issue 12: an OPP approval completed through `get_approval` executes only what
/// the person saw. "Refund the remainder" of 900.00 is approved; meanwhile 100.00 is refunded;
/// `get_approval` must refuse the approval as stale (the remainder is now 800.00), send nothing,
/// and spend the approval, exactly as re-calling the tool with `approvalId` does.
#[tokio::test]
async fn an_approval_run_through_get_approval_is_checked_for_staleness() {
    let app = guarded_app().await;
    let db = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "900.00",
            Currency::EUR,
        )
        .await;
    let client = app.client("/mcp", Era::Legacy).await;
    // No amount: the refundable remainder, 900.00, which needs a person.
    let pending = call_ok(&client, "perform_refund", json!({"referenceId": db})).await;
    assert_eq!(pending["status"], "approval_pending", "{pending}");
    assert_eq!(pending["approval"]["preview"]["amount"], "900.00");
    let id = pending["approval"]["id"].as_str().unwrap().to_string();

    // Meanwhile a confirmed 100.00 refund of the same payment.
    let small = json!({"referenceId": db, "amount": "100.00", "currency": "EUR"});
    let preview = call_ok(&client, "perform_refund", small.clone()).await;
    let mut confirmed = small;
    confirmed["confirmationToken"] = preview["confirmation"]["token"].clone();
    assert_eq!(
        call_ok(&client, "perform_refund", confirmed).await["status"],
        "executed"
    );

    app.store
        .decide_approval(&id, true, "operator:carol", Some("900 to the customer"))
        .await
        .unwrap();
    let text = call_err(&client, "get_approval", json!({"approvalId": id})).await;
    assert!(text.contains("stale") || text.contains("changed"), "{text}");
    let refunds = app
        .opp()
        .query_by_id(&demo_credentials(), &db, true, &[PaymentType::Refund])
        .await
        .unwrap();
    assert_eq!(refunds.len(), 1, "only the 100.00 refund: {refunds:?}");
    assert_eq!(refunds[0].amount.minor_units(), 10_000);
    // The approval is spent: polling again does not run it either.
    let again = call(&client, "get_approval", json!({"approvalId": id}))
        .await
        .unwrap();
    let refunds = app
        .opp()
        .query_by_id(&demo_credentials(), &db, true, &[PaymentType::Refund])
        .await
        .unwrap();
    assert_eq!(refunds.len(), 1, "{again:?}");
}

/// The attack (black-box test, 2026-12-03): a call presenting an approved approval with other
/// arguments (a typo'd reference) is refused, and must not claim the approval's key so that the
/// rightful execution is then blocked forever ("key already used with different arguments").
#[tokio::test]
async fn a_mismatched_call_with_an_approval_cannot_block_the_rightful_one() {
    let app = guarded_app().await;
    let mut debits = Vec::new();
    for _ in 0..2 {
        debits.push(
            app.create_payment(
                &demo_credentials(),
                PaymentType::Debit,
                "900.00",
                Currency::EUR,
            )
            .await,
        );
    }
    let client = app.client("/mcp", Era::Stateless).await;
    let args = json!({"referenceId": debits[0], "amount": "750.00", "currency": "EUR"});
    let pending = call_ok(&client, "perform_refund", args.clone()).await;
    assert_eq!(pending["status"], "approval_pending", "{pending}");
    let id = pending["approval"]["id"].as_str().unwrap().to_string();
    app.store
        .decide_approval(&id, true, "alice", None)
        .await
        .unwrap();

    // A typo'd reference with the approval: refused by the check on provider state (OPP has
    // no such transaction), nothing moves.
    let wrong = json!({"referenceId": "8ac7a4c9ffffffffffffffffffffffff", "amount": "750.00", "currency": "EUR", "approvalId": id});
    let refused = call(&client, "perform_refund", wrong).await.unwrap();
    assert_eq!(refused.is_error, Some(true), "{}", text_of(&refused));

    // The rightful execution still runs, once.
    let mut follow_up = args;
    follow_up["approvalId"] = json!(id);
    let done = call_ok(&client, "perform_refund", follow_up).await;
    assert_eq!(done["status"], "executed", "{done}");
    let polled = call_ok(&client, "get_approval", json!({"approvalId": id})).await;
    assert_eq!(polled["id"], done["id"]);
    for (db, expected) in [(&debits[0], 1), (&debits[1], 0)] {
        let linked = call_ok(
            &client,
            "get_transactions",
            json!({"id": db, "paymentTypes": ["RF"]}),
        )
        .await;
        assert_eq!(
            linked["payments"].as_array().map_or(0, Vec::len),
            expected,
            "{linked}"
        );
    }
}

/// The daily totals the cumulative limits read (`movement_days`, migration 0015) are the sum
/// of the day's movements: every movement recorded today counts once (a transaction recorded
/// twice, once), another day's, currency's or entity's does not, movements recorded before
/// the migration are counted by its backfill, and a movement cannot be changed or removed
/// behind the totals' back.
#[tokio::test]
async fn the_daily_total_is_the_sum_of_the_days_movements() {
    use paywarden::store::Store;
    let db = TestDatabase::fresh().await;
    let dir = tempfile::tempdir().unwrap();
    // The schema as it was before the daily totals (migrations up to 0014), with movements of
    // today and yesterday recorded then.
    let before = db.migrations_up_to(14);
    let url = db.url_in(dir.path());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    before.run(&pool).await.unwrap();
    let now = chrono::Utc::now();
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    for (entity, currency, amount, at) in [
        ("e1", "EUR", 1_000_i64, ts(midnight)),
        ("e1", "EUR", 250, ts(now)),
        (
            "e1",
            "EUR",
            7_000,
            ts(midnight - chrono::Duration::microseconds(1)),
        ),
        ("e1", "USD", 300, ts(now)),
        ("e2", "EUR", 40, ts(now)),
    ] {
        sqlx::query(
            "INSERT INTO movements (entity_id, toolset, tool, reference_id, transaction_id, amount_minor, currency, at) \
             VALUES ($1, 'opp', 'perform_refund', 'r', $2, $3, $4, $5)",
        )
        .bind(entity)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(amount)
        .bind(currency)
        .bind(at)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    // Opening the store applies 0015: the backfill counts today's movements only.
    let store = db.store(dir.path()).await;
    assert_eq!(store.moved_today("e1", "EUR").await.unwrap(), 1_250);
    assert_eq!(store.moved_today("e1", "USD").await.unwrap(), 300);
    assert_eq!(store.moved_today("e2", "EUR").await.unwrap(), 40);
    assert_eq!(store.moved_today("e3", "EUR").await.unwrap(), 0);

    // Movements recorded now are added by the trigger, a transaction once.
    for (tx, amount) in [("t1", 5_i64), ("t2", 7), ("t1", 5)] {
        store
            .record_movement("e1", "opp", "perform_refund", "r", tx, amount, "EUR")
            .await
            .unwrap();
    }
    assert_eq!(store.moved_today("e1", "EUR").await.unwrap(), 1_262);
    assert_eq!(store.moved_today("e1", "USD").await.unwrap(), 300);

    // Concurrent movements of one entity and day: none is lost.
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let store: Store = store.clone();
            tokio::spawn(async move {
                store
                    .record_movement(
                        "e1",
                        "opp",
                        "perform_refund",
                        "r",
                        &format!("c{i}"),
                        100,
                        "EUR",
                    )
                    .await
                    .unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(store.moved_today("e1", "EUR").await.unwrap(), 3_262);

    // The totals cannot be bypassed: movements are append-only.
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    for statement in [
        "UPDATE movements SET amount_minor = 0 WHERE entity_id = 'e1'",
        "DELETE FROM movements WHERE entity_id = 'e1'",
    ] {
        let err = sqlx::query(statement)
            .execute(&pool)
            .await
            .expect_err(statement);
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
    assert_eq!(store.moved_today("e1", "EUR").await.unwrap(), 3_262);
}

/// The cumulative-limit decision across versions: a paywarden of an earlier version decides
/// under a lease row on (entity, `limits:<currency>`) rather than a lock. While such a lease is
/// live, this version's decision must not read or reserve anything (`Held`); once it has
/// expired, the decision goes ahead and leaves the reservation. On SQLite the decision only
/// reads that row (its write transaction is the lock); a check that ignored the row would
/// reserve beside an earlier version's decision in flight.
#[tokio::test]
async fn an_earlier_versions_live_limit_lease_holds_the_decision_until_it_expires() {
    use paywarden::store::{limit_lease_name, LimitDecision};
    let app = guarded_app().await;
    let entity = paywarden_emulator::DEMO_ENTITY_ID;
    let deadline = || tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    assert!(app
        .store
        .try_lock_transaction(
            entity,
            &limit_lease_name("EUR"),
            "an-earlier-version",
            chrono::Duration::seconds(60),
        )
        .await
        .unwrap());
    let held = app
        .store
        .decide_and_reserve(entity, "EUR", 500, None, deadline(), |_| None::<()>)
        .await
        .unwrap();
    assert!(matches!(held, LimitDecision::Held), "{held:?}");
    assert_eq!(app.store.reserved_today(entity, "EUR").await.unwrap(), 0);
    // Another currency's limit is not held by it.
    let other = app
        .store
        .decide_and_reserve(entity, "USD", 700, None, deadline(), |_| None::<()>)
        .await
        .unwrap();
    assert!(matches!(other, LimitDecision::Reserved(_)), "{other:?}");
    // Expired: the earlier version's lease no longer holds anything.
    app.store
        .unlock_transaction(entity, &limit_lease_name("EUR"), "an-earlier-version")
        .await
        .unwrap();
    assert!(app
        .store
        .try_lock_transaction(
            entity,
            &limit_lease_name("EUR"),
            "an-earlier-version",
            chrono::Duration::seconds(-1),
        )
        .await
        .unwrap());
    let reserved = app
        .store
        .decide_and_reserve(entity, "EUR", 500, None, deadline(), |_| None::<()>)
        .await
        .unwrap();
    assert!(
        matches!(reserved, LimitDecision::Reserved(_)),
        "{reserved:?}"
    );
    assert_eq!(app.store.reserved_today(entity, "EUR").await.unwrap(), 500);
}

/// A confirmation token is spent in one statement (`Store::use_confirmation`), and a token it
/// does not spend says why, in this order: never issued, another entity's, other arguments or
/// tool, already used, expired. Ten concurrent uses of one token: exactly one spends it.
#[tokio::test]
async fn a_confirmation_token_is_spent_once_and_a_refused_one_says_why() {
    use paywarden::store::{Confirmation, ConfirmationError};
    let app = spawn_app().await;
    let store = &app.store;
    let entity = paywarden_emulator::DEMO_ENTITY_ID;
    let binding = |minutes: i64| Confirmation {
        entity_id: entity.into(),
        tool: "perform_refund".into(),
        request_hash: "hash-a".into(),
        preview: json!({"amount": "5.00", "currency": "EUR"}),
        rule: "confirm small refunds".into(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(minutes),
    };
    store
        .create_confirmation("tok-live", &binding(10))
        .await
        .unwrap();
    store
        .create_confirmation("tok-old", &binding(-1))
        .await
        .unwrap();
    let refusal = |r: Result<Confirmation, ConfirmationError>| match r {
        Err(e) => format!("{e:?}"),
        Ok(c) => panic!("spent: {c:?}"),
    };
    let use_as =
        |token: &'static str, entity: &'static str, tool: &'static str, hash: &'static str| {
            let store = store.clone();
            async move { store.use_confirmation(token, entity, tool, hash).await }
        };
    assert_eq!(
        refusal(use_as("tok-none", entity, "perform_refund", "hash-a").await),
        "Unknown"
    );
    assert_eq!(
        refusal(
            use_as(
                "tok-live",
                paywarden_emulator::SECOND_ENTITY_ID,
                "perform_refund",
                "hash-a"
            )
            .await
        ),
        "WrongEntity"
    );
    assert_eq!(
        refusal(use_as("tok-live", entity, "perform_refund", "hash-b").await),
        "Mismatch"
    );
    assert_eq!(
        refusal(use_as("tok-live", entity, "perform_capture", "hash-a").await),
        "Mismatch"
    );
    assert!(
        refusal(use_as("tok-old", entity, "perform_refund", "hash-a").await).starts_with("Expired")
    );
    // None of those spent the live token; ten at once spend it once.
    let uses: Vec<_> = (0..10)
        .map(|_| tokio::spawn(use_as("tok-live", entity, "perform_refund", "hash-a")))
        .collect();
    let mut spent = Vec::new();
    let mut refused = Vec::new();
    for u in uses {
        match u.await.unwrap() {
            Ok(c) => spent.push(c),
            Err(e) => refused.push(format!("{e:?}")),
        }
    }
    assert_eq!(spent.len(), 1, "{refused:?}");
    assert_eq!(
        spent[0].preview,
        json!({"amount": "5.00", "currency": "EUR"})
    );
    assert_eq!(spent[0].rule, "confirm small refunds");
    assert!(refused.iter().all(|e| e == "Used"), "{refused:?}");
    assert_eq!(
        refusal(use_as("tok-live", entity, "perform_refund", "hash-a").await),
        "Used"
    );
    // Given back (the execution sent nothing), it is spendable once more.
    assert!(store.release_confirmation("tok-live").await.unwrap());
    assert!(use_as("tok-live", entity, "perform_refund", "hash-a")
        .await
        .is_ok());
}
