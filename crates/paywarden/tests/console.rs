//! The operator console's guards and pages over HTTP, against the real server on port 0 (the
//! emulator behind it, a real database): every page needs an operator's Basic credentials, every
//! POST its CSRF token and this server's origin, foreign Host names are refused, what agents send
//! is escaped, the activity filters select the right rows and the JSON Lines export is the
//! audit chain as stored. Runs on SQLite, and on PostgreSQL with `PAYWARDEN_TEST_DATABASE=postgres`.

mod common;

use common::*;
use paywarden::{
    config::OperatorConfig,
    store::{AuditEntry, NewApproval},
};
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

const PAGES: &[&str] = &[
    "/console/approvals",
    "/console/activity",
    "/console/activity.jsonl",
    "/console/timeline?ref=x",
    "/console/policy",
    "/console/entities",
    "/console/receipts",
];

async fn console_app() -> TestApp {
    spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.operators = vec![
            OperatorConfig {
                name: "alice".into(),
                token_sha256: hex::encode(Sha256::digest(b"alice-token")),
            },
            OperatorConfig {
                name: "bob".into(),
                token_sha256: hex::encode(Sha256::digest(b"bob-token")),
            },
        ];
    })
    .await
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn entry(entity: &str, tool: &str, outcome: &str, args: serde_json::Value) -> AuditEntry {
    AuditEntry {
        entity_id: entity.into(),
        client_name: Some("claude-code".into()),
        toolset: "opp".into(),
        tool: tool.into(),
        arguments: args,
        outcome: outcome.into(),
        result_code: None,
        provider_request_id: None,
        transaction_id: None,
        message: None,
        duration_ms: 3,
        sandbox: true,
    }
}

#[tokio::test]
async fn every_page_needs_an_operator_and_sends_the_security_headers() {
    let app = console_app().await;
    let client = http();
    for page in PAGES {
        let url = format!("{}{page}", app.base_url);
        let none = client.get(&url).send().await.unwrap();
        assert_eq!(
            none.status(),
            StatusCode::UNAUTHORIZED,
            "{page} without credentials"
        );
        assert!(none.headers().contains_key("www-authenticate"), "{page}");
        let body = none.text().await.unwrap();
        assert!(
            !body.contains("alice") && !body.contains("Audit chain"),
            "{page}: {body}"
        );
        for (user, token) in [
            ("alice", "bob-token"),
            ("mallory", "alice-token"),
            ("alice", ""),
        ] {
            let wrong = client
                .get(&url)
                .basic_auth(user, Some(token))
                .send()
                .await
                .unwrap();
            assert_eq!(
                wrong.status(),
                StatusCode::UNAUTHORIZED,
                "{page} as {user}:{token}"
            );
        }
        let ok = client
            .get(&url)
            .basic_auth("alice", Some("alice-token"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK, "{page}");
        let csp = ok.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{page}: {csp}");
        assert_eq!(ok.headers()["x-frame-options"], "DENY");
        // A foreign Host (DNS rebinding) is refused before credentials are looked at.
        let rebound = client
            .get(&url)
            .header("host", "evil.example")
            .basic_auth("alice", Some("alice-token"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            rebound.status(),
            StatusCode::FORBIDDEN,
            "{page} under a foreign Host"
        );
    }
    // `/console` leads to the approvals.
    let root = client
        .get(format!("{}/console", app.base_url))
        .basic_auth("alice", Some("alice-token"))
        .send()
        .await
        .unwrap();
    assert!(root.status().is_redirection());
    assert_eq!(root.headers()["location"], "/console/approvals");
}

/// The policy form's CSRF token, read from the page as a browser would.
async fn csrf_of(client: &reqwest::Client, app: &TestApp, user: &str, token: &str) -> String {
    let html = client
        .get(format!("{}/console/policy", app.base_url))
        .basic_auth(user, Some(token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = html.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    html[start..start + 64].to_string()
}

#[tokio::test]
async fn the_policy_playground_needs_csrf_and_this_origin_and_explains_the_decision() {
    let app = console_app().await;
    let client = http();
    let url = format!("{}/console/policy", app.base_url);
    let form = |csrf: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("tool", "perform_refund".to_string()),
            ("entity", "8ac7a4c9000000000000000000000001".to_string()),
            ("amount", "750.00".to_string()),
            ("currency", "EUR".to_string()),
            ("moved_today", "0".to_string()),
        ]
    };
    let missing = client
        .post(&url)
        .basic_auth("alice", Some("alice-token"))
        .form(&form(""))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    // Bob's token is not Alice's.
    let bobs = csrf_of(&client, &app, "bob", "bob-token").await;
    let stolen = client
        .post(&url)
        .basic_auth("alice", Some("alice-token"))
        .form(&form(&bobs))
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), StatusCode::FORBIDDEN);
    let csrf = csrf_of(&client, &app, "alice", "alice-token").await;
    let foreign = client
        .post(&url)
        .basic_auth("alice", Some("alice-token"))
        .header("origin", "http://evil.example")
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let ok = client
        .post(&url)
        .basic_auth("alice", Some("alice-token"))
        .header("origin", &app.base_url)
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let html = ok.text().await.unwrap();
    assert!(
        html.contains("Result: <span class=\"badge\">human</span>"),
        "{html}"
    );
    assert!(html.contains("deciding rule:"), "{html}");
    // An edited copy: a rule that denies everything decides instead.
    let mut edited = form(&csrf);
    edited.push((
        "source",
        "default = \"allow\"\n[[rule]]\nname = \"nothing-today\"\nwhen = \"true\"\naction = \"deny\"\n"
            .to_string(),
    ));
    let html = client
        .post(&url)
        .basic_auth("alice", Some("alice-token"))
        .form(&edited)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<code>nothing-today</code>"), "{html}");
    assert!(html.contains("edited copy"), "{html}");
}

