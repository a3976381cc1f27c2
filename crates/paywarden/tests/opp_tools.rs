//! The OPP toolset end to end: the real server on port 0, the emulator behind it, rmcp's
//! client over Streamable HTTP, in both protocol eras and on both endpoints.

mod common;

use common::*;
use paywarden_domain::{Currency, PaymentType};
use serde_json::json;

const ENDPOINTS: [&str; 2] = ["/mcp", "/agentic/v1/mcp"];

#[tokio::test]
async fn lists_the_eight_tools_with_annotations_and_output_schemas_in_both_eras() {
    let app = spawn_app().await;
    for path in ENDPOINTS {
        for era in [Era::Legacy, Era::Stateless] {
            let client = app.client(path, era).await;
            let negotiated = client
                .peer_info()
                .expect("server info")
                .protocol_version
                .clone();
            match era {
                Era::Legacy => assert_eq!(negotiated.as_str(), "2025-11-25"),
                Era::Stateless => assert_eq!(negotiated.as_str(), "2026-07-28"),
            }
            let info = client.peer_info().expect("server info");
            assert!(info
                .instructions
                .as_deref()
                .unwrap_or_default()
                .contains("SANDBOX"));
            let all_tools = client.list_all_tools().await.expect("tools");
            // The unified endpoint adds paywarden's own get_approval, the ops toolset's seven
            // tools (tested in ops_tools.rs) and the ifthenpay toolset's nine (ifthenpay.rs) to
            // the OPP seed's eight.
            let tools: Vec<_> = all_tools
                .into_iter()
                .filter(|t| !paywarden::mcp::ops::OPS_TOOLS.contains(&t.name.as_ref()))
                .filter(|t| !paywarden::service::ifthenpay::TOOLS.contains(&t.name.as_ref()))
                .collect();
            let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
            names.sort();
            if path == "/mcp" {
                assert_eq!(names.remove(0), "get_approval");
            }
            assert_eq!(
                names,
                [
                    "get_transactions",
                    "perform_capture",
                    "perform_chargeback",
                    "perform_chargeback_reversal",
                    "perform_rebill",
                    "perform_refund",
                    "perform_reversal",
                    "search_transactions"
                ]
            );
            for tool in tools.iter().filter(|t| t.name != "get_approval") {
                let a = tool.annotations.as_ref().expect("annotations");
                let read_only = tool.name.starts_with("get_") || tool.name.starts_with("search_");
                assert_eq!(a.read_only_hint, Some(read_only), "{}", tool.name);
                assert_eq!(a.destructive_hint, Some(!read_only), "{}", tool.name);
                assert_eq!(a.open_world_hint, Some(true), "{}", tool.name);
                assert!(
                    tool.output_schema.is_some(),
                    "{} has no outputSchema",
                    tool.name
                );
                let schema = serde_json::Value::Object((*tool.input_schema).clone());
                if !read_only {
                    assert_eq!(
                        schema["required"],
                        json!(["referenceId"]
                            .iter()
                            .chain(if tool.name == "perform_rebill" {
                                ["amount", "currency"].iter()
                            } else {
                                [].iter()
                            })
                            .collect::<Vec<_>>()),
                        "{}",
                        tool.name
                    );
                    assert!(schema["properties"]["idempotencyKey"].is_object());
                }
            }
            client.cancel().await.ok();
        }
    }
}

