//! `POST /v1/payments/{id}`: back-office operations, evaluated by the domain ledger on the whole
//! payment tree, atomically.

mod common;

use std::sync::Arc;

use common::{start, MAIN, SECOND};
use reqwest::StatusCode;

#[tokio::test]
async fn capture_flow_with_partial_captures_and_defaults() {
    let h = start().await;
    let pa = h.paid(MAIN, &[("paymentType", "PA")]).await;

    let cp1 = h
        .op(
            MAIN,
            &pa,
            &[
                ("paymentType", "CP"),
                ("amount", "30.00"),
                ("currency", "EUR"),
                ("merchantTransactionId", "capture-0001"),
            ],
        )
        .await;
    assert_eq!(cp1.status, StatusCode::OK, "{}", cp1.body);
    assert_eq!(cp1.body["paymentType"], "CP");
    assert_eq!(cp1.body["referencedId"], pa.as_str());
    assert_eq!(cp1.body["amount"], "30.00");
    assert_eq!(cp1.body["currency"], "EUR");
    assert_eq!(cp1.body["paymentBrand"], "VISA");
    assert_eq!(cp1.body["merchantTransactionId"], "capture-0001");
    assert_eq!(cp1.code(), "000.100.110");
    assert_ne!(cp1.id(), pa);

    // Default capture = the authorised remainder.
    let cp2 = h.op(MAIN, &pa, &[("paymentType", "CP")]).await;
    assert_eq!(cp2.status, StatusCode::OK, "{}", cp2.body);
    assert_eq!(cp2.body["amount"], "70.00");

    // Nothing left: rejected, stored, with an id.
    let cp3 = h
        .op(
            MAIN,
            &pa,
            &[
                ("paymentType", "CP"),
                ("amount", "0.01"),
                ("currency", "EUR"),
            ],
        )
        .await;
    assert_eq!(cp3.status, StatusCode::BAD_REQUEST);
    assert_eq!(cp3.code(), "700.400.100");
    assert_eq!(cp3.body["amount"], "0.01");
    assert!(cp3.body["resultDetails"]["ExtendedDescription"].is_string());
    let stored = h.query_id(MAIN, &cp3.id(), &[]).await;
    assert_eq!(stored.status, StatusCode::OK);
    assert_eq!(stored.code(), "700.400.100");
    assert_eq!(stored.body["referencedId"], pa.as_str());

    // A PA with captures can no longer be reversed.
    let rv = h.op(MAIN, &pa, &[("paymentType", "RV")]).await;
    assert_eq!(rv.status, StatusCode::BAD_REQUEST);
    assert_eq!(rv.code(), "700.400.300");

    // Refund a capture, by default its whole amount.
    let rf = h.op(MAIN, &cp1.id(), &[("paymentType", "RF")]).await;
    assert_eq!(rf.status, StatusCode::OK, "{}", rf.body);
    assert_eq!(rf.body["amount"], "30.00");
    assert_eq!(rf.body["referencedId"], cp1.id().as_str());
}

#[tokio::test]
async fn reversal_and_capture_after_reversal() {
    let h = start().await;
    let pa = h
        .paid(MAIN, &[("paymentType", "PA"), ("amount", "25.50")])
        .await;
    let rv = h.op(MAIN, &pa, &[("paymentType", "RV")]).await;
    assert_eq!(rv.status, StatusCode::OK, "{}", rv.body);
    assert_eq!(rv.body["amount"], "25.50");
    let cp = h.op(MAIN, &pa, &[("paymentType", "CP")]).await;
    assert_eq!(cp.status, StatusCode::BAD_REQUEST);
    assert_eq!(cp.code(), "700.400.100");
    let rv2 = h.op(MAIN, &pa, &[("paymentType", "RV")]).await;
    assert_eq!(rv2.status, StatusCode::BAD_REQUEST);
    // Capture of a DB is the wrong type.
    let db = h.paid(MAIN, &[]).await;
    let cp = h.op(MAIN, &db, &[("paymentType", "CP")]).await;
    assert_eq!(cp.code(), "700.400.510");
    // With no amount, a rejected operation is stored with a zero amount in the target currency.
    assert_eq!(cp.body["amount"], "0.00");
    assert_eq!(cp.body["currency"], "EUR");
}