#[tokio::test]
async fn what_agents_send_is_escaped_on_every_page() {
    let app = console_app().await;
    let xss = "<script>alert(1)</script>";
    let payment = "8ac7a4c9feedfacefeedfacefeedface";
    app.store
        .append_audit(&AuditEntry {
            client_name: Some(xss.into()),
            message: Some(xss.into()),
            ..entry(
                "8ac7a4c9000000000000000000000001",
                "perform_refund",
                "ok",
                json!({"referenceId": payment, "note": xss, "amount": "1.00", "currency": "EUR"}),
            )
        })
        .await
        .unwrap();
    let approval = app
        .store
        .create_approval(NewApproval {
            entity_id: "8ac7a4c9000000000000000000000001".into(),
            client_name: Some(xss.into()),
            toolset: "opp".into(),
            tool: "perform_refund".into(),
            arguments: json!({"referenceId": payment, "descriptor": xss}),
            request_hash: hex::encode(Sha256::digest(b"x")),
            preview: json!({"operation": xss, "referenceId": payment, "amount": "5.00", "currency": "EUR", "to": {"name": xss}}),
            rule: "refund_over_limit".into(),
            message: xss.into(),
            ttl: chrono::Duration::hours(1),
        })
        .await
        .unwrap();
    let client = http();
    let pages = [
        "/console/approvals".to_string(),
        format!("/approvals/{}", approval.id),
        "/approvals?all=1".to_string(),
        "/console/activity".to_string(),
        format!("/console/timeline?ref={payment}"),
        "/console/policy?seq=1".to_string(),
        "/console/entities".to_string(),
    ];
    for page in pages {
        let html = client
            .get(format!("{}{page}", app.base_url))
            .basic_auth("alice", Some("alice-token"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !html.contains("<script>"),
            "{page} lets a script through: {html}"
        );
        if page != "/console/entities" && page != "/console/policy?seq=1" {
            assert!(
                html.contains("&lt;script&gt;"),
                "{page} does not show the text: {html}"
            );
        }
    }
}

#[tokio::test]
async fn activity_filters_select_rows_and_the_export_is_the_chain_as_stored() {
    let app = console_app().await;
    let a = "8ac7a4c9000000000000000000000001";
    let b = "8ac7a4c9000000000000000000000002";
    let payment = "8ac7a4c90123456789abcdef01234567";
    app.store
        .append_audit(&entry(
            a,
            "perform_refund",
            "ok",
            json!({"referenceId": payment}),
        ))
        .await
        .unwrap();
    app.store
        .append_audit(&entry(a, "get_transaction", "ok", json!({"id": "other"})))
        .await
        .unwrap();
    app.store
        .append_audit(&entry(
            b,
            "perform_refund",
            "rejected",
            json!({"referenceId": "zzz"}),
        ))
        .await
        .unwrap();
    app.store
        .append_audit(&AuditEntry {
            transaction_id: Some(payment.into()),
            ..entry(b, "capture", "error", json!({}))
        })
        .await
        .unwrap();
    let client = http();
    let rows = |html: &str| -> Vec<i64> {
        html.match_indices("<tr id=\"seq-")
            .map(|(i, _)| {
                let rest = &html[i + 12..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    };
    let get = |query: &'static str| {
        let client = client.clone();
        let url = format!("{}/console/activity?{query}", app.base_url);
        async move {
            client
                .get(url)
                .basic_auth("alice", Some("alice-token"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let html = get("").await;
    assert_eq!(rows(&html), vec![4, 3, 2, 1], "newest first");
    assert!(html.contains("badge intact"), "{html}");
    assert_eq!(
        rows(&get("entity=8ac7a4c9000000000000000000000002").await),
        vec![4, 3]
    );
    assert_eq!(rows(&get("tool=perform_refund").await), vec![3, 1]);
    assert_eq!(rows(&get("outcome=rejected").await), vec![3]);
    assert_eq!(
        rows(&get("payment=8ac7a4c90123456789abcdef01234567").await),
        vec![4, 1]
    );
    assert_eq!(
        rows(&get("from=2000-01-01&to=2000-01-02").await),
        Vec::<i64>::new()
    );
    assert_eq!(rows(&get("from=2000-01-01T00:00").await).len(), 4);
    assert_eq!(rows(&get("seq=2").await), vec![2]);
    let bad = client
        .get(format!("{}/console/activity?from=yesterday", app.base_url))
        .basic_auth("alice", Some("alice-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let export = client
        .get(format!(
            "{}/console/activity.jsonl?tool=perform_refund",
            app.base_url
        ))
        .basic_auth("alice", Some("alice-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    assert!(export.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    let text = export.text().await.unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let stored = app.store.audit_records(None).await.unwrap();
    for line in &lines {
        let seq = line["seq"].as_i64().unwrap();
        let record = stored.iter().find(|r| r.seq == seq).unwrap();
        assert_eq!(line["hash"], record.hash.as_str());
        assert_eq!(line["prev_hash"], record.prev_hash.as_str());
        assert_eq!(line["tool"], "perform_refund");
    }
}

#[tokio::test]
async fn the_timeline_shows_provider_events_of_an_ifthenpay_reference() {
    let app = console_app().await;
    let entity = "8ac7a4c9000000000000000000000001";
    app.store
        .append_audit(&entry(
            entity,
            "create_multibanco_reference",
            "ok",
            json!({"orderId": "order-4711", "amount": "49.90", "currency": "EUR"}),
        ))
        .await
        .unwrap();
    let row = app
        .store
        .record_ifthenpay_request(&paywarden::store::NewIfthenpayRequest {
            entity_id: entity.into(),
            tool: "create_multibanco_reference".into(),
            method: "MB".into(),
            key_id: "0123456789abcdef0123456789abcdef".into(),
            order_id: "order-4711".into(),
            request_id: None,
            mb_entity: Some("11249".into()),
            reference: Some("987654321".into()),
            amount_minor: 4990,
            currency: "EUR".into(),
        })
        .await
        .unwrap();
    app.store
        .record_ifthenpay_callback(&paywarden::store::IfthenpayCallback {
            request_row: Some(row),
            entity_id: Some(entity.into()),
            order_id: Some("order-4711".into()),
            request_id: None,
            reference: Some("987654321".into()),
            payment_method: Some("MB".into()),
            amount_text: Some("49.90".into()),
            amount_minor: Some(4990),
            accepted: true,
            reason: None,
            kind: "payment".into(),
            received_at: String::new(),
        })
        .await
        .unwrap();
    // Found by the Multibanco reference alone: the order, its call and the callback.
    let html = http()
        .get(format!("{}/console/timeline?ref=987654321", app.base_url))
        .basic_auth("alice", Some("alice-token"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request = html.find("ifthenpay MB payment request").expect(&html);
    let call = html
        .find("create_multibanco_reference</strong>")
        .expect(&html);
    let callback = html.find("ifthenpay payment callback").expect(&html);
    assert!(request < callback && call < callback, "{html}");
    assert!(html.contains("€49.90"), "{html}");
    assert!(html.contains("reference 11249 987654321"), "{html}");
}

#[tokio::test]
async fn the_timeline_shows_stripe_webhook_events_of_a_payment() {
    let app = console_app().await;
    let entity = "8ac7a4c9000000000000000000000001";
    app.store
        .append_audit(&entry(
            entity,
            "issue_refund",
            "ok",
            json!({"charge_id": "pi_3TimelineTest", "amount_cents": 1250}),
        ))
        .await
        .unwrap();
    app.store
        .record_provider_event(&paywarden::store::NewProviderEvent {
            provider: "stripe".into(),
            event_id: "evt_1TimelineTest".into(),
            entity_id: entity.into(),
            payment_id: Some("pi_3TimelineTest".into()),
            event_type: "refund.updated".into(),
            object_id: Some("re_1TimelineTest".into()),
            status: Some("failed".into()),
            amount_minor: Some(1250),
            currency: Some("EUR".into()),
            outcome: "applied".into(),
            summary: json!({"refund": "re_1TimelineTest", "status": "failed"}),
        })
        .await
        .unwrap();
    let html = http()
        .get(format!(
            "{}/console/timeline?ref=pi_3TimelineTest",
            app.base_url
        ))
        .basic_auth("alice", Some("alice-token"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let call = html.find("issue_refund</strong>").expect(&html);
    let event = html.find("stripe refund.updated").expect(&html);
    assert!(call < event, "{html}");
    assert!(html.contains("re_1TimelineTest"), "{html}");
    assert!(html.contains("status failed"), "{html}");
    assert!(html.contains("€12.50"), "{html}");
}
