//! OPP's wire as OPP documents it (issue 14): amounts in `N10.N2`, report paging by what OPP
//! returned (and an honest "incomplete" when OPP ignores `pageNo`), and OPP's throttling answer
//! read as throttled and retryable. The real paywarden on port 0, a real MCP client; behind it
//! the emulator, or a stand-in OPP server that answers what OPP's documentation shows (a fake
//! of the provider, never of paywarden's code).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use paywarden_domain::{Currency, PaymentType};
use serde_json::{json, Value};

/// How the stand-in OPP answers report pages.
#[derive(Clone, Copy)]
enum Paging {
    /// Ignores `pageNo`: always the same 100 records, no `totalPages`.
    IgnoresPageNo,
    /// Page 1: 100 records, 10 of a type paywarden does not map (`RC`); page 2: 5 records; no
    /// `totalPages`.
    SomeUnmappable,
}

fn record(id: String, payment_type: &str) -> Value {
    json!({"id": id, "paymentType": payment_type, "paymentBrand": "VISA", "amount": "1.00",
           "currency": "EUR", "result": {"code": "000.100.110", "description": "Request successfully processed"},
           "timestamp": "2026-11-20 10:00:00+0000", "ndc": "x"})
}

/// A stand-in OPP: answers the credential probe (`merchantTransactionId`) with "not found",
/// report pages per `paging`, and every single-transaction query with OPP's documented
/// throttling answer (API reference, "Throttling"). Counts report requests.
async fn stand_in_opp(paging: Paging) -> (String, Arc<AtomicUsize>) {
    let reports = Arc::new(AtomicUsize::new(0));
    let seen = reports.clone();
    let app = axum::Router::new()
        .route(
            "/v1/query",
            axum::routing::get(
                move |axum::extract::Query(q): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >| {
                    let seen = seen.clone();
                    async move {
                        if q.contains_key("merchantTransactionId") {
                            return (
                                axum::http::StatusCode::NOT_FOUND,
                                axum::Json(json!({"result": {"code": "700.400.580", "description": "cannot find transaction"}})),
                            );
                        }
                        seen.fetch_add(1, Ordering::SeqCst);
                        let page: u32 = q.get("pageNo").and_then(|p| p.parse().ok()).unwrap_or(1);
                        let records: Vec<Value> = match (paging, page) {
                            (Paging::IgnoresPageNo, _) => (0..100)
                                .map(|i| record(format!("{i:032x}"), "DB"))
                                .collect(),
                            (Paging::SomeUnmappable, 1) => (0..100)
                                .map(|i| record(format!("{i:032x}"), if i % 10 == 0 { "RC" } else { "DB" }))
                                .collect(),
                            (Paging::SomeUnmappable, 2) => (100..105)
                                .map(|i| record(format!("{i:032x}"), "DB"))
                                .collect(),
                            (Paging::SomeUnmappable, _) => Vec::new(),
                        };
                        (
                            axum::http::StatusCode::OK,
                            axum::Json(json!({"result": {"code": "000.000.100", "description": "successful request"},
                                              "records": records})),
                        )
                    }
                },
            ),
        )
        .route(
            "/v1/query/{id}",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({
                        "buildNumber": "b297e8ec4aa0888454578e292c67546d4c6a5c28@2018-08-30 06:31:46 +****",
                        "id": "8ac9a4a8658afc790165a3f0e436198d",
                        "ndc": "8acda4c9635ea2d90163636f0a462510_ebb07f3e26e942908d6eeed03a813237",
                        "result": {"code": "800.120.100", "description": "Too many requests. Please try again later."},
                        "timestamp": "2018-09-04 09:42:33+0000"
                    })),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, reports)
}

async fn app_against(url: String) -> TestApp {
    spawn_app_with(|c| {
        c.opp.base_url = Some(url);
        c.entities = paywarden::app::demo_entities();
    })
    .await
}

