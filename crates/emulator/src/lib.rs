//! paywarden-emulator: an offline HTTP server that speaks ACI's Open Payment Platform (OPP)
//! server-to-server API (the real one lives at `https://eu-test.oppwa.com`) and a stateful subset
//! of Stripe's API v1 (`https://api.stripe.com`), with real state in a SQLite file, so that
//! paywarden's OPP and Stripe connectors run unchanged against it in demos and tests. Both APIs
//! share one port: OPP owns `/v1/payments*` and `/v1/query*`, Stripe every other `/v1/...` path.
//!
//! OPP endpoints (form-encoded requests, JSON responses, `Authorization: Bearer <token>` plus
//! `entityId` on every call; see `docs/emulator.md` for every field, result code and status):
//!
//! | endpoint | OPP operation |
//! |---|---|
//! | `POST /v1/payments` | initial card payment, `paymentType` PA or DB |
//! | `POST /v1/payments/{id}` | back-office operation CP, RV, RF, RB, CB, CR on `{id}` |
//! | `GET /v1/query/{id}` | one transaction, or its whole payment with `includeLinkedTransactions=true` |
//! | `GET /v1/query` | by `merchantTransactionId`, or a paged `date.from`/`date.to` report |
//!
//! Stripe endpoints (Stripe's form encoding with `metadata[k]` / `line_items[0][price]`
//! nesting, Stripe's JSON objects, ids, list envelopes, error JSON and HTTP codes;
//! `Authorization: Bearer sk_test_...` with a key of [`EmulatorConfig::stripe_keys`], e.g.
//! [`DEMO_STRIPE_KEY`]; `Idempotency-Key` on POSTs with Stripe's replay semantics):
//!
//! | endpoint | Stripe operation |
//! |---|---|
//! | `POST /v1/customers`, `GET /v1/customers?email=` | create a customer; list (exact email) |
//! | `GET /v1/customers/search?query=email:'...'` | search customers |
//! | `GET`/`POST /v1/customers/{id}` | retrieve / update a customer |
//! | `POST /v1/payment_intents`, `GET /v1/payment_intents?customer=&limit=&starting_after=&ending_before=` | create (and confirm with a `pm_card_*` test card); list |
//! | `GET /v1/payment_intents/{id}`, `GET /v1/charges/{id}` | retrieve (charges carry `amount_refunded`, `refunded`) |
//! | `POST /v1/refunds`, `GET /v1/refunds?payment_intent=&charge=`, `GET /v1/refunds/{id}` | refund (atomic; `amount_too_large`, `charge_already_refunded`); list; retrieve |
//! | `POST /v1/products`, `POST /v1/prices`, `POST /v1/payment_links` (+ `GET .../{id}`) | catalog and payment links |
//!
//! The same server also speaks ifthenpay's payment API (Multibanco, MB WAY, Payshop, cards,
//! PinPay, Cofidis Pay, PIX, payments list, callback activation) and plays the shopper; see
//! [`ifthenpay`].
//!
//! The OPP state rules (what may be captured, refunded, reversed, ...) are
//! [`paywarden_domain::ledger::evaluate`]'s; the emulator only stores and serves transactions.
//! Every response carries the header `X-Paywarden-Sandbox: true`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), paywarden_emulator::EmulatorError> {
//! use paywarden_emulator::{Emulator, EmulatorConfig};
//! let emulator = Emulator::open(EmulatorConfig::demo("emulator.sqlite".into())).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let running = emulator.spawn(listener).await?;
//! println!("OPP and Stripe emulator at {}", running.base_url);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod bulk;
mod card;
mod codes;
mod disputes;
mod error;
pub mod faults;
mod handlers;
pub mod ifthenpay;
mod params;
mod store;
mod stripe;
mod webhooks;
mod wire;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use bulk::{bulk_seed, BulkSeed, BulkSeedSummary, BULK_SEED_MAX};
pub use error::EmulatorError;
pub use ifthenpay::{
    IFTHENPAY_ANTI_PHISHING_KEY, IFTHENPAY_APPLE_KEY, IFTHENPAY_BACKOFFICE_KEY,
    IFTHENPAY_CCARD_KEY, IFTHENPAY_COFIDIS_KEY, IFTHENPAY_GATEWAY_KEY, IFTHENPAY_GOOGLE_KEY,
    IFTHENPAY_MBWAY_KEY, IFTHENPAY_MB_ENTITY, IFTHENPAY_MB_KEY, IFTHENPAY_PAYSHOP_KEY,
    IFTHENPAY_PIX_KEY,
};

