//! Webhooks the emulator sends, signed or encrypted as the providers do, so that paywarden's
//! event loop runs offline.
//!
//! - **Stripe** (docs.stripe.com/webhooks; docs.stripe.com/api/webhook_endpoints): a merchant
//!   registers an endpoint with `POST /v1/webhook_endpoints` (`url`, `enabled_events[]`;
//!   Stripe answers the endpoint with its signing `secret`, `whsec_...`, shown only at
//!   creation). Each event (docs.stripe.com/api/events/object: `id` `evt_...`,
//!   `object: "event"`, `type`, `created`, `livemode`, `data.object`, `pending_webhooks`,
//!   `request`) is POSTed as JSON with `Stripe-Signature: t=<unix seconds>,v1=<hex
//!   HMAC-SHA256(secret, "{t}.{body}")>` (docs "Check the webhook signatures"). The emulator
//!   sends `payment_intent.created` / `payment_intent.succeeded` /
//!   `payment_intent.payment_failed`, `refund.created`, `charge.refunded` (the charge with its
//!   `refunds` list), `refund.updated` when a pending refund settles, and
//!   `charge.dispute.created` for a dispute made with the sandbox control.
//! - **OPP** (OPP docs "Webhooks", "Decryption"): a notification `{"type": "PAYMENT",
//!   "payload": <the transaction as the API answers it, with authentication.entityId>}`,
//!   encrypted with AES-256-GCM under the hex key of the webhook configuration, POSTed as the
//!   hex ciphertext with `X-Initialization-Vector` and `X-Authentication-Tag` (hex), for every
//!   transaction the emulator creates.
//!
//! Assumptions (no provider source says otherwise for a sandbox): endpoints live in memory and
//! are registered again by paywarden at every start; the secret of every Stripe endpoint is
//! [`crate::DEMO_STRIPE_WEBHOOK_SECRET`] and the OPP key [`crate::DEMO_OPP_WEBHOOK_KEY`] (real
//! providers generate them); OPP's webhook configuration, which OPP makes in its merchant UI,
//! is made with `POST /__emulator/opp/webhooks {"url": ...}`; deliveries are in order, tried
//! three times (Stripe and OPP retry for days).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::{aead::Aead, Aes256Gcm, KeyInit, Nonce};
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::post, Json, Router};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;

/// One delivery to make.
enum Delivery {
    Stripe {
        url: String,
        secret: String,
        body: String,
    },
    Opp {
        url: String,
        key: String,
        body: String,
    },
}

/// Registered endpoints and the delivery queue.
pub(crate) struct Webhooks {
    stripe: Mutex<Vec<(String, String)>>,
    opp: Mutex<Vec<(Option<String>, String)>>,
    stripe_secret: String,
    opp_key: String,
    queue: mpsc::UnboundedSender<Delivery>,
    log: Arc<Mutex<Vec<Value>>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `hex(HMAC-SHA256(secret, "{t}.{body}"))`.
fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `(hex ciphertext, hex iv, hex tag)` of `body` under the hex `key`.
fn opp_encrypt(key: &str, body: &str) -> Option<(String, String, String)> {
    let key = hex::decode(key).ok()?;
    let cipher = Aes256Gcm::new_from_slice(&key).ok()?;
    let mut iv = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut iv);
    let sealed = cipher
        .encrypt(Nonce::from_slice(&iv), body.as_bytes())
        .ok()?;
    let (text, tag) = sealed.split_at(sealed.len().saturating_sub(16));
    Some((hex::encode(text), hex::encode(iv), hex::encode(tag)))
}

