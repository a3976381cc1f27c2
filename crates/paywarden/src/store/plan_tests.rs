//! The indexes that answer the store's lookups by key, on a young database (migration 0017).
//!
//! sqlx prepares every statement, and PostgreSQL plans a prepared statement once for all its
//! parameters (a generic plan) after its first five runs, for the life of the connection. On a
//! freshly migrated database the planner took `idempotency_keys_transaction` (entity_id,
//! transaction_id) for `WHERE entity_id = $1 AND idempotency_key = $2`, so every lookup and
//! update of a key read all the entity's keys. These tests ask PostgreSQL for the generic plan
//! (`plan_cache_mode = force_generic_plan`) of each statement's shape on an empty, freshly
//! migrated database (PostgreSQL pass of scripts/test.sh), and SQLite for its plan.

use super::*;
use sqlx::{Connection, Row};

/// Each lookup's shape, as the store writes it (`store/idempotency.rs`, `store/safety.rs`,
/// `store/orders.rs`), and the index that must answer it.
const LOOKUPS: &[(&str, &str)] = &[
    (
        "SELECT * FROM idempotency_keys WHERE entity_id = $1 AND idempotency_key = $2",
        KEY,
    ),
    (
        "UPDATE idempotency_keys SET lease_until = $1 \
         WHERE entity_id = $2 AND idempotency_key = $3 AND state = 'in_progress' AND holder = $4",
        KEY,
    ),
    (
        "UPDATE idempotency_keys SET intent = $1, lease_until = $2 \
         WHERE entity_id = $3 AND idempotency_key = $4 AND state = 'in_progress' AND holder = $5",
        KEY,
    ),
    (
        "UPDATE idempotency_keys SET state = 'completed', response = $1, is_error = $2, completed_at = $3, \
         transaction_id = $4, holder = NULL, lease_until = NULL \
         WHERE entity_id = $5 AND idempotency_key = $6 \
         AND ((state = 'in_progress' AND holder = $7) OR state = 'unknown')",
        KEY,
    ),
    (
        "UPDATE idempotency_keys SET reservation_id = $1 WHERE entity_id = $2 AND idempotency_key = $3",
        KEY,
    ),
    (
        "SELECT COUNT(*) FROM idempotency_keys WHERE entity_id = $1 AND transaction_id = $2 \
         AND ($3::text IS NULL OR idempotency_key <> $3)",
        "idempotency_keys_transaction",
    ),
    (
        "SELECT * FROM customers WHERE entity_id = $1 AND lower(email) = lower($2) LIMIT 1",
        "customers_entity_email_lower",
    ),
    // A movement and an audit row by transaction (`store/late.rs`, `store/safety.rs`): right
    // today; here so that an index added later cannot take their place unnoticed.
    (
        "SELECT COUNT(*) FROM movements WHERE entity_id = $1 AND transaction_id = $2",
        "movements_transaction",
    ),
    (
        "SELECT COUNT(*) FROM audit_log WHERE entity_id = $1 AND transaction_id = $2 AND outcome = $3",
        "audit_log_transaction",
    ),
];

/// The primary key of `idempotency_keys` (PostgreSQL's name; SQLite's is its autoindex).
const KEY: &str = "idempotency_keys_pkey";

/// The other indexes of the tables above: a plan that names one of them for a key's lookup
/// reads more than the key.
const OTHERS: &[&str] = &[
    "idempotency_keys_transaction",
    "idempotency_keys_open",
    "idempotency_keys_approval",
    "customers_entity_id_email_key",
    "movements_entity_day",
    "audit_log_entity",
];

fn check(sql: &str, index: &str, plan: &str) {
    assert!(plan.contains(index), "{sql}\nshould use {index}:\n{plan}");
    for other in OTHERS.iter().filter(|o| **o != index) {
        assert!(!plan.contains(other), "{sql}\nuses {other}:\n{plan}");
    }
}

#[tokio::test]
async fn pg_generic_plans_on_a_young_database_look_keys_up_by_their_own_index() {
    let Some(server) = super::pg_ping_tests::pg_server() else {
        return;
    };
    let (url, name) = super::pg_ping_tests::fresh_database(&server).await;
    let store = Store::connect(url.as_str()).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(url.as_str()).await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .unwrap();
    for (n, (sql, index)) in LOOKUPS.iter().enumerate() {
        let params = (1..=8).filter(|p| sql.contains(&format!("${p}"))).count();
        sqlx::raw_sql(&format!("PREPARE lookup{n} AS {sql}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let nulls = vec!["NULL"; params].join(", ");
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE lookup{n}({nulls})"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        check(sql, index, &plan.join("\n"));
    }
    drop(conn);
    store.close().await;
    super::pg_ping_tests::drop_database(&server, &name).await;
}

#[tokio::test]
async fn sqlite_plans_look_keys_up_by_their_own_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.db");
    let store = Store::open(&path).await.unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for (sql, index) in LOOKUPS {
        let index = if *index == KEY {
            "sqlite_autoindex_idempotency_keys_1"
        } else {
            index
        };
        let params = (1..=8).filter(|p| sql.contains(&format!("${p}"))).count();
        // The cast PostgreSQL needs to type `$3` in PREPARE is not SQLite's syntax.
        let explain = format!("EXPLAIN QUERY PLAN {}", sql.replace("::text", ""));
        let mut query = sqlx::query(&explain);
        for _ in 0..params {
            query = query.bind(None::<String>);
        }
        let plan: Vec<String> = query
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect();
        check(sql, index, &plan.join("\n"));
    }
    drop(conn);
    store.close().await;
}