/// The demo entity's OPP `entityId` (32 hex characters, like OPP's entity ids).
pub const DEMO_ENTITY_ID: &str = "8ac7a4c9000000000000000000000001";

/// The demo entity's bearer token (`Authorization: Bearer <DEMO_TOKEN>`). It is only valid
/// against the emulator; it is public on purpose.
pub const DEMO_TOKEN: &str = "pw_demo_sandbox_token_only_valid_against_the_paywarden_emulator";

/// A second demo entity's OPP `entityId`, used to show (and test) that entities are isolated.
pub const SECOND_ENTITY_ID: &str = "8ac7a4c9000000000000000000000002";

/// The second demo entity's bearer token.
pub const SECOND_TOKEN: &str = "pw_demo_second_entity_sandbox_token";

/// The demo Stripe account's secret key (`Authorization: Bearer <DEMO_STRIPE_KEY>`). A
/// test-mode-shaped key that is only valid against the emulator (real Stripe refuses it); it is
/// public on purpose.
pub const DEMO_STRIPE_KEY: &str = "sk_test_paywarden_demo_key_only_valid_against_the_emulator";

/// The demo Stripe account's restricted key (`rk_test_...`), as the ops seed recommends using
/// (least privilege). Only valid against the emulator, public on purpose. The emulator grants
/// it every endpoint it serves (it does not model per-resource permissions).
pub const DEMO_STRIPE_RESTRICTED_KEY: &str =
    "rk_test_paywarden_demo_restricted_key_only_valid_against_the_emulator";

/// The signing secret of every Stripe webhook endpoint registered with the emulator
/// (`POST /v1/webhook_endpoints`); real Stripe generates one per endpoint. Public on purpose:
/// only valid against the emulator.
pub const DEMO_STRIPE_WEBHOOK_SECRET: &str =
    "whsec_paywarden_demo_webhook_secret_only_valid_against_the_emulator";

/// The hex AES-256 key of the emulator's OPP webhook configuration (OPP notifications are
/// encrypted with it). Public on purpose: only valid against the emulator.
pub const DEMO_OPP_WEBHOOK_KEY: &str =
    "70617977617264656e2064656d6f204f505020776562686f6f6b206b65793031";

/// The Stripe account both demo keys belong to (Stripe's `acct_` id shape).
pub const DEMO_STRIPE_ACCOUNT: &str = "acct_1PaywardenDemo01";

/// One Stripe API key the emulator accepts and the account it belongs to. Every Stripe object is
/// scoped to the account of the key that created it; keys of one account see the same objects.
///
/// A key must be a test-mode key (`sk_test_` or `rk_test_` followed by at least 8 characters):
/// the emulator never pretends to be live mode. `Debug` redacts the key.
#[derive(Clone, PartialEq, Eq)]
pub struct StripeCredential {
    /// The account id, e.g. [`DEMO_STRIPE_ACCOUNT`]. Non-empty.
    pub account: String,
    /// The API key, e.g. [`DEMO_STRIPE_KEY`]. Unique across the configured keys.
    pub key: String,
}

impl fmt::Debug for StripeCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeCredential")
            .field("account", &self.account)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// One OPP entity the emulator accepts: its `entityId` and the bearer token that authorises it.
///
/// A request is authenticated by `Authorization: Bearer <token>` (HTTP 401, result
/// `800.900.300` when the token is missing or unknown) and must name this entity in `entityId`
/// (HTTP 403, result `800.900.301` when the token belongs to another entity).
///
/// `Debug` redacts the token; the emulator never logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct EntityCredential {
    /// OPP `entityId`, e.g. [`DEMO_ENTITY_ID`]. Non-empty.
    pub entity_id: String,
    /// The bearer token for this entity. Non-empty and unique across the configured entities.
    pub token: String,
}

