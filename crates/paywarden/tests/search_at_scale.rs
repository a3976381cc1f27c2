//! `search_transactions` over a bulk-seeded emulator (issue 15, "search at scale"): paging
//! through the tool returns every matching transaction exactly once, with the exact
//! `totalCount`/`totalPages`, whether OPP pages the search itself (no paywarden-side filter),
//! paywarden scans and filters (currency, result category, amount), or the merchant reference
//! query answers; date ranges cut through the seeded days. The expected sets are read from the
//! emulator's SQLite file, the provider's own state.

mod common;

use std::collections::HashSet;

use chrono::{Duration, NaiveDateTime, Utc};
use common::*;
use paywarden_emulator::{bulk_seed, BulkSeed, DEMO_ENTITY_ID, SECOND_ENTITY_ID};
use serde_json::{json, Value};

/// One seeded row as the tests filter it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Row {
    id: String,
    payment_type: String,
    currency: String,
    amount_minor: i64,
    result_code: String,
    merchant_transaction_id: Option<String>,
    created_at: String,
}

const TIME: &str = "%Y-%m-%d %H:%M:%S";

async fn seeded_app(count: u64, days: u32) -> (TestApp, Vec<Row>, NaiveDateTime) {
    let app = spawn_app().await;
    let path = app.data_dir.path().join("emulator.db");
    let until = NaiveDateTime::parse_from_str(&Utc::now().format(TIME).to_string(), TIME)
        .expect("now")
        - Duration::hours(1);
    for (entity, n) in [(DEMO_ENTITY_ID, count), (SECOND_ENTITY_ID, 300)] {
        bulk_seed(
            &path,
            &BulkSeed {
                entity_id: entity.into(),
                transactions: n,
                days,
                until,
                seed: 11,
            },
        )
        .await
        .expect("seeded");
    }
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("emulator db");
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, payment_type, currency, amount_minor, result_code, \
         merchant_transaction_id, created_at FROM transactions WHERE entity_id = ? \
         ORDER BY created_at, seq",
    )
    .bind(DEMO_ENTITY_ID)
    .fetch_all(&pool)
    .await
    .expect("rows");
    pool.close().await;
    (app, rows, until)
}

/// Pages through `search_transactions` with `args` and `limit`: every page's totals agree,
/// the pages hold `totalCount` records, no record twice. Returns the ids in order and the
/// last answer.
async fn page_through(client: &Client, args: &Value, limit: u32) -> (Vec<String>, Value) {
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    let mut page_no: u32 = 1;
    let mut first: Option<Value> = None;
    loop {
        let mut call_args = args.clone();
        call_args["limit"] = json!(limit);
        call_args["pageNo"] = json!(page_no);
        let page = call_ok(client, "search_transactions", call_args).await;
        let records = page["records"].as_array().expect("records").clone();
        if let Some(first) = &first {
            assert_eq!(
                page["totalCount"], first["totalCount"],
                "{args} page {page_no}"
            );
            assert_eq!(
                page["totalPages"], first["totalPages"],
                "{args} page {page_no}"
            );
        } else {
            first = Some(page.clone());
        }
        if records.is_empty() {
            let total = page["totalCount"].as_u64().expect("totalCount");
            assert_eq!(ids.len() as u64, total, "{args}: pages held every match");
            let pages = page["totalPages"].as_u64().expect("totalPages");
            assert_eq!(pages, total.div_ceil(u64::from(limit)), "{args}");
            assert_eq!(
                u64::from(page_no - 1),
                pages,
                "{args}: the first empty page is past the last"
            );
            return (ids, page);
        }
        assert!(records.len() <= limit as usize);
        for r in records {
            let id = r["id"].as_str().expect("id").to_string();
            assert!(seen.insert(id.clone()), "{args}: {id} twice");
            ids.push(id);
        }
        page_no += 1;
        assert!(page_no < 500, "{args}: runaway paging");
    }
}

