//! `GET /v1/query/{id}` and `GET /v1/query`: single transactions, linked transactions, merchant
//! references and the paged date-range report.

mod common;

use common::{ids, start, types, MAIN, SECOND};
use reqwest::StatusCode;

const TS: &str = "customParameters[SANDBOX_TIMESTAMP]";

#[tokio::test]
async fn query_one_transaction() {
    let h = start().await;
    let pay = h
        .pay(MAIN, &[("merchantTransactionId", "order-1234")])
        .await;
    let id = pay.id();
    let q = h.query_id(MAIN, &id, &[]).await;
    assert_eq!(q.status, StatusCode::OK);
    assert_eq!(q.sandbox.as_deref(), Some("true"));
    for field in [
        "id",
        "paymentType",
        "paymentBrand",
        "amount",
        "currency",
        "descriptor",
        "merchantTransactionId",
        "result",
        "card",
        "resultDetails",
        "timestamp",
        "ndc",
    ] {
        assert_eq!(q.body[field], pay.body[field], "{field}");
    }
    let missing = h
        .query_id(MAIN, "0123456789abcdef0123456789abcdef", &[])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "700.400.580");
    assert_eq!(
        missing.body["result"]["description"],
        "cannot find transaction"
    );
    for bad in ["bad%20id", "%FF%FE"] {
        let q = h.query_id(MAIN, bad, &[]).await;
        assert_eq!(q.status, StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(q.code(), "700.400.580");
    }
}

#[tokio::test]
async fn linked_transactions_oldest_first_with_filters() {
    let h = start().await;
    let pa = h
        .paid(MAIN, &[("paymentType", "PA"), (TS, "2026-02-01T10:00:00Z")])
        .await;
    let cp = h
        .op(
            MAIN,
            &pa,
            &[
                ("paymentType", "CP"),
                ("amount", "60.00"),
                ("currency", "EUR"),
                (TS, "2026-02-02T10:00:00Z"),
            ],
        )
        .await
        .id();
    let rf = h
        .op(
            MAIN,
            &cp,
            &[
                ("paymentType", "RF"),
                ("amount", "20.00"),
                ("currency", "EUR"),
                (TS, "2026-02-03T10:00:00Z"),
            ],
        )
        .await
        .id();
    let failed = h
        .op(
            MAIN,
            &cp,
            &[
                ("paymentType", "RF"),
                ("amount", "50.00"),
                ("currency", "EUR"),
            ],
        )
        .await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    let unrelated = h.paid(MAIN, &[]).await;

    // From any member of the tree, the whole tree, oldest first.
    for from in [&pa, &cp, &rf] {
        let q = h
            .query_id(MAIN, from, &[("includeLinkedTransactions", "true")])
            .await;
        assert_eq!(q.status, StatusCode::OK, "{}", q.body);
        assert_eq!(q.code(), "000.000.100");
        assert_eq!(q.body["result"]["description"], "successful request");
        assert_eq!(
            ids(&q.body["payments"]),
            vec![pa.clone(), cp.clone(), rf.clone(), failed.id()]
        );
        assert!(!ids(&q.body["payments"]).contains(&unrelated));
    }
    let q = h
        .query_id(
            MAIN,
            &rf,
            &[
                ("includeLinkedTransactions", "true"),
                ("paymentTypes", "PA,CP"),
            ],
        )
        .await;
    assert_eq!(types(&q.body["payments"]), vec!["PA", "CP"]);
    let q = h
        .query_id(
            MAIN,
            &pa,
            &[
                ("includeLinkedTransactions", "true"),
                ("paymentMethods", "CC"),
            ],
        )
        .await;
    assert_eq!(q.body["payments"].as_array().unwrap().len(), 4);
    let q = h
        .query_id(
            MAIN,
            &pa,
            &[
                ("includeLinkedTransactions", "true"),
                ("paymentMethods", "DD,VA"),
            ],
        )
        .await;
    assert_eq!(q.status, StatusCode::OK);
    assert!(q.body["payments"].as_array().unwrap().is_empty());
    // Without includeLinkedTransactions (or =false): the transaction alone.
    let q = h
        .query_id(MAIN, &cp, &[("includeLinkedTransactions", "false")])
        .await;
    assert_eq!(q.body["id"], cp.as_str());

    for (name, value) in [
        ("includeLinkedTransactions", "yes"),
        ("paymentTypes", "PA,XX"),
        ("paymentMethods", "credit"),
    ] {
        let q = h
            .query_id(
                MAIN,
                &pa,
                &[("includeLinkedTransactions", "true"), (name, value)],
            )
            .await;
        assert_eq!(q.status, StatusCode::BAD_REQUEST, "{name}={value}");
        assert_eq!(q.code(), "200.300.404");
        assert!(q.param_names().contains(&name.to_string()));
    }
}

