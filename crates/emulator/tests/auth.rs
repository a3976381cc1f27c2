//! Authentication and authorisation on every endpoint, and the sandbox header everywhere.

mod common;

use common::{start, MAIN, SECOND};
use reqwest::StatusCode;

/// (method, path, entityId in form or query) for every endpoint.
async fn call(
    h: &common::Harness,
    endpoint: usize,
    token: Option<&str>,
    entity: Option<&str>,
) -> common::Reply {
    let mut fields: Vec<(&str, &str)> = Vec::new();
    if let Some(e) = entity {
        fields.push(("entityId", e));
    }
    let id = "0123456789abcdef0123456789abcdef";
    match endpoint {
        0 => h.post("/v1/payments", token, &fields).await,
        1 => h.post(&format!("/v1/payments/{id}"), token, &fields).await,
        2 => h.get(&format!("/v1/query/{id}"), token, &fields).await,
        _ => h.get("/v1/query", token, &fields).await,
    }
}

#[tokio::test]
async fn unknown_or_missing_token_is_401() {
    let h = start().await;
    for endpoint in 0..4 {
        for token in [None, Some("wrong-token"), Some("")] {
            let r = call(&h, endpoint, token, Some(MAIN.0)).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{endpoint} {token:?}");
            assert_eq!(r.code(), "800.900.300");
            assert_eq!(
                r.body["result"]["description"],
                "invalid authentication information"
            );
            assert!(r.body["buildNumber"].is_string());
            assert!(r.body["timestamp"].is_string());
            assert!(r.body["ndc"].is_string());
            assert_eq!(r.sandbox.as_deref(), Some("true"));
        }
    }
    // Not a bearer scheme.
    let response = h
        .http
        .get(h.url("/v1/query"))
        .basic_auth(MAIN.0, Some(MAIN.1))
        .query(&[("entityId", MAIN.0)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The token itself with a lower-case scheme is fine.
    let response = h
        .http
        .get(h.url("/v1/query"))
        .header("authorization", format!("bearer {}", MAIN.1))
        .query(&[
            ("entityId", MAIN.0),
            ("merchantTransactionId", "whatever-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn token_of_another_entity_is_403() {
    let h = start().await;
    for endpoint in 0..4 {
        for (token, entity) in [(MAIN.1, SECOND.0), (SECOND.1, MAIN.0), (MAIN.1, "nobody")] {
            let r = call(&h, endpoint, Some(token), Some(entity)).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{endpoint} {entity}");
            assert_eq!(r.code(), "800.900.301");
            assert_eq!(r.sandbox.as_deref(), Some("true"));
        }
    }
}

#[tokio::test]
async fn missing_entity_id_is_400_with_parameter_error() {
    let h = start().await;
    for endpoint in 0..4 {
        for entity in [None, Some("")] {
            let r = call(&h, endpoint, Some(MAIN.1), entity).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{endpoint}");
            assert_eq!(r.code(), "200.300.404");
            let e = &r.body["result"]["parameterErrors"][0];
            assert_eq!(e["name"], "entityId");
            assert_eq!(e["value"], "");
            assert!(!e["message"].as_str().unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn the_token_never_appears_in_responses() {
    let h = start().await;
    let r = call(&h, 0, Some(MAIN.1), Some(SECOND.0)).await;
    assert!(!r.body.to_string().contains(MAIN.1));
    let r = h.pay(MAIN, &[]).await;
    assert!(!r.body.to_string().contains(MAIN.1));
}

#[tokio::test]
async fn unknown_routes_still_carry_the_sandbox_header() {
    let h = start().await;
    let response = h.http.get(h.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers().get("x-paywarden-sandbox").unwrap(),
        "true"
    );
    let response = h.http.delete(h.url("/v1/payments")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response.headers().get("x-paywarden-sandbox").unwrap(),
        "true"
    );
}