fn range(rows: &[Row], from: &str, to: &str) -> Vec<Row> {
    rows.iter()
        .filter(|r| r.created_at.as_str() >= from && r.created_at.as_str() <= to)
        .cloned()
        .collect()
}

fn ids(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test]
async fn paging_through_a_seeded_history_returns_each_match_once_with_exact_totals() {
    let (app, rows, until) = seeded_app(3_000, 60).await;
    let client = app.client("/mcp", Era::Stateless).await;
    // A range cutting through days at odd seconds, well inside the history.
    let from = (until - Duration::days(41) + Duration::seconds(47_825))
        .format(TIME)
        .to_string();
    let to = (until - Duration::days(19) - Duration::seconds(3_333))
        .format(TIME)
        .to_string();
    let in_range = range(&rows, &from, &to);
    assert!(in_range.len() > 800, "{} rows in range", in_range.len());

    // 1. No paywarden-side filter: OPP's own pages, in OPP's order (oldest first).
    let args = json!({"dateFrom": from, "dateTo": to});
    for limit in [100, 37] {
        let (got, last) = page_through(&client, &args, limit).await;
        assert_eq!(got, ids(&in_range), "limit {limit}");
        assert_eq!(last["truncated"], false);
    }

    // 2. Payment types (pushed down to OPP's report).
    let args = json!({"dateFrom": from, "dateTo": to, "paymentTypes": ["DB", "RF"]});
    let expected: Vec<Row> = in_range
        .iter()
        .filter(|r| r.payment_type == "DB" || r.payment_type == "RF")
        .cloned()
        .collect();
    let (got, last) = page_through(&client, &args, 50).await;
    assert_eq!(got, ids(&expected));
    assert_eq!(last["truncated"], false);

    // 3. paywarden-side filters (currency, result category, amount range) over a range OPP
    //    answers with fewer rows than the scan limit: scanned, filtered, paged here.
    let narrow_from = (until - Duration::days(30) + Duration::seconds(7_201))
        .format(TIME)
        .to_string();
    let narrow_to = (until - Duration::days(12)).format(TIME).to_string();
    let narrow = range(&rows, &narrow_from, &narrow_to);
    assert!(narrow.len() < 2_000, "{} rows", narrow.len());
    let args = json!({"dateFrom": narrow_from, "dateTo": narrow_to, "currency": "EUR",
                      "resultCategories": ["success"], "amountMin": "20.00", "amountMax": "900.00"});
    let expected: Vec<Row> = narrow
        .iter()
        .filter(|r| {
            r.currency == "EUR"
                && r.result_code == "000.100.110"
                && (2_000..=90_000).contains(&r.amount_minor)
        })
        .cloned()
        .collect();
    assert!(expected.len() > 100, "{} expected", expected.len());
    let (got, last) = page_through(&client, &args, 30).await;
    assert_eq!(got, ids(&expected));
    assert_eq!(last["truncated"], false);

    // Declined payments only, a category OPP cannot filter on.
    let args = json!({"dateFrom": narrow_from, "dateTo": narrow_to,
                      "resultCategories": ["rejected_by_bank"]});
    let expected: Vec<Row> = narrow
        .iter()
        .filter(|r| r.result_code.starts_with("800.100.15"))
        .cloned()
        .collect();
    assert!(!expected.is_empty());
    let (got, _) = page_through(&client, &args, 100).await;
    assert_eq!(got, ids(&expected));

    // 4. A merchant reference: OPP's merchant-reference query, the range applied here.
    let reference = in_range
        .iter()
        .find_map(|r| r.merchant_transaction_id.clone())
        .expect("a referenced payment in range");
    let args = json!({"dateFrom": from, "dateTo": to, "merchantTransactionId": reference});
    let expected: Vec<Row> = in_range
        .iter()
        .filter(|r| r.merchant_transaction_id.as_deref() == Some(reference.as_str()))
        .cloned()
        .collect();
    let (got, _) = page_through(&client, &args, 1).await;
    assert_eq!(got, ids(&expected));
    let outside = call_ok(
        &client,
        "search_transactions",
        json!({"dateFrom": "2001-01-01", "dateTo": "2001-12-31", "merchantTransactionId": reference}),
    )
    .await;
    assert_eq!(outside["totalCount"], 0, "{outside}");

    // 5. The whole history in one range: OPP pages it without a scan limit; with a
    //    paywarden-side filter the scan stops at its limit and says so.
    let all = call_ok(
        &client,
        "search_transactions",
        json!({"dateFrom": "2000-01-01", "limit": 100, "pageNo": 30}),
    )
    .await;
    assert_eq!(
        all["totalCount"],
        rows.len() as u64,
        "{}",
        all["totalCount"]
    );
    assert_eq!(all["truncated"], false);
    let want: Vec<String> = ids(&rows[2_900..rows.len().min(3_000)]);
    let got: Vec<String> = all["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(got, want, "page 30 of 100 is rows 2,900..3,000");
    let scanned = call_ok(
        &client,
        "search_transactions",
        json!({"dateFrom": "2000-01-01", "currency": "EUR"}),
    )
    .await;
    assert_eq!(scanned["truncated"], true, "{}", scanned["totalCount"]);
}

/// The `created_at` of each transaction `get_transactions` listed (`payments[].timestamp`,
/// `YYYY-MM-DD HH:MM:SS+0000`), as the emulator stores it.
fn listed_times(answer: &Value) -> Vec<String> {
    answer["payments"]
        .as_array()
        .expect("payments")
        .iter()
        .map(|p| p["timestamp"].as_str().expect("timestamp")[..19].to_string())
        .collect()
}

#[tokio::test]
async fn the_most_recent_transactions_of_a_busy_account_are_its_newest() {
    // 3,000 transactions in the last 20 days: more than the 2,000 paywarden scans. Before, the
    // scan read OPP's report oldest first, stopped at 2,000 and listed the newest of those as
    // "the most recent": transactions from 20 days ago, with `totalCount` 2,000 and
    // `truncated`, while the account's last hours were never shown.
    let (app, rows, _) = seeded_app(3_000, 20).await;
    let client = app.client("/mcp", Era::Stateless).await;
    let newest_first: Vec<String> = rows.iter().rev().map(|r| r.created_at.clone()).collect();

    let first = call_ok(&client, "get_transactions", json!({"limit": 7})).await;
    let recent = &first["recent"];
    assert_eq!(recent["totalCount"], 3_000, "{recent}");
    assert_eq!(recent["totalPages"], 429, "{recent}");
    assert_eq!(recent["truncated"], false, "{recent}");
    let times = listed_times(&first);
    assert_eq!(times.len(), 7);
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    // The seventh newest transaction's second: page 1 holds nothing older (ties at that second
    // may be ordered either way).
    assert!(
        times.iter().all(|t| *t >= newest_first[6]),
        "{times:?} against {:?}",
        &newest_first[..7]
    );
    assert_eq!(times[0], newest_first[0]);

    // A page in the middle and the last page: the same ranks from the newest.
    let page = call_ok(
        &client,
        "get_transactions",
        json!({"limit": 7, "pageNo": 200}),
    )
    .await;
    let times = listed_times(&page);
    assert_eq!(times.len(), 7);
    assert!(
        times
            .iter()
            .all(|t| *t <= newest_first[199 * 7] && *t >= newest_first[199 * 7 + 6]),
        "{times:?}"
    );
    let last = call_ok(
        &client,
        "get_transactions",
        json!({"limit": 7, "pageNo": 429}),
    )
    .await;
    let times = listed_times(&last);
    assert_eq!(times.len(), 3_000 - 428 * 7);
    assert!(
        times.iter().all(|t| *t <= newest_first[428 * 7]),
        "{times:?}"
    );
    assert_eq!(times.last(), newest_first.last());
    let past = call_ok(
        &client,
        "get_transactions",
        json!({"limit": 7, "pageNo": 430}),
    )
    .await;
    assert_eq!(listed_times(&past).len(), 0);
    assert_eq!(past["recent"]["totalCount"], 3_000);
}
