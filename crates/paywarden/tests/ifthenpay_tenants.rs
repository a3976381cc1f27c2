//! Tenants of the ifthenpay toolset when paywarden holds the keys: every request, reference and
//! payment belongs to the entity that created it. Attacks as issue 13 found them: entity 2
//! listing entity 1's paid payment, reading its MB WAY status, and reusing its order id; and
//! anonymous callers (keys as arguments) mixing with authenticated entities. The real server on
//! port 0 with the emulator behind it, spoken to at the seed's `/mcp/payments/` with plain HTTP.
//! Runs on SQLite, or PostgreSQL with `PAYWARDEN_TEST_DATABASE=postgres`.

mod common;

use common::{spawn_app_with, TestApp};
use paywarden_emulator::{
    DEMO_ENTITY_ID, DEMO_TOKEN, IFTHENPAY_BACKOFFICE_KEY, IFTHENPAY_MBWAY_KEY, IFTHENPAY_MB_KEY,
    SECOND_ENTITY_ID, SECOND_TOKEN,
};
use secrecy::SecretString;
use serde_json::{json, Value};

const ENDPOINT: &str = "/mcp/payments/";

/// Who calls: an entity with its token, or nobody (keys as arguments).
type Who<'a> = Option<(&'a str, &'a str)>;
const ONE: Who = Some((DEMO_ENTITY_ID, DEMO_TOKEN));
const TWO: Who = Some((SECOND_ENTITY_ID, SECOND_TOKEN));
const ANONYMOUS: Who = None;

/// paywarden holding the emulator's Multibanco, MB WAY and backoffice keys in `[ifthenpay]`
/// (the emulator's two demo entities may use them), built-in policy.
async fn spawn_with_server_keys() -> TestApp {
    spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.ifthenpay.mb_key = Some(SecretString::from(IFTHENPAY_MB_KEY.to_string()));
        c.ifthenpay.mbway_key = Some(SecretString::from(IFTHENPAY_MBWAY_KEY.to_string()));
        c.ifthenpay.bo_key = Some(SecretString::from(IFTHENPAY_BACKOFFICE_KEY.to_string()));
    })
    .await
}

/// tools/call as `who`; returns the JSON-RPC answer.
async fn call_as(app: &TestApp, who: Who<'_>, name: &str, arguments: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{}{ENDPOINT}", app.base_url))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": name, "arguments": arguments}}));
    if let Some((entity, token)) = who {
        request = request
            .header("X-Entity-Id", entity)
            .header("X-Token", token);
    }
    request
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON-RPC answer")
}

/// A call that must succeed; returns `structuredContent`.
async fn ok_as(app: &TestApp, who: Who<'_>, name: &str, arguments: Value) -> Value {
    let answer = call_as(app, who, name, arguments.clone()).await;
    assert_eq!(
        answer["result"]["isError"], false,
        "{name}({arguments}) as {who:?}: {answer}"
    );
    answer["result"]["structuredContent"].clone()
}