#[tokio::test]
async fn by_merchant_transaction_id() {
    let h = start().await;
    let a = h
        .paid(MAIN, &[("merchantTransactionId", "order-shared")])
        .await;
    let b = h
        .paid(MAIN, &[("merchantTransactionId", "order-shared")])
        .await;
    let rf = h
        .op(
            MAIN,
            &a,
            &[
                ("paymentType", "RF"),
                ("merchantTransactionId", "order-shared"),
            ],
        )
        .await
        .id();
    h.paid(MAIN, &[("merchantTransactionId", "order-other")])
        .await;
    h.paid(SECOND, &[("merchantTransactionId", "order-shared")])
        .await;

    let q = h
        .query(MAIN, &[("merchantTransactionId", "order-shared")])
        .await;
    assert_eq!(q.status, StatusCode::OK);
    assert_eq!(q.code(), "000.000.100");
    assert_eq!(ids(&q.body["payments"]), vec![a, b, rf]);
    assert!(q.body.get("records").is_none());
    let q = h
        .query(
            MAIN,
            &[
                ("merchantTransactionId", "order-shared"),
                ("paymentTypes", "RF"),
            ],
        )
        .await;
    assert_eq!(types(&q.body["payments"]), vec!["RF"]);

    let none = h
        .query(MAIN, &[("merchantTransactionId", "order-nowhere")])
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(none.code(), "700.400.580");
}

#[tokio::test]
async fn date_range_report_pages_oldest_first() {
    let h = start().await;
    let mut created = Vec::new();
    for day in 1..=25 {
        let ts = format!("2026-03-{day:02}T12:00:00Z");
        let t = if day % 5 == 0 { "PA" } else { "DB" };
        created.push(h.paid(MAIN, &[("paymentType", t), (TS, &ts)]).await);
    }
    // Outside the range and another entity's: never reported.
    h.paid(MAIN, &[(TS, "2026-02-28T23:59:59Z")]).await;
    h.paid(MAIN, &[(TS, "2026-04-01T00:00:00Z")]).await;
    h.paid(SECOND, &[(TS, "2026-03-10T12:00:00Z")]).await;

    let range = [
        ("date.from", "2026-03-01 00:00:00"),
        ("date.to", "2026-03-31 23:59:59"),
    ];
    let mut seen = Vec::new();
    for page in 1..=3 {
        let page_s = page.to_string();
        let mut params = range.to_vec();
        params.push(("limit", "10"));
        params.push(("pageNo", &page_s));
        let q = h.query(MAIN, &params).await;
        assert_eq!(q.status, StatusCode::OK, "{}", q.body);
        assert_eq!(q.code(), "000.000.100");
        assert_eq!(q.body["pageNo"], page);
        assert_eq!(q.body["limit"], 10);
        assert_eq!(q.body["totalCount"], 25);
        assert_eq!(q.body["totalPages"], 3);
        let records = ids(&q.body["records"]);
        assert_eq!(records.len(), if page == 3 { 5 } else { 10 });
        seen.extend(records);
    }
    assert_eq!(seen, created, "every record once, oldest first");

    // Past the last page: empty, still 200.
    let mut params = range.to_vec();
    params.extend([("limit", "10"), ("pageNo", "4")]);
    let q = h.query(MAIN, &params).await;
    assert_eq!(q.status, StatusCode::OK);
    assert!(q.body["records"].as_array().unwrap().is_empty());

    // Default limit 100, page 1.
    let q = h.query(MAIN, &range).await;
    assert_eq!(q.body["limit"], 100);
    assert_eq!(q.body["pageNo"], 1);
    assert_eq!(q.body["records"].as_array().unwrap().len(), 25);

    // Inclusive bounds.
    let q = h
        .query(
            MAIN,
            &[
                ("date.from", "2026-03-05 12:00:00"),
                ("date.to", "2026-03-06 12:00:00"),
            ],
        )
        .await;
    assert_eq!(ids(&q.body["records"]), created[4..6].to_vec());

    // Type filter.
    let mut params = range.to_vec();
    params.push(("paymentTypes", "PA"));
    let q = h.query(MAIN, &params).await;
    assert_eq!(q.body["totalCount"], 5);
    assert!(types(&q.body["records"]).iter().all(|t| t == "PA"));
    // Method filter.
    let mut params = range.to_vec();
    params.push(("paymentMethods", "DD"));
    let q = h.query(MAIN, &params).await;
    assert_eq!(q.status, StatusCode::OK);
    assert_eq!(q.body["totalCount"], 0);
    assert_eq!(q.body["totalPages"], 0);

    // The other entity sees only its own.
    let q = h.query(SECOND, &range).await;
    assert_eq!(q.body["totalCount"], 1);
}