#[tokio::test]
async fn refunds_chargebacks_and_rebills() {
    let h = start().await;
    let db = h.paid(MAIN, &[]).await;
    let rf = h
        .op(
            MAIN,
            &db,
            &[
                ("paymentType", "RF"),
                ("amount", "40.00"),
                ("currency", "EUR"),
            ],
        )
        .await;
    assert_eq!(rf.status, StatusCode::OK);
    let over = h
        .op(
            MAIN,
            &db,
            &[
                ("paymentType", "RF"),
                ("amount", "60.01"),
                ("currency", "EUR"),
            ],
        )
        .await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
    assert_eq!(over.code(), "700.400.200");
    assert_eq!(over.body["amount"], "60.01");
    let mismatch = h
        .op(
            MAIN,
            &db,
            &[
                ("paymentType", "RF"),
                ("amount", "1.00"),
                ("currency", "USD"),
            ],
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    assert_eq!(mismatch.code(), "700.100.500");
    assert_eq!(mismatch.body["currency"], "USD");

    // Chargeback defaults to the un-refunded amount; refunds are then blocked until reversed.
    let cb = h.op(MAIN, &db, &[("paymentType", "CB")]).await;
    assert_eq!(cb.status, StatusCode::OK, "{}", cb.body);
    assert_eq!(cb.body["amount"], "60.00");
    let blocked = h.op(MAIN, &db, &[("paymentType", "RF")]).await;
    assert_eq!(blocked.code(), "700.300.600");
    let cr = h.op(MAIN, &cb.id(), &[("paymentType", "CR")]).await;
    assert_eq!(cr.status, StatusCode::OK, "{}", cr.body);
    assert_eq!(cr.body["amount"], "60.00");
    let rf2 = h.op(MAIN, &db, &[("paymentType", "RF")]).await;
    assert_eq!(rf2.status, StatusCode::OK, "{}", rf2.body);
    assert_eq!(rf2.body["amount"], "60.00");

    // Rebill needs an amount (a parameter error, nothing stored) and then works.
    let rb = h.op(MAIN, &db, &[("paymentType", "RB")]).await;
    assert_eq!(rb.status, StatusCode::BAD_REQUEST);
    assert_eq!(rb.code(), "200.300.404");
    assert_eq!(rb.param_names(), vec!["amount".to_string()]);
    let rb = h
        .op(
            MAIN,
            &db,
            &[
                ("paymentType", "RB"),
                ("amount", "5.00"),
                ("currency", "EUR"),
            ],
        )
        .await;
    assert_eq!(rb.status, StatusCode::OK, "{}", rb.body);
    assert_eq!(rb.body["paymentType"], "RB");
}

#[tokio::test]
async fn backoffice_parameter_errors() {
    let h = start().await;
    let db = h.paid(MAIN, &[]).await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("paymentType", "DB")], "paymentType"),
        (&[("paymentType", "PA")], "paymentType"),
        (&[("paymentType", "ZZ")], "paymentType"),
        (&[], "paymentType"),
        (&[("paymentType", "RF"), ("amount", "1.00")], "currency"),
        (&[("paymentType", "RF"), ("currency", "EUR")], "amount"),
        (
            &[
                ("paymentType", "RF"),
                ("amount", "1.001"),
                ("currency", "EUR"),
            ],
            "amount",
        ),
        (
            &[
                ("paymentType", "RF"),
                ("amount", "0.00"),
                ("currency", "EUR"),
            ],
            "amount",
        ),
        (
            &[
                ("paymentType", "RF"),
                ("amount", "1.00"),
                ("currency", "ABC"),
            ],
            "currency",
        ),
        (
            &[("paymentType", "RF"), ("merchantTransactionId", "x")],
            "merchantTransactionId",
        ),
        (
            &[
                ("paymentType", "RF"),
                ("customParameters[SANDBOX_TIMESTAMP]", "yesterday"),
            ],
            "customParameters[SANDBOX_TIMESTAMP]",
        ),
        // Backdating before the referenced transaction is refused.
        (
            &[
                ("paymentType", "RF"),
                (
                    "customParameters[SANDBOX_TIMESTAMP]",
                    "2001-01-01T00:00:00Z",
                ),
            ],
            "customParameters[SANDBOX_TIMESTAMP]",
        ),
    ];
    for (fields, name) in cases {
        let r = h.op(MAIN, &db, fields).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{fields:?}");
        assert_eq!(r.code(), "200.300.404", "{fields:?}: {}", r.body);
        assert!(
            r.param_names().iter().any(|n| n == name),
            "{fields:?}: {}",
            r.body
        );
        assert!(r.body.get("id").is_none());
    }
    // None of them stored anything.
    let linked = h
        .query_id(MAIN, &db, &[("includeLinkedTransactions", "true")])
        .await;
    assert_eq!(common::ids(&linked.body["payments"]), vec![db.clone()]);
}