impl fmt::Debug for EntityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityCredential")
            .field("entity_id", &self.entity_id)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// How to run an [`Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The SQLite file holding all transactions. Created (with its schema) when missing; its
    /// parent directory must exist. Opened in WAL mode; state survives restarts.
    pub database_path: PathBuf,
    /// The entities (entityId + bearer token) the emulator accepts. At least one; entity ids and
    /// tokens must be non-empty and unique.
    pub entities: Vec<EntityCredential>,
    /// An artificial delay applied to every request before it is handled (used to prove client
    /// timeouts). `Duration::ZERO` for none.
    pub latency: Duration,
    /// An artificial delay applied to the answer of every POST *after* it was processed: the
    /// operation happened, but the caller hears of it late (used to prove that paywarden treats a
    /// timed-out write as an unknown outcome). `Duration::ZERO` for none.
    pub write_latency: Duration,
    /// The Stripe API keys the emulator accepts (see [`StripeCredential`]). May be empty: every
    /// Stripe request is then refused with HTTP 401.
    pub stripe_keys: Vec<StripeCredential>,
}

impl EmulatorConfig {
    /// The demo configuration: both demo OPP entities ([`DEMO_ENTITY_ID`]/[`DEMO_TOKEN`] and
    /// [`SECOND_ENTITY_ID`]/[`SECOND_TOKEN`]), the demo Stripe account [`DEMO_STRIPE_ACCOUNT`]
    /// with its keys [`DEMO_STRIPE_KEY`] and [`DEMO_STRIPE_RESTRICTED_KEY`], no latency, state
    /// in `database_path`.
    pub fn demo(database_path: PathBuf) -> Self {
        Self {
            database_path,
            entities: vec![
                EntityCredential {
                    entity_id: DEMO_ENTITY_ID.to_string(),
                    token: DEMO_TOKEN.to_string(),
                },
                EntityCredential {
                    entity_id: SECOND_ENTITY_ID.to_string(),
                    token: SECOND_TOKEN.to_string(),
                },
            ],
            latency: Duration::ZERO,
            write_latency: Duration::ZERO,
            stripe_keys: vec![
                StripeCredential {
                    account: DEMO_STRIPE_ACCOUNT.to_string(),
                    key: DEMO_STRIPE_KEY.to_string(),
                },
                StripeCredential {
                    account: DEMO_STRIPE_ACCOUNT.to_string(),
                    key: DEMO_STRIPE_RESTRICTED_KEY.to_string(),
                },
            ],
        }
    }

    fn validate(&self) -> Result<(), EmulatorError> {
        if self.entities.is_empty() {
            return Err(EmulatorError::Config(
                "at least one entity (entityId + bearer token) is required".into(),
            ));
        }
        for (i, entity) in self.entities.iter().enumerate() {
            if entity.entity_id.trim().is_empty() {
                return Err(EmulatorError::Config(format!(
                    "entity #{} has an empty entityId",
                    i + 1
                )));
            }
            if entity.token.trim().is_empty() {
                return Err(EmulatorError::Config(format!(
                    "entity {} has an empty bearer token",
                    entity.entity_id
                )));
            }
            for other in &self.entities[..i] {
                if other.entity_id == entity.entity_id {
                    return Err(EmulatorError::Config(format!(
                        "entity {} is configured twice",
                        entity.entity_id
                    )));
                }
                if other.token == entity.token {
                    return Err(EmulatorError::Config(format!(
                        "entities {} and {} share a bearer token; each token must identify one entity",
                        other.entity_id, entity.entity_id
                    )));
                }
            }
        }
        for (i, credential) in self.stripe_keys.iter().enumerate() {
            if credential.account.trim().is_empty() {
                return Err(EmulatorError::Config(format!(
                    "Stripe key #{} has an empty account id",
                    i + 1
                )));
            }
            let secret = ["sk_test_", "rk_test_"]
                .iter()
                .find_map(|p| credential.key.strip_prefix(p));
            if secret.is_none_or(|s| s.len() < 8) {
                return Err(EmulatorError::Config(format!(
                    "Stripe key #{} of account {} is not a test-mode key (sk_test_... or rk_test_... with at least 8 characters after the prefix); the emulator only accepts test-mode keys",
                    i + 1,
                    credential.account
                )));
            }
            if self.stripe_keys[..i]
                .iter()
                .any(|o| o.key == credential.key)
            {
                return Err(EmulatorError::Config(format!(
                    "Stripe key #{} is configured twice; each key belongs to one account",
                    i + 1
                )));
            }
        }
        Ok(())
    }
}