#[tokio::test]
async fn capture_refund_search_with_exact_amounts_and_result_codes() {
    let app = spawn_app().await;
    let creds = demo_credentials();
    let pa = app
        .create_payment(
            &creds,
            PaymentType::Preauthorization,
            "100.00",
            Currency::EUR,
        )
        .await;
    for era in [Era::Legacy, Era::Stateless] {
        let client = app.client("/agentic/v1/mcp", era).await;
        let first_capture = era == Era::Legacy;
        let cp = call_ok(
            &client,
            "perform_capture",
            json!({"referenceId": pa, "amount": "40.00", "currency": "EUR"}),
        )
        .await;
        assert_eq!(cp["paymentType"], "CP");
        assert_eq!(cp["referencedId"], pa.as_str());
        assert_eq!(cp["amount"], "40.00");
        assert_eq!(cp["amountMinor"], 4000);
        assert_eq!(cp["currency"], "EUR");
        assert_eq!(cp["result"]["code"], "000.100.110");
        assert_eq!(cp["resultCategory"], "success");
        assert_eq!(cp["sandbox"], true);
        assert_eq!(cp["idempotentReplay"], false);
        let expected_capturable = if first_capture { "60.00" } else { "20.00" };
        assert_eq!(cp["balances"]["capturable"], expected_capturable);

        let rf = call_ok(
            &client,
            "perform_refund",
            json!({"referenceId": cp["id"], "amount": "15.50", "currency": "EUR"}),
        )
        .await;
        assert_eq!(rf["paymentType"], "RF");
        assert_eq!(rf["amount"], "15.50");
        assert_eq!(rf["referencedId"], cp["id"]);
        assert_eq!(rf["balances"]["refundable"], "24.50");

        let found = call_ok(
            &client,
            "search_transactions",
            json!({"paymentTypes": ["CP", "RF"], "currency": "EUR", "limit": 100}),
        )
        .await;
        let ids: Vec<_> = found["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect();
        assert!(
            ids.contains(&cp["id"]) && ids.contains(&rf["id"]),
            "{found}"
        );
        client.cancel().await.ok();
    }
    // The authorisation now has 80.00 captured: capturing the remainder by default takes 20.00.
    let client = app.client("/mcp", Era::Legacy).await;
    let rest = call_ok(&client, "perform_capture", json!({"referenceId": pa})).await;
    assert_eq!(rest["amount"], "20.00");
    assert_eq!(rest["balances"]["capturable"], "0.00");
    let text = call_err(&client, "perform_capture", json!({"referenceId": pa})).await;
    assert!(text.contains("700.400.100"), "{text}");
}

#[tokio::test]
async fn a_retried_capture_with_the_same_idempotency_key_moves_money_once() {
    let app = spawn_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "50.00",
            Currency::EUR,
        )
        .await;
    let client = app.client("/mcp", Era::Stateless).await;
    let args = json!({"referenceId": pa, "amount": "10.00", "currency": "EUR", "idempotencyKey": "order-77-capture"});
    let first = call_ok(&client, "perform_capture", args.clone()).await;
    let second = call_ok(&client, "perform_capture", args.clone()).await;
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["idempotentReplay"], true);
    assert_eq!(first["idempotentReplay"], false);

    let linked = call_ok(&client, "get_transactions", json!({"id": pa})).await;
    let captures: Vec<_> = linked["payments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["paymentType"] == "CP")
        .collect();
    assert_eq!(captures.len(), 1, "{linked}");

    // The same key with other arguments is refused, and moves nothing.
    let text = call_err(
        &client,
        "perform_capture",
        json!({"referenceId": pa, "amount": "11.00", "currency": "EUR", "idempotencyKey": "order-77-capture"}),
    )
    .await;
    assert!(
        text.contains("idempotency key") && text.contains("different arguments"),
        "{text}"
    );
    let linked = call_ok(
        &client,
        "get_transactions",
        json!({"id": pa, "paymentTypes": ["CP"]}),
    )
    .await;
    assert_eq!(linked["payments"].as_array().unwrap().len(), 1);

    // Concurrent retries with one key execute once.
    let pa2 = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "50.00",
            Currency::EUR,
        )
        .await;
    let args = json!({"referenceId": pa2, "amount": "5.00", "currency": "EUR", "idempotencyKey": "concurrent-key"});
    let mut handles = Vec::new();
    for _ in 0..10 {
        let c = app.client("/mcp", Era::Stateless).await;
        let a = args.clone();
        handles.push(tokio::spawn(
            async move { call(&c, "perform_capture", a).await },
        ));
    }
    for h in handles {
        let _ = h.await.expect("task");
    }
    let linked = call_ok(
        &client,
        "get_transactions",
        json!({"id": pa2, "paymentTypes": ["CP"]}),
    )
    .await;
    assert_eq!(linked["payments"].as_array().unwrap().len(), 1, "{linked}");
}

