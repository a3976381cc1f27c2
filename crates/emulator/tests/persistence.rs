//! State lives in the SQLite file and survives a restart; configuration errors are reported.

mod common;

use paywarden_emulator::{
    Emulator, EmulatorConfig, EmulatorError, EntityCredential, DEMO_ENTITY_ID,
};
use reqwest::StatusCode;

use common::MAIN;

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    let h = common::start_with(
        tempfile::tempdir().unwrap(),
        EmulatorConfig::demo(path.clone()),
    )
    .await;
    let db = h
        .paid(MAIN, &[("merchantTransactionId", "persist-0001")])
        .await;
    let rf = h
        .op(
            MAIN,
            &db,
            &[
                ("paymentType", "RF"),
                ("amount", "30.00"),
                ("currency", "EUR"),
            ],
        )
        .await;
    assert_eq!(rf.status, StatusCode::OK);
    let before = h.query_id(MAIN, &db, &[]).await.body;
    drop(h);

    let h = common::start_with(tempfile::tempdir().unwrap(), EmulatorConfig::demo(path)).await;
    let after = h.query_id(MAIN, &db, &[]).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.body, before);
    let linked = h
        .query_id(MAIN, &db, &[("includeLinkedTransactions", "true")])
        .await;
    assert_eq!(common::types(&linked.body["payments"]), vec!["DB", "RF"]);
    let q = h
        .query(MAIN, &[("merchantTransactionId", "persist-0001")])
        .await;
    assert_eq!(common::ids(&q.body["payments"]), vec![db.clone()]);
    // The ledger sees the stored refund: only 70.00 is left.
    let over = h
        .op(
            MAIN,
            &db,
            &[
                ("paymentType", "RF"),
                ("amount", "70.01"),
                ("currency", "EUR"),
            ],
        )
        .await;
    assert_eq!(over.code(), "700.400.200");
    let rest = h.op(MAIN, &db, &[("paymentType", "RF")]).await;
    assert_eq!(rest.body["amount"], "70.00");
}

#[tokio::test]
async fn open_reports_configuration_and_path_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::demo(dir.path().join("x.sqlite"));
    config.entities.clear();
    assert!(matches!(
        Emulator::open(config).await,
        Err(EmulatorError::Config(_))
    ));

    let config = EmulatorConfig {
        database_path: dir.path().join("x.sqlite"),
        entities: vec![
            EntityCredential {
                entity_id: DEMO_ENTITY_ID.into(),
                token: "a".into(),
            },
            EntityCredential {
                entity_id: DEMO_ENTITY_ID.into(),
                token: "b".into(),
            },
        ],
        latency: std::time::Duration::ZERO,
        write_latency: std::time::Duration::ZERO,
        stripe_keys: Vec::new(),
    };
    assert!(matches!(
        Emulator::open(config).await,
        Err(EmulatorError::Config(_))
    ));

    let config = EmulatorConfig::demo(dir.path().join("no/such/dir/x.sqlite"));
    let err = Emulator::open(config).await.unwrap_err();
    assert!(matches!(err, EmulatorError::Open { .. }), "{err}");
    assert!(err.to_string().contains("no/such/dir"));
}

#[tokio::test]
async fn custom_entities_and_router_without_spawn() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmulatorConfig {
        database_path: dir.path().join("custom.sqlite"),
        entities: vec![EntityCredential {
            entity_id: "my-entity".into(),
            token: "my-token".into(),
        }],
        latency: std::time::Duration::ZERO,
        write_latency: std::time::Duration::ZERO,
        stripe_keys: Vec::new(),
    };
    let emulator = Emulator::open(config).await.unwrap();
    let debug = format!("{emulator:?}");
    assert!(!debug.contains("my-token"), "{debug}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = emulator.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{addr}/v1/query"))
        .bearer_auth("my-token")
        .query(&[
            ("entityId", "my-entity"),
            ("merchantTransactionId", "nothing-here"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = client
        .get(format!("http://{addr}/v1/query"))
        .bearer_auth(common::MAIN.1)
        .query(&[("entityId", "my-entity")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    server.abort();
}