#[tokio::test]
async fn unknown_and_foreign_references_are_not_found() {
    let h = start().await;
    let foreign = h.paid(SECOND, &[]).await;
    for id in [
        foreign.as_str(),
        "00000000000000000000000000000000",
        "not%20an%20id",
        "%FF%FE",
    ] {
        let r = h.op(MAIN, id, &[("paymentType", "RF")]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{id}");
        assert_eq!(r.code(), "700.100.100");
        assert_eq!(r.body["result"]["description"], "reference id not existing");
        assert!(r.body.get("id").is_none());
    }
    // The owner can still refund it; the foreign attempt left no trace.
    let rf = h.op(SECOND, &foreign, &[("paymentType", "RF")]).await;
    assert_eq!(rf.status, StatusCode::OK);
    let linked = h
        .query_id(SECOND, &foreign, &[("includeLinkedTransactions", "true")])
        .await;
    assert_eq!(common::types(&linked.body["payments"]), vec!["DB", "RF"]);
}

#[tokio::test]
async fn backdated_backoffice_operations() {
    let h = start().await;
    let db = h
        .paid(
            MAIN,
            &[(
                "customParameters[SANDBOX_TIMESTAMP]",
                "2026-01-10T10:00:00Z",
            )],
        )
        .await;
    let rf = h
        .op(
            MAIN,
            &db,
            &[
                ("paymentType", "RF"),
                ("amount", "10.00"),
                ("currency", "EUR"),
                (
                    "customParameters[SANDBOX_TIMESTAMP]",
                    "2026-01-12T08:00:00Z",
                ),
            ],
        )
        .await;
    assert_eq!(rf.status, StatusCode::OK, "{}", rf.body);
    assert_eq!(rf.body["timestamp"], "2026-01-12 08:00:00+0000");
    // Same second as the target is allowed.
    let rf2 = h
        .op(
            MAIN,
            &db,
            &[
                ("paymentType", "RF"),
                ("amount", "10.00"),
                ("currency", "EUR"),
                (
                    "customParameters[SANDBOX_TIMESTAMP]",
                    "2026-01-10T10:00:00Z",
                ),
            ],
        )
        .await;
    assert_eq!(rf2.status, StatusCode::OK, "{}", rf2.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_refunds_never_exceed_the_refundable_amount() {
    let h = Arc::new(start().await);
    let db = h.paid(MAIN, &[("amount", "100.00")]).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let h = h.clone();
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            h.op(
                MAIN,
                &db,
                &[
                    ("paymentType", "RF"),
                    ("amount", "10.00"),
                    ("currency", "EUR"),
                ],
            )
            .await
        }));
    }
    let mut ok = 0;
    let mut rejected = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::BAD_REQUEST => {
                assert_eq!(r.code(), "700.400.200", "{}", r.body);
                rejected += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(rejected, 10);
    let linked = h
        .query_id(
            MAIN,
            &db,
            &[
                ("includeLinkedTransactions", "true"),
                ("paymentTypes", "RF"),
            ],
        )
        .await;
    let refunds = linked.body["payments"].as_array().unwrap();
    assert_eq!(refunds.len(), 20, "rejected refunds are stored too");
    let succeeded_minor: i64 = refunds
        .iter()
        .filter(|t| t["result"]["code"] == "000.100.110")
        .map(|t| {
            let s = t["amount"].as_str().unwrap().replace('.', "");
            s.parse::<i64>().unwrap()
        })
        .sum();
    assert_eq!(succeeded_minor, 10_000);
    let more = h.op(MAIN, &db, &[("paymentType", "RF")]).await;
    assert_eq!(more.code(), "700.400.200");
}