#[tokio::test]
async fn reversal_rebill_chargeback_and_chargeback_reversal() {
    let app = spawn_app().await;
    let creds = demo_credentials();
    let client = app.client("/mcp", Era::Legacy).await;

    let pa = app
        .create_payment(
            &creds,
            PaymentType::Preauthorization,
            "30.00",
            Currency::USD,
        )
        .await;
    let rv = call_ok(&client, "perform_reversal", json!({"referenceId": pa})).await;
    assert_eq!(rv["paymentType"], "RV");
    assert_eq!(rv["amount"], "30.00");
    assert_eq!(rv["balances"]["reversed"], true);
    let text = call_err(&client, "perform_capture", json!({"referenceId": pa})).await;
    assert!(text.contains("700.400.100"), "{text}");

    let db = app
        .create_payment(&creds, PaymentType::Debit, "1500", Currency::JPY)
        .await;
    let rb = call_ok(
        &client,
        "perform_rebill",
        json!({"referenceId": db, "amount": "300", "currency": "JPY"}),
    )
    .await;
    assert_eq!(rb["paymentType"], "RB");
    assert_eq!(rb["amountMinor"], 300);

    let cb = call_ok(&client, "perform_chargeback", json!({"referenceId": db})).await;
    assert_eq!(cb["paymentType"], "CB");
    assert_eq!(cb["amount"], "1500");
    // One chargeback per payment; no refunds while charged back.
    let text = call_err(&client, "perform_chargeback", json!({"referenceId": db})).await;
    assert!(text.contains("700.400.400"), "{text}");
    let text = call_err(&client, "perform_refund", json!({"referenceId": db})).await;
    assert!(text.contains("700.300.600"), "{text}");

    let cr = call_ok(
        &client,
        "perform_chargeback_reversal",
        json!({"referenceId": cb["id"]}),
    )
    .await;
    assert_eq!(cr["paymentType"], "CR");
    let text = call_err(
        &client,
        "perform_chargeback_reversal",
        json!({"referenceId": cb["id"]}),
    )
    .await;
    assert!(text.contains("700.400.410"), "{text}");
    // After the representment the refund works again.
    let rf = call_ok(
        &client,
        "perform_refund",
        json!({"referenceId": db, "amount": "500", "currency": "JPY"}),
    )
    .await;
    assert_eq!(rf["amountMinor"], 500);
}