#[tokio::test]
async fn a_throttled_status_query_is_throttled_and_retryable_not_unreadable() {
    let (url, _) = stand_in_opp(Paging::SomeUnmappable).await;
    let app = app_against(url).await;
    let client = app.client("/mcp", Era::Stateless).await;
    let text = call_err(
        &client,
        "get_transactions",
        json!({"id": "8ac7a4c9ffffffffffffffffffffffff"}),
    )
    .await;
    assert!(text.contains("throttling"), "{text}");
    assert!(text.contains("800.120.100"), "{text}");
    assert!(text.contains("retry"), "{text}");
    assert!(!text.contains("cannot read"), "{text}");
}

#[tokio::test]
async fn report_paging_counts_the_records_opp_returned_not_the_mapped_ones() {
    let (url, reports) = stand_in_opp(Paging::SomeUnmappable).await;
    let app = app_against(url).await;
    let client = app.client("/mcp", Era::Stateless).await;
    // A paywarden-side filter (currency): paywarden reads the report itself.
    let found = call_ok(
        &client,
        "search_transactions",
        json!({"dateFrom": "2026-11-01", "dateTo": "2026-11-30", "limit": 100, "currency": "EUR"}),
    )
    .await;
    // Page 1 held 100 records (90 mappable): a full page, so page 2 is read too.
    assert_eq!(reports.load(Ordering::SeqCst), 2);
    assert_eq!(found["totalCount"], 95, "{found}");
    assert_eq!(found["truncated"], false, "{found}");
}

#[tokio::test]
async fn a_report_page_without_opps_count_falls_back_to_reading_the_report() {
    let (url, reports) = stand_in_opp(Paging::SomeUnmappable).await;
    let app = app_against(url).await;
    let client = app.client("/mcp", Era::Stateless).await;
    // No paywarden-side filter: paywarden asks OPP for the page itself; this OPP answers
    // without `totalCount`, so paywarden cannot state the total from it and reads the report.
    let found = call_ok(
        &client,
        "search_transactions",
        json!({"dateFrom": "2026-11-01", "dateTo": "2026-11-30", "limit": 100}),
    )
    .await;
    assert_eq!(
        reports.load(Ordering::SeqCst),
        3,
        "the page, then the report's two pages"
    );
    assert_eq!(found["totalCount"], 95, "{found}");
    assert_eq!(found["truncated"], false, "{found}");
}

#[tokio::test]
async fn a_report_opp_does_not_page_stops_and_says_it_is_incomplete() {
    let (url, reports) = stand_in_opp(Paging::IgnoresPageNo).await;
    let app = app_against(url).await;
    let client = app.client("/mcp", Era::Stateless).await;
    let result = call(
        &client,
        "search_transactions",
        json!({"dateFrom": "2026-11-01", "dateTo": "2026-11-30", "limit": 100, "currency": "EUR"}),
    )
    .await
    .expect("answered");
    assert_eq!(result.is_error, Some(false));
    let found = result.structured_content.clone().expect("structured");
    // The same page twice: stop at once, keep one copy, say so.
    assert_eq!(reports.load(Ordering::SeqCst), 2);
    assert_eq!(found["totalCount"], 100, "{found}");
    assert_eq!(found["truncated"], true, "{found}");
    assert!(text(&result).contains("INCOMPLETE"), "{}", text(&result));
}

#[tokio::test]
async fn amounts_go_to_opp_as_n10_n2_and_what_it_cannot_hold_is_refused_before_sending() {
    let app = spawn_app_with(|_| {}).await;
    let creds = demo_credentials();
    let client = app.client("/mcp", Era::Stateless).await;
    // The emulator takes N10.N2 only, as OPP does: a KWD payment of 1.50.
    let db = app
        .create_payment(&creds, PaymentType::Debit, "1.50", Currency::KWD)
        .await;
    // 0.505 KWD has a third decimal N10.N2 cannot carry: refused, nothing sent.
    let text = call_err(
        &client,
        "perform_refund",
        json!({"referenceId": db, "amount": "0.505", "currency": "KWD"}),
    )
    .await;
    assert!(text.contains("N10.N2"), "{text}");
    // 0.500 KWD goes as "0.50" and is accepted.
    let rf = call_ok(
        &client,
        "perform_refund",
        json!({"referenceId": db, "amount": "0.500", "currency": "KWD"}),
    )
    .await;
    assert_eq!(rf["amountMinor"], 500, "{rf}");
    assert_eq!(rf["balances"]["refundable"], "1.000", "{rf}");
}