/// A running-or-ready OPP emulator: its SQLite state and accepted entities. Cheap to clone
/// (shared state behind an `Arc`); every clone serves the same state.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<handlers::Shared>,
    stripe: Arc<stripe::StripeShared>,
    ifthenpay: ifthenpay::State,
    faults: Arc<faults::Faults>,
    webhooks: Arc<webhooks::Webhooks>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("entities", &self.inner.entities)
            .field("latency", &self.inner.latency)
            .field("write_latency", &self.inner.write_latency)
            .field("stripe_keys", &self.stripe.keys)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Opens (creating when missing) the SQLite file at `config.database_path`, applies the
    /// embedded migrations and enables WAL.
    ///
    /// # Errors
    /// [`EmulatorError::Config`] for an invalid entity list, [`EmulatorError::Open`] when the
    /// file cannot be opened or created, [`EmulatorError::Migrate`] when the schema cannot be
    /// applied.
    pub async fn open(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        config.validate()?;
        let store = store::Store::open(&config.database_path).await?;
        // The same file and its one connection; the schema (the Stripe tables included) was
        // just migrated.
        let stripe_store = stripe::StripeStore::new(store.pool().clone());
        tracing::info!(
            path = %config.database_path.display(),
            entities = config.entities.len(),
            "paywarden OPP emulator state opened"
        );
        let ifthenpay = ifthenpay::State::new(store.pool().clone());
        let webhooks = webhooks::Webhooks::start(
            DEMO_STRIPE_WEBHOOK_SECRET.to_string(),
            DEMO_OPP_WEBHOOK_KEY.to_string(),
        );
        let faults =
            faults::Faults::new(stripe_store.pool.clone(), webhooks.clone(), store.clone());
        Ok(Emulator {
            faults,
            webhooks: webhooks.clone(),
            ifthenpay,
            inner: Arc::new(handlers::Shared {
                store,
                entities: config.entities,
                latency: config.latency,
                write_latency: config.write_latency,
                webhooks: webhooks.clone(),
            }),
            stripe: Arc::new(stripe::StripeShared {
                store: stripe_store,
                keys: config.stripe_keys,
                webhooks,
            }),
        })
    }

    /// The axum router serving OPP's server-to-server API (`/v1/payments`,
    /// `/v1/payments/{id}`, `/v1/query`, `/v1/query/{id}`), the Stripe API subset (every
    /// other `/v1/...` path, see the crate docs) and ifthenpay's API (see [`ifthenpay`]), with
    /// the configured latencies and the `X-Paywarden-Sandbox: true` header on every response.
    ///
    /// Every request runs to completion even when its client goes away mid-request
    /// ([`run_to_completion`]), as at a real provider.
    pub fn router(&self) -> axum::Router {
        handlers::router(self.inner.clone(), stripe::router(self.stripe.clone()))
            .merge(ifthenpay::router(self.ifthenpay.clone()))
            .merge(faults::router(self.faults.clone()))
            .merge(webhooks::router(self.webhooks.clone()))
            .layer(axum::middleware::from_fn_with_state(
                self.faults.clone(),
                faults::inject,
            ))
            .layer(axum::middleware::from_fn(run_to_completion))
    }

    /// Serves the API on `listener` until the task is cancelled or the listener fails.
    ///
    /// # Errors
    /// [`EmulatorError::Io`] when accepting connections fails.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> Result<(), EmulatorError> {
        // TCP_NODELAY, as paywarden's own listener: no Nagle delay on small answers.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, self.router()).await?;
        Ok(())
    }

    /// Serves the API on `listener` in a background tokio task and returns at once.
    /// The returned [`RunningEmulator`] stops the server when dropped.
    ///
    /// # Errors
    /// [`EmulatorError::Io`] when the listener's local address cannot be read.
    pub async fn spawn(
        self,
        listener: tokio::net::TcpListener,
    ) -> Result<RunningEmulator, EmulatorError> {
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let task = tokio::spawn(async move {
            if let Err(error) = self.serve(listener).await {
                tracing::error!(%error, "paywarden OPP emulator stopped");
            }
        });
        Ok(RunningEmulator { base_url, task })
    }
}