#[tokio::test]
async fn get_transactions_by_merchant_reference_and_linked() {
    let app = spawn_app_with(|c| {
        c.demo.seed = true;
        c.demo.payments = 12;
    })
    .await;
    let client = app.client("/agentic/v1/mcp", Era::Legacy).await;
    let found = call_ok(
        &client,
        "get_transactions",
        json!({"merchantTransactionId": "pw-demo-0002", "includeLinkedTransactions": false}),
    )
    .await;
    let payments = found["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["paymentType"], "PA");
    let with_linked = call_ok(
        &client,
        "get_transactions",
        json!({"merchantTransactionId": "pw-demo-0002"}),
    )
    .await;
    let types: Vec<_> = with_linked["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["paymentType"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["PA", "CP"]);
    let linked = call_ok(
        &client,
        "get_transactions",
        json!({"id": payments[0]["id"]}),
    )
    .await;
    let types: Vec<_> = linked["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["paymentType"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["PA", "CP"]);
    let only = call_ok(
        &client,
        "get_transactions",
        json!({"id": payments[0]["id"], "includeLinkedTransactions": false}),
    )
    .await;
    assert_eq!(only["payments"].as_array().unwrap().len(), 1);

    // Search: the seeded history spans 120 days; filters and paging.
    let all = call_ok(
        &client,
        "search_transactions",
        json!({"dateFrom": "2000-01-01", "limit": 5}),
    )
    .await;
    assert!(all["totalCount"].as_u64().unwrap() >= 12, "{all}");
    assert_eq!(all["records"].as_array().unwrap().len(), 5);
    let page2 = call_ok(
        &client,
        "search_transactions",
        json!({"dateFrom": "2000-01-01", "limit": 5, "pageNo": 2}),
    )
    .await;
    assert_ne!(all["records"][0]["id"], page2["records"][0]["id"]);
    let declined = call_ok(
        &client,
        "search_transactions",
        json!({"dateFrom": "2000-01-01", "resultCategories": ["success"], "paymentTypes": ["PA"]}),
    )
    .await;
    for r in declined["records"].as_array().unwrap() {
        assert_eq!(r["paymentType"], "PA");
        assert_eq!(r["resultCategory"], "success");
    }
    let ranged = call_ok(&client, "search_transactions", json!({"dateFrom": "2000-01-01", "currency": "EUR", "amountMin": "100.00", "amountMax": "200.00"})).await;
    for r in ranged["records"].as_array().unwrap() {
        let m = r["amountMinor"].as_i64().unwrap();
        assert!(
            (10_000..=20_000).contains(&m) && r["currency"] == "EUR",
            "{r}"
        );
    }
}

#[tokio::test]
async fn bad_arguments_are_invalid_params_and_change_nothing() {
    let app = spawn_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "10.00",
            Currency::EUR,
        )
        .await;
    let client = app.client("/mcp", Era::Legacy).await;
    let cases = [
        ("perform_capture", json!({}), "referenceId"),
        (
            "perform_capture",
            json!({"referenceId": 42}),
            "invalid type",
        ),
        (
            "perform_capture",
            json!({"referenceId": pa, "amount": "1.001", "currency": "EUR"}),
            "decimal",
        ),
        (
            "perform_capture",
            json!({"referenceId": pa, "amount": 5.0, "currency": "EUR"}),
            "invalid type",
        ),
        (
            "perform_capture",
            json!({"referenceId": pa, "amount": "-1.00", "currency": "EUR"}),
            "negative",
        ),
        (
            "perform_capture",
            json!({"referenceId": pa, "amount": "0.00", "currency": "EUR"}),
            "zero",
        ),
        (
            "perform_capture",
            json!({"referenceId": pa, "amount": "1e3", "currency": "EUR"}),
            "exponent",
        ),
        (
            "perform_capture",
            json!({"referenceId": pa, "amount": "NaN", "currency": "EUR"}),
            "",
        ),
        (
            "perform_capture",
            json!({"referenceId": pa, "amount": "1.00", "currency": "EUX"}),
            "EUX",
        ),
        (
            "perform_capture",
            json!({"referenceId": pa, "amount": "1.00"}),
            "without currency",
        ),
        (
            "perform_capture",
            json!({"referenceId": pa, "amuont": "1.00"}),
            "unknown field",
        ),
        (
            "perform_capture",
            json!({"referenceId": "../../v1/payments"}),
            "not an OPP transaction id",
        ),
        ("perform_rebill", json!({"referenceId": pa}), "amount"),
        (
            "get_transactions",
            json!({"id": pa, "merchantTransactionId": "x"}),
            "not both",
        ),
        (
            "get_transactions",
            json!({"id": pa, "limit": 5}),
            "most recent",
        ),
        ("get_transactions", json!({"limit": 0}), "limit"),
        ("get_transactions", json!({"pageNo": 0}), "pageNo"),
        (
            "search_transactions",
            json!({"dateFrom": "yesterday"}),
            "not a date",
        ),
        (
            "search_transactions",
            json!({"dateFrom": "2026-02-01", "dateTo": "2026-01-01"}),
            "after",
        ),
        (
            "search_transactions",
            json!({"amountMin": "1.00"}),
            "currency",
        ),
        ("search_transactions", json!({"limit": 1000}), "limit"),
        ("search_transactions", json!({"paymentTypes": ["XX"]}), "XX"),
    ];
    for (tool, args, needle) in cases {
        let message = call_invalid(&client, tool, args.clone()).await;
        assert!(
            message.to_lowercase().contains(&needle.to_lowercase()),
            "{tool}({args}): {message}"
        );
    }
    // Nothing moved.
    let linked = call_ok(&client, "get_transactions", json!({"id": pa})).await;
    assert_eq!(linked["payments"].as_array().unwrap().len(), 1);

    // An unknown tool is a protocol error too.
    let err = call(&client, "perform_payout", json!({}))
        .await
        .expect_err("unknown tool");
    assert!(format!("{err:?}").contains("perform_payout"), "{err:?}");
}

#[tokio::test]
async fn provider_rejections_name_the_result_code_and_change_nothing() {
    let app = spawn_app().await;
    let creds = demo_credentials();
    let pa = app
        .create_payment(
            &creds,
            PaymentType::Preauthorization,
            "10.00",
            Currency::EUR,
        )
        .await;
    let db = app
        .create_payment(&creds, PaymentType::Debit, "20.00", Currency::EUR)
        .await;
    let client = app.client("/mcp", Era::Stateless).await;
    let cases = [
        (
            "perform_capture",
            json!({"referenceId": "8ac7a4c9ffffffffffffffffffffffff"}),
            "700.100.100",
        ),
        (
            "perform_capture",
            json!({"referenceId": pa, "amount": "10.01", "currency": "EUR"}),
            "700.400.100",
        ),
        (
            "perform_capture",
            json!({"referenceId": pa, "amount": "5.00", "currency": "USD"}),
            "700.100.500",
        ),
        ("perform_capture", json!({"referenceId": db}), "700.400.510"),
        ("perform_refund", json!({"referenceId": pa}), "700.400.520"),
        (
            "perform_refund",
            json!({"referenceId": db, "amount": "20.01", "currency": "EUR"}),
            "700.400.200",
        ),
        (
            "perform_reversal",
            json!({"referenceId": db}),
            "700.100.700",
        ),
        (
            "perform_rebill",
            json!({"referenceId": pa, "amount": "1.00", "currency": "EUR"}),
            "700.100.700",
        ),
        (
            "perform_chargeback_reversal",
            json!({"referenceId": db}),
            "700.400.420",
        ),
    ];
    for (tool, args, code) in cases {
        let text = call_err(&client, tool, args.clone()).await;
        assert!(text.contains(code), "{tool}({args}): {text}");
        assert!(text.contains("What to do"), "{text}");
        assert!(text.starts_with("[SANDBOX"), "{text}");
    }
    for id in [&pa, &db] {
        let linked = call_ok(&client, "get_transactions", json!({"id": id})).await;
        assert_eq!(linked["payments"].as_array().unwrap().len(), 1, "{linked}");
    }
}

#[tokio::test]
async fn another_entitys_transaction_is_invisible_and_untouchable() {
    let app = spawn_app().await;
    let theirs = app
        .create_payment(
            &second_credentials(),
            PaymentType::Debit,
            "99.00",
            Currency::EUR,
        )
        .await;
    let client = app.client("/mcp", Era::Legacy).await; // the demo entity
    let text = call_err(&client, "perform_refund", json!({"referenceId": theirs})).await;
    assert!(text.contains("700.100.100"), "{text}");
    let text = call_err(&client, "get_transactions", json!({"id": theirs})).await;
    assert!(text.contains("No transaction found"), "{text}");
    let owner = app
        .client_as(
            "/mcp",
            Era::Legacy,
            paywarden_emulator::SECOND_ENTITY_ID,
            paywarden_emulator::SECOND_TOKEN,
        )
        .await;
    let linked = call_ok(&owner, "get_transactions", json!({"id": theirs})).await;
    assert_eq!(linked["payments"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    for path in ENDPOINTS {
        for (headers, missing) in [
            (vec![], "X-Entity-Id"),
            (vec![("X-Token", "t")], "X-Entity-Id"),
            (vec![("X-Entity-Id", "e")], "X-Token"),
        ] {
            let mut req = http
                .post(format!("{}{}", app.base_url, path))
                .header("Accept", "application/json, text/event-stream")
                .json(&body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401);
            let text = resp.text().await.unwrap();
            assert!(
                text.contains(&format!("missing {missing} header")),
                "{text}"
            );
        }
    }
    // Wrong token: OPP (the emulator) judges it before anything is served; 401 says so.
    let refused = try_connect_client(
        &app.base_url,
        "/mcp",
        Era::Legacy,
        paywarden_emulator::DEMO_ENTITY_ID,
        "not-the-token",
    )
    .await
    .expect_err("a wrong token is refused");
    assert!(refused.contains("401"), "{refused}");
    let resp = http
        .post(format!("{}/mcp", app.base_url))
        .header("Accept", "application/json, text/event-stream")
        .header("X-Entity-Id", paywarden_emulator::DEMO_ENTITY_ID)
        .header("X-Token", "not-the-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.unwrap();
    assert!(text.contains("800.900.300"), "{text}");
    assert!(!text.contains("not-the-token"));
}

#[tokio::test]
async fn malformed_json_and_foreign_hosts_are_refused() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/mcp", app.base_url))
        .header("X-Entity-Id", "e")
        .header("X-Token", "t")
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32700, "{body}");

    let resp = http
        .post(format!("{}/mcp", app.base_url))
        .header("Host", "evil.example")
        .header("X-Entity-Id", "e")
        .header("X-Token", "t")
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = http
        .post(format!("{}/mcp", app.base_url))
        .header("Origin", "https://evil.example")
        .header("X-Entity-Id", "e")
        .header("X-Token", "t")
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // The attack (black-box test, 2026-12-03): a host-only Origin check read these as the
    // allowed 127.0.0.1 / localhost.
    for origin in [
        "http://127.0.0.1:1.evil.com",
        "http://localhost:80.evil.example",
        "http://127.0.0.1:1@evil.example",
    ] {
        let resp = http
            .post(format!("{}/mcp", app.base_url))
            .header("Origin", origin)
            .header("X-Entity-Id", "e")
            .header("X-Token", "t")
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{origin}");
    }

    let resp = http
        .get(format!("{}/approvals", app.base_url))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = http
        .get(format!("{}/approvals", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "the page itself still needs an operator"
    );

    let big = "x".repeat(2 * 1024 * 1024);
    let resp = http
        .post(format!("{}/mcp", app.base_url))
        .header("X-Entity-Id", "e")
        .header("X-Token", "t")
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    let health: serde_json::Value = http
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok", "sandbox": true}));
}

#[tokio::test]
async fn every_call_is_audited_without_secrets_and_the_chain_verifies() {
    let app = spawn_app().await;
    let pa = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Preauthorization,
            "10.00",
            Currency::EUR,
        )
        .await;
    let client = app.client("/mcp", Era::Legacy).await;
    call_ok(
        &client,
        "perform_capture",
        json!({"referenceId": pa, "amount": "1.00", "currency": "EUR", "idempotencyKey": "k1"}),
    )
    .await;
    call_ok(
        &client,
        "perform_capture",
        json!({"referenceId": pa, "amount": "1.00", "currency": "EUR", "idempotencyKey": "k1"}),
    )
    .await;
    call_err(
        &client,
        "perform_capture",
        json!({"referenceId": pa, "amount": "99.00", "currency": "EUR"}),
    )
    .await;
    call_invalid(
        &client,
        "perform_capture",
        json!({"referenceId": pa, "amount": "1.001", "currency": "EUR"}),
    )
    .await;
    call_ok(&client, "get_transactions", json!({"id": pa})).await;
    let records = app.store.audit_records(None).await.unwrap();
    let outcomes: Vec<_> = records
        .iter()
        .map(|r| (r.entry.tool.as_str(), r.entry.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("perform_capture", "ok"),
            ("perform_capture", "replay"),
            ("perform_capture", "rejected"),
            ("perform_capture", "error"),
            ("get_transactions", "ok"),
        ]
    );
    let first = &records[0].entry;
    assert_eq!(first.entity_id, paywarden_emulator::DEMO_ENTITY_ID);
    assert_eq!(first.result_code.as_deref(), Some("000.100.110"));
    assert!(first.provider_request_id.is_some());
    assert!(first.transaction_id.is_some());
    assert_eq!(first.client_name.as_deref(), Some("paywarden-tests"));
    assert_eq!(records[2].entry.result_code.as_deref(), Some("700.400.100"));
    assert!(app.store.verify_audit().await.unwrap().is_none());

    // The demo token appears nowhere in paywarden's database.
    drop(client);
    let mut found = false;
    for entry in std::fs::read_dir(app.data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("paywarden.db") {
            let bytes = std::fs::read(&path).unwrap();
            found |= bytes
                .windows(paywarden_emulator::DEMO_TOKEN.len())
                .any(|w| w == paywarden_emulator::DEMO_TOKEN.as_bytes());
        }
    }
    assert!(!found, "the demo token leaked into paywarden's database");
}

#[tokio::test]
async fn an_unreachable_provider_is_a_clear_error_and_a_slow_one_times_out() {
    // Unreachable: a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    // Configured entities authenticate callers without OPP, so the tools meet the outage.
    let app = spawn_app_with(|c| {
        c.opp.base_url = Some(closed_url.clone());
        c.entities = paywarden::app::demo_entities();
    })
    .await;
    let client = app.client("/mcp", Era::Legacy).await;
    let text = call_err(
        &client,
        "perform_capture",
        json!({"referenceId": "8ac7a4c9ffffffffffffffffffffffff", "idempotencyKey": "u1"}),
    )
    .await;
    assert!(
        text.contains("could not be reached") && text.contains("nothing was sent"),
        "{text}"
    );
    // Nothing was sent, so the same key may be retried.
    let text = call_err(
        &client,
        "perform_capture",
        json!({"referenceId": "8ac7a4c9ffffffffffffffffffffffff", "idempotencyKey": "u1"}),
    )
    .await;
    assert!(text.contains("could not be reached"), "{text}");

    // Slow: an emulator that answers after 800 ms, a client that waits 300 ms.
    let dir = tempfile::tempdir().unwrap();
    let mut emulator_config = paywarden_emulator::EmulatorConfig::demo(dir.path().join("slow.db"));
    emulator_config.latency = std::time::Duration::from_millis(800);
    let emulator = paywarden_emulator::Emulator::open(emulator_config)
        .await
        .unwrap();
    let running = emulator
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    let url = running.base_url.clone();
    let app = spawn_app_with(|c| {
        c.opp.base_url = Some(url);
        c.opp.timeout_ms = 300;
        c.entities = paywarden::app::demo_entities();
    })
    .await;
    let client = app.client("/mcp", Era::Stateless).await;
    let text = call_err(
        &client,
        "get_transactions",
        json!({"id": "8ac7a4c9ffffffffffffffffffffffff"}),
    )
    .await;
    assert!(text.contains("did not answer"), "{text}");
    drop(running);
}

/// The OPP seed makes every `get_transactions` parameter optional: `{}` lists the most recent
/// transactions (the last 30 days), newest first, paged; other entities' never appear.
#[tokio::test]
async fn get_transactions_without_arguments_lists_the_most_recent_newest_first() {
    let app = spawn_app_with(|c| {
        c.demo.seed = true;
        c.demo.payments = 12;
    })
    .await;
    let theirs = app
        .create_payment(
            &second_credentials(),
            PaymentType::Debit,
            "3.21",
            Currency::EUR,
        )
        .await;
    let mine = app
        .create_payment(
            &demo_credentials(),
            PaymentType::Debit,
            "1.23",
            Currency::EUR,
        )
        .await;
    let client = app.client("/agentic/v1/mcp", Era::Legacy).await;

    let recent = call_ok(&client, "get_transactions", json!({})).await;
    let payments = recent["payments"].as_array().unwrap();
    assert!(!payments.is_empty(), "{recent}");
    // The payment just made is the newest.
    assert_eq!(payments[0]["id"], mine, "{recent}");
    assert!(payments.iter().all(|p| p["id"] != theirs.as_str()));
    let stamps: Vec<&str> = payments
        .iter()
        .map(|p| p["timestamp"].as_str().unwrap())
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(stamps, sorted, "newest first");
    assert_eq!(recent["recent"]["pageNo"], 1);
    assert_eq!(recent["recent"]["limit"], 20);
    let total = recent["recent"]["totalCount"].as_u64().unwrap();
    assert!(total >= payments.len() as u64);

    // Paged like search_transactions.
    let first = call_ok(&client, "get_transactions", json!({"limit": 2})).await;
    let second = call_ok(
        &client,
        "get_transactions",
        json!({"limit": 2, "pageNo": 2}),
    )
    .await;
    assert_eq!(first["payments"].as_array().unwrap().len(), 2);
    assert_eq!(first["payments"][0]["id"], mine);
    assert_eq!(first["payments"][1]["id"], recent["payments"][1]["id"]);
    assert_eq!(second["payments"][0]["id"], recent["payments"][2]["id"]);
    assert_eq!(
        first["recent"]["totalPages"].as_u64().unwrap(),
        total.div_ceil(2)
    );

    // A lookup by id keeps its shape: no `recent` page.
    let by_id = call_ok(&client, "get_transactions", json!({"id": mine})).await;
    assert!(by_id.get("recent").is_none(), "{by_id}");
}