#[tokio::test]
async fn report_parameter_errors() {
    let h = start().await;
    let good_from = ("date.from", "2026-03-01 00:00:00");
    let good_to = ("date.to", "2026-03-31 23:59:59");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "date.from"),
        (vec![good_to], "date.from"),
        (vec![good_from], "date.to"),
        (vec![("date.from", "2026-03-01"), good_to], "date.from"),
        (
            vec![good_from, ("date.to", "2026-03-31T23:59:59Z")],
            "date.to",
        ),
        (
            vec![("date.from", "2026-13-01 00:00:00"), good_to],
            "date.from",
        ),
        (
            vec![
                ("date.from", "2026-04-01 00:00:00"),
                ("date.to", "2026-03-01 00:00:00"),
            ],
            "date.from",
        ),
        (vec![good_from, good_to, ("limit", "0")], "limit"),
        (vec![good_from, good_to, ("limit", "101")], "limit"),
        (vec![good_from, good_to, ("limit", "ten")], "limit"),
        (vec![good_from, good_to, ("pageNo", "0")], "pageNo"),
        (
            vec![good_from, good_to, ("paymentTypes", "db")],
            "paymentTypes",
        ),
    ];
    for (params, name) in cases {
        let q = h.query(MAIN, &params).await;
        assert_eq!(q.status, StatusCode::BAD_REQUEST, "{params:?}: {}", q.body);
        assert_eq!(q.code(), "200.300.404", "{params:?}");
        assert!(
            q.param_names().contains(&name.to_string()),
            "{params:?}: {}",
            q.body
        );
    }
    // An empty range is an empty page, not an error.
    let q = h.query(MAIN, &[good_from, good_to]).await;
    assert_eq!(q.status, StatusCode::OK);
    assert_eq!(q.body["totalCount"], 0);
}

#[tokio::test]
async fn entities_are_isolated() {
    let h = start().await;
    let mine = h
        .paid(MAIN, &[("merchantTransactionId", "isolation-1")])
        .await;
    let q = h.query_id(SECOND, &mine, &[]).await;
    assert_eq!(q.status, StatusCode::NOT_FOUND);
    assert_eq!(q.code(), "700.400.580");
    let q = h
        .query_id(SECOND, &mine, &[("includeLinkedTransactions", "true")])
        .await;
    assert_eq!(q.status, StatusCode::NOT_FOUND);
    let q = h
        .query(SECOND, &[("merchantTransactionId", "isolation-1")])
        .await;
    assert_eq!(q.status, StatusCode::NOT_FOUND);
    let r = h.op(SECOND, &mine, &[("paymentType", "RF")]).await;
    assert_eq!(r.code(), "700.100.100");
}

/// A sandbox timestamp in the year 0 with a positive offset is stored in the year -1 (UTC,
/// "-0001-12-31 23:30:00"), whose text the hour and day counts cannot key; a report range
/// reaching into it is counted on the index, as the plain scan compares it (before the
/// fallback in `report_pieces`, the first range below answered `totalCount` 0).
#[tokio::test]
async fn a_transaction_stored_in_the_year_minus_one_is_reported() {
    let h = start().await;
    h.paid(MAIN, &[(TS, "0000-01-01T00:30:00+01:00")]).await;
    for (from, to) in [
        ("-0001-12-31 22:30:00", "0000-01-01 00:10:00"),
        ("-0001-12-31 23:00:00", "-0001-12-31 23:59:59"),
    ] {
        let q = h.query(MAIN, &[("date.from", from), ("date.to", to)]).await;
        assert_eq!(q.status, 200, "{from}..{to}: {}", q.body);
        assert_eq!(q.body["totalCount"], 1, "{from}..{to}: {}", q.body);
        assert_eq!(
            q.body["records"].as_array().map(Vec::len),
            Some(1),
            "{from}..{to}"
        );
    }
}