/// A background emulator started by [`Emulator::spawn`]. Dropping it aborts the server task
/// (in-flight requests are cut off; committed state stays in the SQLite file).
#[derive(Debug)]
pub struct RunningEmulator {
    /// Where it listens: `http://IP:PORT` (e.g. `http://127.0.0.1:40123`), no trailing slash.
    pub base_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the rest of the request on its own task, so that a client that disconnects (a caller
/// killed mid-request, a timeout on its side) does not cancel the handler halfway.
///
/// A real provider finishes processing a request it has received whatever happens to the
/// connection: that is why Stripe documents a dropped connection or a 500 as an indeterminate
/// outcome to be retried with the same idempotency key
/// (<https://docs.stripe.com/api/idempotent_requests>, <https://docs.stripe.com/error-low-level>).
/// Without this, hyper drops the handler's future when the connection closes, which could
/// leave a half-run write (and, in sqlx, a SQLite connection returned to the pool inside an
/// open `BEGIN IMMEDIATE`, failing the next request with `999.999.999`).
async fn run_to_completion(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "emulator request task failed");
            axum::response::IntoResponse::into_response(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_debug_redacts_the_token() {
        let c = EntityCredential {
            entity_id: "e1".into(),
            token: "super-secret-token".into(),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("e1"));
        assert!(!shown.contains("super-secret-token"));
        let config = EmulatorConfig {
            database_path: "x".into(),
            entities: vec![c],
            latency: Duration::ZERO,
            write_latency: Duration::ZERO,
            stripe_keys: vec![StripeCredential {
                account: "acct_1".into(),
                key: "sk_test_super-secret-stripe".into(),
            }],
        };
        assert!(!format!("{config:?}").contains("super-secret-token"));
        assert!(!format!("{config:?}").contains("super-secret-stripe"));
    }

    #[test]
    fn config_validation() {
        let mut config = EmulatorConfig::demo("x".into());
        assert!(config.validate().is_ok());
        config.entities[1].token = DEMO_TOKEN.into();
        assert!(matches!(config.validate(), Err(EmulatorError::Config(_))));
        config.entities.clear();
        assert!(matches!(config.validate(), Err(EmulatorError::Config(_))));
        let config = EmulatorConfig {
            database_path: "x".into(),
            entities: vec![EntityCredential {
                entity_id: "e".into(),
                token: " ".into(),
            }],
            latency: Duration::ZERO,
            write_latency: Duration::ZERO,
            stripe_keys: Vec::new(),
        };
        assert!(matches!(config.validate(), Err(EmulatorError::Config(_))));
    }

    #[test]
    fn stripe_key_validation() {
        let mut config = EmulatorConfig::demo("x".into());
        assert!(config.validate().is_ok());
        config.stripe_keys[1].key = DEMO_STRIPE_KEY.into();
        assert!(matches!(config.validate(), Err(EmulatorError::Config(_))));
        for bad in [
            "sk_live_abcdefgh1234",
            "pk_test_abcdefgh1234",
            "sk_test_short",
            "",
        ] {
            let mut config = EmulatorConfig::demo("x".into());
            config.stripe_keys[0].key = bad.into();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("test-mode"), "{err}");
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
        let mut config = EmulatorConfig::demo("x".into());
        config.stripe_keys[0].account = " ".into();
        assert!(matches!(config.validate(), Err(EmulatorError::Config(_))));
        config.stripe_keys.clear();
        assert!(config.validate().is_ok());
    }
}
