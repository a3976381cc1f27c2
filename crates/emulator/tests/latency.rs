//! The configured latency delays every request, so client timeouts can be tested.

mod common;

use std::time::{Duration, Instant};

use paywarden_emulator::EmulatorConfig;
use reqwest::StatusCode;

use common::MAIN;

#[tokio::test]
async fn latency_delays_every_request_and_trips_client_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::demo(dir.path().join("slow.sqlite"));
    config.latency = Duration::from_millis(400);
    let h = common::start_with(dir, config).await;

    let started = Instant::now();
    let r = h.pay(MAIN, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(400));

    // Even rejected requests wait.
    let started = Instant::now();
    let r = h.get("/v1/query", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(started.elapsed() >= Duration::from_millis(400));

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let err = impatient
        .get(h.url("/v1/query"))
        .bearer_auth(MAIN.1)
        .query(&[
            ("entityId", MAIN.0),
            ("merchantTransactionId", "slow-query"),
        ])
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[tokio::test]
async fn dropping_the_running_emulator_stops_it() {
    let h = common::start().await;
    let url = h.url("/v1/query");
    let common::Harness { running, dir, http } = h;
    drop(running);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let result = http.get(&url).send().await;
    assert!(result.is_err(), "the server should be gone");
    drop(dir);
}
