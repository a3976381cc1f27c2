//! The OPP connector against the emulator over real HTTP: mapping of OPP's payment objects, its
//! error bodies to typed errors, query envelopes, paging, timeouts.

mod common;

use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use common::*;
use paywarden::connectors::opp::{
    BackofficeRequest, OppClient, OppCredentials, OppError, ReportQuery,
};
use paywarden_domain::{Currency, Money, PaymentType};
use secrecy::SecretString;

fn op(payment_type: PaymentType, amount: Option<Money>) -> BackofficeRequest {
    BackofficeRequest {
        payment_type,
        amount,
        merchant_transaction_id: None,
        custom_parameters: vec![],
    }
}

#[tokio::test]
async fn payments_and_back_office_operations_map_onto_the_model() {
    let app = spawn_app().await;
    let opp = app.opp();
    let creds = demo_credentials();
    let pa = app
        .create_payment(
            &creds,
            PaymentType::Preauthorization,
            "12.34",
            Currency::EUR,
        )
        .await;
    let found = opp.query_by_id(&creds, &pa, false, &[]).await.unwrap();
    assert_eq!(found.len(), 1);
    let tx = &found[0];
    assert_eq!(tx.payment_type, PaymentType::Preauthorization);
    assert_eq!(tx.amount.minor_units(), 1234);
    assert_eq!(tx.amount.currency(), Currency::EUR);
    assert!(tx.result.is_success(), "{:?}", tx.result);
    assert!(tx.timestamp.is_some());
    let card = tx.card.as_ref().expect("card");
    assert_eq!(card.last4_digits.as_deref(), Some("0000"));
    assert_eq!(card.bin.as_deref(), Some("420000"));

    let cp = opp
        .backoffice(
            &creds,
            &pa,
            &op(
                PaymentType::Capture,
                Some(Money::parse("2.34", Currency::EUR).unwrap()),
            ),
        )
        .await
        .unwrap();
    assert_eq!(cp.payment_type, PaymentType::Capture);
    assert_eq!(cp.referenced_id.as_deref(), Some(pa.as_str()));
    assert!(cp.ndc.is_some());

    match opp
        .backoffice(
            &creds,
            &pa,
            &op(
                PaymentType::Capture,
                Some(Money::parse("10.01", Currency::EUR).unwrap()),
            ),
        )
        .await
    {
        Err(OppError::Rejected {
            result,
            transaction,
        }) => {
            assert_eq!(result.code, "700.400.100");
            let t = transaction.expect("OPP returns the rejected transaction");
            assert_eq!(t.payment_type, PaymentType::Capture);
            assert!(!t.result.is_success());
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    let linked = opp.query_by_id(&creds, &pa, true, &[]).await.unwrap();
    let types: Vec<_> = linked
        .iter()
        .map(|t| (t.payment_type, t.result.is_success()))
        .collect();
    assert_eq!(
        types,
        [
            (PaymentType::Preauthorization, true),
            (PaymentType::Capture, true),
            (PaymentType::Capture, false)
        ]
    );
    let only_captures = opp
        .query_by_id(&creds, &pa, true, &[PaymentType::Capture])
        .await
        .unwrap();
    assert_eq!(only_captures.len(), 2);
}

#[tokio::test]
async fn error_bodies_become_typed_errors() {
    let app = spawn_app().await;
    let opp = app.opp();
    let creds = demo_credentials();
    match opp
        .query_by_id(&creds, "8ac7a4c9ffffffffffffffffffffffff", false, &[])
        .await
    {
        Err(OppError::NotFound { result }) => assert_eq!(result.code, "700.400.580"),
        other => panic!("{other:?}"),
    }
    let wrong = OppCredentials {
        entity_id: creds.entity_id.clone(),
        token: SecretString::from("wrong".to_string()),
    };
    match opp
        .query_by_id(&wrong, "8ac7a4c9ffffffffffffffffffffffff", false, &[])
        .await
    {
        Err(OppError::Authentication { result }) => assert_eq!(result.code, "800.900.300"),
        other => panic!("{other:?}"),
    }
    let now = Utc::now();
    let backwards = ReportQuery {
        from: now,
        to: now - ChronoDuration::days(1),
        payment_types: vec![],
        payment_methods: vec![],
        limit: 10,
        page_no: 1,
    };
    match opp.report(&creds, &backwards).await {
        Err(OppError::InvalidParameters {
            result,
            parameter_errors,
        }) => {
            assert_eq!(result.code, "200.300.404");
            assert!(
                parameter_errors.iter().any(|p| p.name.starts_with("date")),
                "{parameter_errors:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    match opp
        .query_by_merchant_transaction_id(&creds, "no-such-order")
        .await
    {
        Err(OppError::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_report_pages_through_a_date_range() {
    let app = spawn_app().await;
    let opp = app.opp();
    let creds = demo_credentials();
    for _ in 0..7 {
        app.create_payment(&creds, PaymentType::Debit, "1.00", Currency::GBP)
            .await;
    }
    app.create_payment(&creds, PaymentType::Preauthorization, "1.00", Currency::GBP)
        .await;
    let now = Utc::now();
    let mut seen = Vec::new();
    for page_no in 1..=3 {
        let page = opp
            .report(
                &creds,
                &ReportQuery {
                    from: now - ChronoDuration::hours(1),
                    to: now + ChronoDuration::hours(1),
                    payment_types: vec![PaymentType::Debit],
                    payment_methods: vec![],
                    limit: 3,
                    page_no,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.total_count, Some(7));
        assert_eq!(page.total_pages, Some(3));
        assert!(page
            .transactions
            .iter()
            .all(|t| t.payment_type == PaymentType::Debit));
        seen.extend(page.transactions.into_iter().map(|t| t.id));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 7);
    // Another entity sees none of them.
    let page = opp
        .report(
            &second_credentials(),
            &ReportQuery {
                from: now - ChronoDuration::hours(1),
                to: now + ChronoDuration::hours(1),
                payment_types: vec![],
                payment_methods: vec![],
                limit: 100,
                page_no: 1,
            },
        )
        .await
        .unwrap();
    assert!(page.transactions.is_empty());
}

#[tokio::test]
async fn timeouts_and_unreachable_hosts_are_distinguished() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = paywarden_emulator::EmulatorConfig::demo(dir.path().join("e.db"));
    config.latency = Duration::from_millis(500);
    let emulator = paywarden_emulator::Emulator::open(config).await.unwrap();
    let running = emulator
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    let slow = OppClient::new(&running.base_url, Duration::from_millis(100)).unwrap();
    match slow
        .query_by_id(&demo_credentials(), "abc", false, &[])
        .await
    {
        Err(OppError::Timeout(d)) => assert_eq!(d, Duration::from_millis(100)),
        other => panic!("{other:?}"),
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gone = OppClient::new(&url, Duration::from_secs(2)).unwrap();
    match gone
        .query_by_id(&demo_credentials(), "abc", false, &[])
        .await
    {
        Err(OppError::Unreachable { base_url, .. }) => assert_eq!(base_url, url),
        other => panic!("{other:?}"),
    }
}