impl Webhooks {
    /// Starts the delivery task (in the current tokio runtime).
    pub(crate) fn start(stripe_secret: String, opp_key: String) -> Arc<Webhooks> {
        let (queue, mut rx) = mpsc::unbounded_channel::<Delivery>();
        let log = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let task_log = log.clone();
        tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                let entry = deliver(&http, delivery).await;
                let mut log = lock(&task_log);
                log.push(entry);
                let excess = log.len().saturating_sub(200);
                log.drain(..excess);
            }
        });
        Arc::new(Webhooks {
            stripe: Mutex::new(Vec::new()),
            opp: Mutex::new(Vec::new()),
            stripe_secret,
            opp_key,
            queue,
            log,
        })
    }

    /// Registers a Stripe endpoint of `account`; returns its signing secret.
    pub(crate) fn add_stripe_endpoint(&self, account: &str, url: &str) -> String {
        let mut endpoints = lock(&self.stripe);
        endpoints.retain(|(a, u)| !(a == account && u == url));
        endpoints.push((account.to_string(), url.to_string()));
        self.stripe_secret.clone()
    }

    /// Sends Stripe event `kind` about `object` to every endpoint of `account`.
    pub(crate) fn stripe_event(&self, account: &str, kind: &str, object: &Value) {
        let endpoints: Vec<String> = lock(&self.stripe)
            .iter()
            .filter(|(a, _)| a == account)
            .map(|(_, u)| u.clone())
            .collect();
        if endpoints.is_empty() {
            return;
        }
        let event = json!({
            "id": crate::stripe::new_id("evt_", 24),
            "object": "event",
            "api_version": "2024-06-20",
            "created": chrono::Utc::now().timestamp(),
            "data": { "object": object },
            "livemode": false,
            "pending_webhooks": endpoints.len(),
            "request": { "id": null, "idempotency_key": null },
            "type": kind,
        });
        for url in endpoints {
            let _ = self.queue.send(Delivery::Stripe {
                url,
                secret: self.stripe_secret.clone(),
                body: event.to_string(),
            });
        }
    }

    /// Sends an OPP `PAYMENT` notification for `transaction` of `entity_id`.
    pub(crate) fn opp_payment(&self, entity_id: &str, transaction: &Value) {
        let urls: Vec<String> = lock(&self.opp)
            .iter()
            .filter(|(e, _)| e.as_deref().is_none_or(|e| e == entity_id))
            .map(|(_, u)| u.clone())
            .collect();
        if urls.is_empty() {
            return;
        }
        let mut payload = transaction.clone();
        payload["authentication"] = json!({ "entityId": entity_id });
        let body = json!({ "type": "PAYMENT", "payload": payload }).to_string();
        for url in urls {
            let _ = self.queue.send(Delivery::Opp {
                url,
                key: self.opp_key.clone(),
                body: body.clone(),
            });
        }
    }
}

/// Delivers one event, up to three tries; returns a log entry (no secret, no body).
async fn deliver(http: &reqwest::Client, delivery: Delivery) -> Value {
    let (provider, request) = match &delivery {
        Delivery::Stripe { url, secret, body } => {
            let t = chrono::Utc::now().timestamp();
            let signature = format!("t={t},v1={}", stripe_signature(secret, t, body));
            (
                "stripe",
                http.post(url)
                    .header("content-type", "application/json; charset=utf-8")
                    .header("stripe-signature", signature)
                    .body(body.clone()),
            )
        }
        Delivery::Opp { url, key, body } => {
            let Some((text, iv, tag)) = opp_encrypt(key, body) else {
                return json!({"provider": "opp", "sent": false, "error": "bad key"});
            };
            (
                "opp",
                http.post(url)
                    .header("content-type", "text/plain")
                    .header("x-initialization-vector", iv)
                    .header("x-authentication-tag", tag)
                    .body(text),
            )
        }
    };
    let mut last = json!({"provider": provider, "sent": false});
    for attempt in 0..3u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
        }
        let Some(request) = request.try_clone() else {
            break;
        };
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                return json!({"provider": provider, "sent": true, "status": r.status().as_u16()})
            }
            Ok(r) => {
                last = json!({"provider": provider, "sent": true, "status": r.status().as_u16()})
            }
            Err(e) => {
                last = json!({"provider": provider, "sent": false, "error": e.without_url().to_string()})
            }
        }
    }
    last
}

#[derive(Deserialize)]
struct OppEndpoint {
    url: String,
    #[serde(default, rename = "entityId")]
    entity_id: Option<String>,
}

/// The sandbox controls: `POST /__emulator/opp/webhooks` (`{"url", "entityId"?}`: OPP's
/// webhook configuration, made in OPP's merchant UI at the real provider) and
/// `GET /__emulator/webhooks` (the last deliveries: provider, whether sent, HTTP status).
pub(crate) fn router(webhooks: Arc<Webhooks>) -> Router {
    Router::new()
        .route("/__emulator/opp/webhooks", post(add_opp))
        .route("/__emulator/webhooks", axum::routing::get(deliveries))
        .with_state(webhooks)
}

async fn add_opp(State(w): State<Arc<Webhooks>>, Json(e): Json<OppEndpoint>) -> impl IntoResponse {
    if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "url must be http(s)"})),
        );
    }
    let mut endpoints = lock(&w.opp);
    endpoints.retain(|(entity, url)| !(entity == &e.entity_id && url == &e.url));
    endpoints.push((e.entity_id.clone(), e.url.clone()));
    (
        StatusCode::CREATED,
        Json(json!({"url": e.url, "entityId": e.entity_id, "encryption": "AES-256-GCM"})),
    )
}

async fn deliveries(State(w): State<Arc<Webhooks>>) -> Json<Value> {
    Json(Value::Array(lock(&w.log).clone()))
}