/// A call that must be a tool error; returns its text.
async fn err_as(app: &TestApp, who: Who<'_>, name: &str, arguments: Value) -> String {
    let answer = call_as(app, who, name, arguments.clone()).await;
    assert_eq!(
        answer["result"]["isError"], true,
        "{name}({arguments}) as {who:?} should fail: {answer}"
    );
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The emulator's shopper pays a reference or MB WAY request; returns the callback's status.
async fn pay(app: &TestApp, what: Value) -> u16 {
    let url = format!(
        "{}/sandbox/ifthenpay/shopper",
        app.emulator_url.as_deref().expect("emulator")
    );
    let mut body = json!({"action": "pay"});
    if let (Some(b), Value::Object(w)) = (body.as_object_mut(), what) {
        b.extend(w);
    }
    let answer: Value = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("emulator")
        .json()
        .await
        .expect("json");
    answer["callback"]["status"].as_u64().unwrap_or_default() as u16
}

fn references(list: &Value) -> Vec<String> {
    list["payments"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|x| x["reference"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn anonymous_scope(app: &TestApp, key: &str) -> String {
    format!("key:{}", app.key_ids.id(key))
}

#[tokio::test]
async fn one_order_id_in_three_scopes_is_three_separate_references_and_retries_stay_in_their_own() {
    let app = spawn_with_server_keys().await;
    let order = json!({"order_id": "SHARED-1", "amount": 10.0});
    let first = ok_as(&app, ONE, "multibanco_create_reference", order.clone()).await;
    let other = ok_as(&app, TWO, "multibanco_create_reference", order.clone()).await;
    let anonymous = ok_as(
        &app,
        ANONYMOUS,
        "multibanco_create_reference",
        json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": "SHARED-1", "amount": 10.0}),
    )
    .await;
    let refs = [&first, &other, &anonymous].map(|r| r["reference"].clone());
    assert_ne!(refs[0], refs[1], "entity 2 got entity 1's reference");
    assert_ne!(refs[0], refs[2], "anonymous got entity 1's reference");
    assert_ne!(refs[1], refs[2]);
    // Each retry returns its own scope's first reference, whoever asked in between.
    for (who, expected) in [(ONE, &first), (TWO, &other)] {
        let again = ok_as(&app, who, "multibanco_create_reference", order.clone()).await;
        assert_eq!(again["reference"], expected["reference"], "{who:?}");
        assert_eq!(again["request_id"], expected["request_id"], "{who:?}");
    }
    // Other details for an order id already used in this scope: refused, nothing created.
    let text = err_as(
        &app,
        TWO,
        "multibanco_create_reference",
        json!({"order_id": "SHARED-1", "amount": 11.0}),
    )
    .await;
    assert!(text.contains("already used"), "{text}");
    // The records: one per scope, each under its own entity.
    for (scope, reference) in [
        (DEMO_ENTITY_ID.to_string(), &refs[0]),
        (SECOND_ENTITY_ID.to_string(), &refs[1]),
        (anonymous_scope(&app, IFTHENPAY_MB_KEY), &refs[2]),
    ] {
        let records = app.store.ifthenpay_requests(&scope).await.expect("records");
        assert_eq!(records.len(), 1, "{scope}: {records:?}");
        assert_eq!(
            records[0].reference.as_deref(),
            reference.as_str(),
            "{scope}"
        );
    }
    // Entity 1's shopper pays: only entity 1's record is paid.
    assert_eq!(pay(&app, json!({"reference": refs[0]})).await, 200);
    let status = |scope: String| {
        let store = app.store.clone();
        async move {
            store.ifthenpay_requests(&scope).await.expect("records")[0]
                .status
                .clone()
        }
    };
    assert_eq!(status(DEMO_ENTITY_ID.into()).await, "paid");
    assert_eq!(status(SECOND_ENTITY_ID.into()).await, "pending");
    assert_eq!(
        status(anonymous_scope(&app, IFTHENPAY_MB_KEY)).await,
        "pending"
    );
}

#[tokio::test]
async fn payments_list_with_server_keys_shows_only_the_callers_own_payments() {
    let app = spawn_with_server_keys().await;
    let mine = ok_as(
        &app,
        ONE,
        "multibanco_create_reference",
        json!({"order_id": "ONE-PAID", "amount": 25.0}),
    )
    .await;
    let theirs = ok_as(
        &app,
        TWO,
        "multibanco_create_reference",
        json!({"order_id": "TWO-PAID", "amount": 30.0}),
    )
    .await;
    let anonymous = ok_as(
        &app,
        ANONYMOUS,
        "multibanco_create_reference",
        json!({"mb_key": IFTHENPAY_MB_KEY, "order_id": "ANON-PAID", "amount": 35.0}),
    )
    .await;
    for r in [&mine, &theirs, &anonymous] {
        assert_eq!(pay(&app, json!({"reference": r["reference"]})).await, 200);
    }
    let reference = |r: &Value| r["reference"].as_str().unwrap_or_default().to_string();

    let two = ok_as(&app, TWO, "payments_list", json!({})).await;
    assert_eq!(references(&two), vec![reference(&theirs)], "{two}");
    assert_eq!(two["count"], 1, "{two}");
    let one = ok_as(&app, ONE, "payments_list", json!({})).await;
    assert_eq!(references(&one), vec![reference(&mine)], "{one}");
    // Filters narrow within the caller's own payments only: asking for entity 1's order id or
    // reference by name finds nothing for entity 2.
    for filter in [
        json!({"order_id": "ONE-PAID"}),
        json!({"reference": reference(&mine)}),
        json!({"request_id": mine["request_id"]}),
    ] {
        let found = ok_as(&app, TWO, "payments_list", filter.clone()).await;
        assert_eq!(found["count"], 0, "{filter}: {found}");
    }
    // A caller with the backoffice key of its own (an argument) sees the merchant's whole
    // account, as in the seed.
    let account = ok_as(
        &app,
        ANONYMOUS,
        "payments_list",
        json!({"bo_key": IFTHENPAY_BACKOFFICE_KEY}),
    )
    .await;
    let all = references(&account);
    for r in [&mine, &theirs, &anonymous] {
        assert!(all.contains(&reference(r)), "{account}");
    }
}

#[tokio::test]
async fn mbway_status_with_server_keys_is_only_for_the_callers_own_requests() {
    let app = spawn_with_server_keys().await;
    let request = |order: &str| json!({"order_id": order, "amount": 7.0, "phone": "351#912345678"});
    let mine = ok_as(&app, ONE, "mbway_request_payment", request("W-ONE")).await;
    let mine_id = mine["request_id"].as_str().unwrap_or_default().to_string();
    let anonymous = ok_as(
        &app,
        ANONYMOUS,
        "mbway_request_payment",
        json!({"mbway_key": IFTHENPAY_MBWAY_KEY, "order_id": "W-ANON", "amount": 8.0, "phone": "351#912345678"}),
    )
    .await;
    let anonymous_id = anonymous["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(pay(&app, json!({"request_id": mine_id})).await, 200);

    let own = ok_as(
        &app,
        ONE,
        "mbway_check_status",
        json!({"request_id": mine_id}),
    )
    .await;
    assert_eq!(own["status"], "paid", "{own}");
    // Entity 2 cannot read entity 1's request, nor entity 1 the anonymous caller's: the answer
    // says nothing of its status.
    for (who, id) in [(TWO, &mine_id), (ONE, &anonymous_id)] {
        let text = err_as(&app, who, "mbway_check_status", json!({"request_id": id})).await;
        assert!(
            !text.contains("paid") && !text.contains("000") && !text.contains("pending"),
            "{who:?}: {text}"
        );
        assert!(text.contains("request_id"), "{text}");
    }
    // Entity 2's failed read changed nothing of entity 1's record.
    let records = app
        .store
        .ifthenpay_requests(DEMO_ENTITY_ID)
        .await
        .expect("records");
    assert_eq!(records[0].status, "paid");
    assert!(app
        .store
        .ifthenpay_requests(SECOND_ENTITY_ID)
        .await
        .expect("records")
        .is_empty());
}

/// `[[entities]]` with an `[entities.ifthenpay]` table: that entity's keys replace the global
/// `[ifthenpay]` ones, for it alone.
#[tokio::test]
async fn per_entity_key_sets_replace_the_global_keys_for_that_entity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("paywarden.toml");
    let hash = paywarden::service::safety::token_hash;
    std::fs::write(
        &file,
        format!(
            r#"
[ifthenpay]
mb_key = "GLOBAL-NOT-A-KEY"
bo_key = "GLOBAL-NOT-A-KEY"

[[entities]]
id = "{DEMO_ENTITY_ID}"
token_sha256 = "{}"
[entities.ifthenpay]
mb_key = "{IFTHENPAY_MB_KEY}"
bo_key = "{IFTHENPAY_BACKOFFICE_KEY}"

[[entities]]
id = "{SECOND_ENTITY_ID}"
token_sha256 = "{}"
"#,
            hash(DEMO_TOKEN),
            hash(SECOND_TOKEN)
        ),
    )
    .expect("config written");
    let loaded = paywarden::config::Config::load(Some(&file), &Default::default())
        .expect("the configuration loads");
    let app = spawn_app_with(|c| {
        c.safety.policy_file = None;
        c.ifthenpay = loaded.ifthenpay.clone();
        c.entities = loaded.entities.clone();
    })
    .await;
    // Entity 1 uses its own (valid) key; entity 2 falls back to the global (invalid) one.
    let mine = ok_as(
        &app,
        ONE,
        "multibanco_create_reference",
        json!({"order_id": "PER-1", "amount": 5.0}),
    )
    .await;
    let text = err_as(
        &app,
        TWO,
        "multibanco_create_reference",
        json!({"order_id": "PER-1", "amount": 5.0}),
    )
    .await;
    assert!(text.starts_with("Invalid key or API error"), "{text}");
    assert!(!text.contains("GLOBAL-NOT-A-KEY"), "{text}");
    let records = app
        .store
        .ifthenpay_requests(DEMO_ENTITY_ID)
        .await
        .expect("records");
    assert_eq!(records[0].key_id, app.key_ids.id(IFTHENPAY_MB_KEY));
    // Its own backoffice key, still filtered to its own payments.
    assert_eq!(
        pay(&app, json!({"reference": mine["reference"]})).await,
        200
    );
    let list = ok_as(&app, ONE, "payments_list", json!({})).await;
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["payments"][0]["order_id"], "PER-1");
}

/// A per-entity table with a misspelt key name is a clear configuration error, not a key
/// silently ignored.
#[test]
fn a_misspelt_per_entity_key_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("paywarden.toml");
    std::fs::write(
        &file,
        "[[entities]]\nid = \"e\"\ntoken_sha256 = \"00\"\n[entities.ifthenpay]\nmbkey = \"x\"\n",
    )
    .expect("written");
    let err = paywarden::config::Config::load(Some(&file), &Default::default())
        .map(|_| ())
        .expect_err("refused");
    assert!(err.to_string().contains("mbkey"), "{err}");
}

/// Migration 0006 rewrites the idempotency keys of creations made before it
/// (`ifthenpay:<tool>:<key id>:<order>`) to the entity-scoped form, so a retry after the
/// upgrade returns the first reference; where one entity used one order id with two keys it
/// leaves them, and paywarden refuses that order id instead of creating another request.
#[tokio::test]
async fn upgrading_keeps_earlier_creations_idempotent() {
    use sqlx::migrate::Migrator;
    let dir = tempfile::tempdir().expect("tempdir");
    let database = common::TestDatabase::fresh().await;
    let url = database
        .url
        .clone()
        .unwrap_or_else(|| paywarden::store::sqlite_url(&dir.path().join("paywarden.db")));
    // The database as paywarden left it before 0006: migrations 0001-0005 only.
    let engine = if common::on_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old).expect("dir");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(engine);
    for entry in std::fs::read_dir(&source).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.as_str() < "0006" {
            std::fs::copy(&path, old.join(&name)).expect("copied");
        }
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("database");
    Migrator::new(old.as_path())
        .await
        .expect("migrator")
        .run(&pool)
        .await
        .expect("0001-0005");
    let legacy = |entity: &str, tool: &str, key: &str| {
        let (entity, tool, key) = (entity.to_string(), tool.to_string(), key.to_string());
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO idempotency_keys (entity_id, idempotency_key, tool, request_hash, state, response, is_error, created_at) \
                 VALUES ($1, $2, $3, 'h', 'completed', '{}', NULL, '2026-01-01T00:00:00Z')",
            )
            .bind(entity)
            .bind(key)
            .bind(tool)
            .execute(&pool)
            .await
            .expect("legacy row");
        }
    };
    let mb = "multibanco_create_reference";
    legacy(
        SECOND_ENTITY_ID,
        mb,
        &format!("ifthenpay:{mb}:0123456789abcdef:ORD:1"),
    )
    .await;
    legacy(
        "key:fedcba9876543210",
        "pix_create_payment",
        "ifthenpay:pix_create_payment:fedcba9876543210:P-9",
    )
    .await;
    legacy(
        DEMO_ENTITY_ID,
        mb,
        &format!("ifthenpay:{mb}:0123456789abcdef:DUP"),
    )
    .await;
    legacy(
        DEMO_ENTITY_ID,
        mb,
        &format!("ifthenpay:{mb}:aaaaaaaaaaaaaaaa:DUP"),
    )
    .await;
    legacy(
        DEMO_ENTITY_ID,
        "perform_refund",
        "refund-0123456789abcdef-x",
    )
    .await;
    sqlx::query(
        "INSERT INTO ifthenpay_requests (entity_id, tool, method, key_id, order_id, request_id, amount_minor, currency, status, created_at) \
         VALUES ($1, $2, 'MB', '0123456789abcdef', 'DUP', 'REQ-DUP', 100, 'EUR', 'pending', '2026-01-01T00:00:00Z')",
    )
    .bind(DEMO_ENTITY_ID)
    .bind(mb)
    .execute(&pool)
    .await
    .expect("legacy request");
    pool.close().await;

    let store = paywarden::store::Store::connect(&url)
        .await
        .expect("0006 applies");
    let mut keys: Vec<(String, String)> = Vec::new();
    for (entity, key) in [
        (
            SECOND_ENTITY_ID,
            format!("ifthenpay:{mb}:{SECOND_ENTITY_ID}:ORD:1"),
        ),
        (
            "key:fedcba9876543210",
            "ifthenpay:pix_create_payment:key:fedcba9876543210:P-9".to_string(),
        ),
        (
            DEMO_ENTITY_ID,
            format!("ifthenpay:{mb}:0123456789abcdef:DUP"),
        ),
        (
            DEMO_ENTITY_ID,
            format!("ifthenpay:{mb}:aaaaaaaaaaaaaaaa:DUP"),
        ),
        (DEMO_ENTITY_ID, "refund-0123456789abcdef-x".to_string()),
    ] {
        let state = store.idempotency_key(entity, &key).await.expect("state");
        assert!(state.is_some(), "{entity} {key} after 0006");
        keys.push((entity.to_string(), key));
    }
    drop(store);

    // The ambiguous order id is refused, not created a third time.
    let db_url = url.clone();
    let app = spawn_app_with(move |c| {
        c.safety.policy_file = None;
        c.database_url = Some(db_url);
        c.ifthenpay.mb_key = Some(SecretString::from(IFTHENPAY_MB_KEY.to_string()));
    })
    .await;
    let text = err_as(
        &app,
        ONE,
        "multibanco_create_reference",
        json!({"order_id": "DUP", "amount": 1.0}),
    )
    .await;
    assert!(text.contains("already used"), "{text}");
    assert_eq!(
        app.store
            .ifthenpay_requests(DEMO_ENTITY_ID)
            .await
            .expect("records")
            .len(),
        1,
        "nothing created"
    );
    drop(app);
    drop(database);
}
