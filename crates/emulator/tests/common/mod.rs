//! Shared helpers: a real emulator on 127.0.0.1:0 with a temporary SQLite file, and small
//! HTTP helpers speaking OPP's form-encoded API with reqwest.
#![allow(dead_code)]

use std::time::Duration;

use paywarden_emulator::{Emulator, EmulatorConfig, RunningEmulator, DEMO_ENTITY_ID, DEMO_TOKEN};
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

pub const MAIN: (&str, &str) = (DEMO_ENTITY_ID, DEMO_TOKEN);
pub const SECOND: (&str, &str) = (
    paywarden_emulator::SECOND_ENTITY_ID,
    paywarden_emulator::SECOND_TOKEN,
);

pub struct Harness {
    pub running: RunningEmulator,
    pub dir: TempDir,
    pub http: reqwest::Client,
}

pub async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config = EmulatorConfig::demo(dir.path().join("emulator.sqlite"));
    start_with(dir, config).await
}

pub async fn start_with(dir: TempDir, config: EmulatorConfig) -> Harness {
    let emulator = Emulator::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = emulator.spawn(listener).await.unwrap();
    Harness {
        running,
        dir,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    }
}

/// A response: status, the sandbox header, JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub sandbox: Option<String>,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["result"]["code"].as_str().unwrap_or("")
    }
    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap().to_string()
    }
    /// Names of `result.parameterErrors`.
    pub fn param_names(&self) -> Vec<String> {
        self.body["result"]["parameterErrors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn into_reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let sandbox = response
        .headers()
        .get("x-paywarden-sandbox")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    Reply {
        status,
        sandbox,
        body,
    }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.running.base_url, path)
    }

    /// POST form fields with `Authorization: Bearer token`.
    pub async fn post(&self, path: &str, token: Option<&str>, form: &[(&str, &str)]) -> Reply {
        let mut request = self.http.post(self.url(path)).form(form);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        into_reply(request.send().await.unwrap()).await
    }

    /// GET with query parameters and `Authorization: Bearer token`.
    pub async fn get(&self, path: &str, token: Option<&str>, query: &[(&str, &str)]) -> Reply {
        let mut request = self.http.get(self.url(path)).query(query);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        into_reply(request.send().await.unwrap()).await
    }

    /// An initial payment for `who` with the given overrides on top of a valid VISA request.
    pub async fn pay(&self, who: (&str, &str), overrides: &[(&str, &str)]) -> Reply {
        let mut form: Vec<(&str, &str)> = vec![
            ("entityId", who.0),
            ("amount", "100.00"),
            ("currency", "EUR"),
            ("paymentType", "DB"),
            ("paymentBrand", "VISA"),
            ("card.number", "4200000000000000"),
            ("card.holder", "Jane Jones"),
            ("card.expiryMonth", "05"),
            ("card.expiryYear", "2034"),
            ("card.cvv", "123"),
        ];
        for (k, v) in overrides {
            form.retain(|(name, _)| name != k);
            if !v.is_empty() {
                form.push((k, v));
            }
        }
        self.post("/v1/payments", Some(who.1), &form).await
    }

    /// A successful initial payment; returns its id.
    pub async fn paid(&self, who: (&str, &str), overrides: &[(&str, &str)]) -> String {
        let r = self.pay(who, overrides).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.id()
    }

    /// A back-office operation on `id` for `who`.
    pub async fn op(&self, who: (&str, &str), id: &str, fields: &[(&str, &str)]) -> Reply {
        let mut form = vec![("entityId", who.0)];
        form.extend_from_slice(fields);
        self.post(&format!("/v1/payments/{id}"), Some(who.1), &form)
            .await
    }

    /// `GET /v1/query/{id}` for `who` with extra query parameters.
    pub async fn query_id(&self, who: (&str, &str), id: &str, extra: &[(&str, &str)]) -> Reply {
        let mut query = vec![("entityId", who.0)];
        query.extend_from_slice(extra);
        self.get(&format!("/v1/query/{id}"), Some(who.1), &query)
            .await
    }

    /// `GET /v1/query` for `who` with the given parameters.
    pub async fn query(&self, who: (&str, &str), extra: &[(&str, &str)]) -> Reply {
        let mut query = vec![("entityId", who.0)];
        query.extend_from_slice(extra);
        self.get("/v1/query", Some(who.1), &query).await
    }
}

/// Ids of a `payments` or `records` array.
pub fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

/// `paymentType`s of a `payments` or `records` array.
pub fn types(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["paymentType"].as_str().unwrap().to_string())
        .collect()
}
