//! Assembling a running paywarden: storage, the OPP connector (or the in-process emulator
//! standing in for OPP), demo data, the MCP handler and the HTTP router.
//!
//! The caller binds the listener (like tokio-rs/mini-redis), so tests start the real server on
//! port 0.

use std::{sync::Arc, time::Duration};

use axum::serve::ListenerExt;
use indicatif::ProgressBar;
use paywarden_emulator::{
    Emulator, EmulatorConfig, RunningEmulator, DEMO_ENTITY_ID, DEMO_OPP_WEBHOOK_KEY,
    DEMO_STRIPE_KEY, DEMO_STRIPE_WEBHOOK_SECRET, DEMO_TOKEN, SECOND_ENTITY_ID, SECOND_TOKEN,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    connectors::opp::{OppClient, OppCredentials, OppError},
    connectors::stripe::{StripeClient, StripeError, StripeKey, STRIPE_API_BASE},
    mcp::McpState,
    seed,
    service::{
        opp::OppService,
        ops::{KnownEntity, OpsService},
        safety::Safety,
        Caller, Pipeline,
    },
    store::{Store, StoreError},
};

/// Errors while starting paywarden.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// paywarden's database failed to open or migrate.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The emulator failed to start.
    #[error("the OPP emulator failed to start: {0}")]
    Emulator(String),
    /// The OPP connector failed (client set-up or demo seeding).
    #[error(transparent)]
    Opp(#[from] OppError),
    /// The Stripe connector could not be set up (a missing, invalid or refused live key).
    #[error("Stripe connector: {0}")]
    Stripe(#[from] Box<StripeError>),
    /// The ops demo data could not be created.
    #[error(transparent)]
    SeedOps(#[from] Box<crate::seed_ops::SeedOpsError>),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Serving HTTP failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
    /// Another part failed to start.
    #[error("start-up failed: {0}")]
    Startup(String),
    /// The policy file is invalid (the message names the line and the reason).
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    /// A configured toolset does not exist.
    #[error("unknown toolset {0:?} in safety.toolsets; known toolsets: {1}")]
    UnknownToolset(String, String),
    /// The audit checkpoint key or sink failed (the message says which and what to do).
    #[error(transparent)]
    AuditAnchor(#[from] crate::audit_anchor::AnchorError),
    /// Seeding was asked for against a real provider.
    #[error("refusing to create demo payments at a real provider ({0}); seeding only runs against the offline emulator")]
    SeedRealProvider(String),
}

/// The demo operator's name (only with the emulator and no operators configured).
pub const DEMO_OPERATOR: &str = "demo-operator";
/// The demo operator's token (HTTP Basic password on the approval page); sandbox only.
pub const DEMO_OPERATOR_TOKEN: &str = "pw_demo_operator_token_sandbox_only";

/// How demo data should be handled at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedMode {
    /// Never seed.
    Off,
    /// Seed when the emulator has no demo data yet (the default for `serve` and `stdio`).
    IfEmpty,
}

/// A built paywarden, ready to serve.
pub struct App {
    config: Config,
    store: Store,
    state: Arc<McpState>,
    opp_client: OppClient,
    stripe_client: StripeClient,
    // Keeps the in-process emulator running as long as the app lives.
    emulator: Option<RunningEmulator>,
    seeded: Option<seed::SeedSummary>,
    seeded_ops: Option<usize>,
    // The approval page's CSRF key, shared by every replica on the database.
    csrf_key: [u8; 32],
    // Signed checkpoints of the audit chain's head.
    checkpoints: Arc<crate::audit_anchor::CheckpointWriter>,
    // Signs receipts; its public key is published at crate::receipts::KEYS_PATH.
    receipt_signer: crate::receipts::ReceiptSigner,
    // Provider events in (`/webhooks/stripe`, `/webhooks/opp`).
    events: crate::events::Events,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("listen", &self.config.listen)
            .field("data_dir", &self.config.data_dir)
            .field("opp_base_url", &self.opp_client.base_url())
            .field("stripe_base_url", &self.stripe_client.base_url())
            .field("sandbox", &self.emulator.is_some())
            .finish()
    }
}

/// Starts the emulator in-process on a loopback port with its state in `data_dir`.
///
/// # Errors
/// [`AppError::Emulator`].
pub async fn start_emulator(config: &Config) -> Result<RunningEmulator, AppError> {
    let emulator = Emulator::open(EmulatorConfig::demo(config.data_dir.join("emulator.db")))
        .await
        .map_err(|e| AppError::Emulator(e.to_string()))?;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    emulator
        .spawn(listener)
        .await
        .map_err(|e| AppError::Emulator(e.to_string()))
}

impl App {
    /// Builds paywarden from `config`: creates the data directory (with its parents; see
    /// [`crate::config::resolve_data_dir`]), opens the database, starts the emulator when no OPP
    /// base URL is configured, and seeds demo data per `seed` (ticking `progress`).
    ///
    /// # Errors
    /// [`AppError`] for any part that fails to start.
    pub async fn build(
        mut config: Config,
        seed: SeedMode,
        progress: &ProgressBar,
    ) -> Result<Self, AppError> {
        // A no-op after Config::load; a Config built in code gets the same directory.
        config.resolve_data_dir()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| AppError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let store = Store::connect(&config.database()?).await?;
        let signer =
            crate::audit_anchor::AuditSigner::load_or_create(&config.audit, &config.data_dir)?;
        signer.check_database(&store, false).await?;
        let key_ids = signer.key_ids();
        // Receipts are signed with the audit signing key (crate::receipts).
        let receipt_signer = signer.receipt_signer();
        let checkpoints = Arc::new(
            crate::audit_anchor::CheckpointWriter::open(
                store.clone(),
                signer,
                &config.audit,
                &config.data_dir,
            )
            .await?,
        );
        tracing::info!(
            file = %checkpoints.path().display(),
            key_id = checkpoints.signer().key_id(),
            public_key = checkpoints.signer().public_key(),
            interval_secs = config.audit.checkpoint_interval_secs,
            "audit checkpoints"
        );
        let emulator = if config.uses_emulator() || config.uses_stripe_emulator() {
            Some(start_emulator(&config).await?)
        } else {
            None
        };
        let base_url = match (&config.opp.base_url, &emulator) {
            (Some(url), _) => url.clone(),
            (None, Some(e)) => e.base_url.clone(),
            (None, None) => return Err(AppError::Emulator("no OPP base URL".into())),
        };
        let opp_client = OppClient::new(&base_url, Duration::from_millis(config.opp.timeout_ms))?;
        let stripe_timeout = Duration::from_millis(config.stripe.timeout_ms);
        let stripe_client = match (&config.stripe.api_key, &emulator) {
            (Some(key), _) => StripeClient::new(
                config.stripe.base_url.as_deref().unwrap_or(STRIPE_API_BASE),
                StripeKey::parse(key.expose_secret(), config.stripe.allow_live_keys)
                    .map_err(Box::new)?,
                stripe_timeout,
            )
            .map_err(Box::new)?,
            (None, Some(e)) if config.uses_stripe_emulator() => StripeClient::new(
                &e.base_url,
                StripeKey::parse(DEMO_STRIPE_KEY, false).map_err(Box::new)?,
                stripe_timeout,
            )
            .map_err(Box::new)?,
            (None, _) => {
                return Err(AppError::Stripe(Box::new(StripeError::InvalidKey {
                    reason: "stripe.base_url is set but no key: set STRIPE_API_KEY (sk_test_... or rk_test_...)".into(),
                })))
            }
        };
        let sandbox = config.uses_emulator();
        let stripe_sandbox = config.uses_stripe_emulator();
        let local_caller = local_caller(&config, emulator.is_some());
        if let Some(e) = &emulator {
            // Where `paywarden ifthenpay shopper` finds this server's in-process emulator.
            if let Err(error) = std::fs::write(config.data_dir.join(EMULATOR_URL_FILE), &e.base_url)
            {
                tracing::warn!(%error, "could not record the emulator's address");
            }
        }
        for toolset in &config.safety.toolsets {
            if !crate::mcp::KNOWN_TOOLSETS.contains(&toolset.as_str()) {
                return Err(AppError::UnknownToolset(
                    toolset.clone(),
                    crate::mcp::KNOWN_TOOLSETS.join(", "),
                ));
            }
        }
        let policy = match &config.safety.policy_file {
            Some(path) => crate::policy::Policy::load(path)?,
            None => crate::policy::Policy::builtin(),
        };
        let public_url = Arc::new(std::sync::OnceLock::new());
        if let Some(url) = &config.safety.public_url {
            let _ = public_url.set(url.clone());
        }
        let safety = Safety {
            policy: Arc::new(policy),
            config: config.safety.clone(),
            public_url,
        };
        let pipeline = Pipeline::new(store.clone(), sandbox, safety)
            .with_receipts(receipt_signer.clone())
            .with_settle_window(Config::settle_window(
                config.opp.timeout_ms,
                config.opp.settle_window_ms,
            ));
        let entities = if config.entities.is_empty() && emulator.is_some() {
            demo_entities()
        } else {
            config.entities.clone()
        };
        let ifthenpay = ifthenpay_service(&config, &pipeline, emulator.as_ref(), entities.clone())?
            .with_key_ids(key_ids);
        let ops = OpsService::new(
            pipeline
                .for_provider("Stripe", stripe_sandbox)
                .with_settle_window(Config::settle_window(
                    config.stripe.timeout_ms,
                    config.stripe.settle_window_ms,
                )),
            stripe_client.clone(),
            entities,
        );
        if config.http.max_sessions == 0 || config.http.max_sessions_per_entity == 0 {
            return Err(AppError::Config(crate::config::ConfigError::Invalid(
                format!(
                "http.max_sessions ({}) and http.max_sessions_per_entity ({}) must be at least 1",
                config.http.max_sessions, config.http.max_sessions_per_entity
            ),
            )));
        }
        // Configured entities judge HTTP callers themselves; without them OPP (or the
        // emulator) is asked, and its verdict cached.
        let authenticator = Arc::new(if config.entities.is_empty() {
            crate::auth::Authenticator::with_provider(
                opp_client.clone(),
                Duration::from_secs(config.http.auth_cache_ttl_secs),
                config.http.auth_cache_entries,
            )
        } else {
            crate::auth::Authenticator::with_entities(config.entities.clone())
        });
        tracing::info!(
            judge = authenticator.judge_name(),
            "HTTP callers are authenticated before anything is served"
        );
        let subscriptions = Arc::new(crate::events::Subscriptions::default());
        let events = crate::events::Events::new(
            store.clone(),
            config.stripe.webhook_secret.clone().or_else(|| {
                stripe_sandbox.then(|| SecretString::from(DEMO_STRIPE_WEBHOOK_SECRET.to_string()))
            }),
            config.stripe.webhook_tolerance_secs,
            config
                .opp
                .webhook_key
                .clone()
                .or_else(|| sandbox.then(|| SecretString::from(DEMO_OPP_WEBHOOK_KEY.to_string()))),
            sandbox || stripe_sandbox,
            subscriptions.clone(),
        );
        let state = Arc::new(McpState {
            subscriptions,
            authenticator,
            ifthenpay,
            opp: OppService::new(pipeline, opp_client.clone()),
            ops,
            local_caller,
            sandbox,
            toolsets: config.safety.toolsets.clone(),
            read_only: config.safety.read_only,
            approval_questions: approval_question_codec(&store).await?,
        });
        let csrf_key = store
            .shared_secret("approvals_csrf_key")
            .await
            .map_err(|e| AppError::Startup(format!("approval page key: {e}")))?;
        let mut app = Self {
            config,
            store,
            state,
            opp_client,
            stripe_client,
            emulator,
            seeded: None,
            seeded_ops: None,
            csrf_key,
            checkpoints,
            receipt_signer,
            events,
        };
        if seed == SeedMode::IfEmpty && app.config.demo.seed && app.emulator.is_some() {
            if sandbox {
                app.seeded = app.seed_if_empty(progress).await?;
            }
            if stripe_sandbox {
                app.seeded_ops = app.seed_ops_if_empty(progress).await?;
            }
        }
        Ok(app)
    }

    /// Seeds demo data unless it exists. Returns what was created (`None` when it existed).
    ///
    /// # Errors
    /// [`AppError::SeedRealProvider`] against a real provider; [`AppError::Opp`].
    pub async fn seed_if_empty(
        &self,
        progress: &ProgressBar,
    ) -> Result<Option<seed::SeedSummary>, AppError> {
        let credentials = self.demo_credentials()?;
        if seed::is_seeded(&self.opp_client, &credentials).await? {
            return Ok(None);
        }
        let summary = seed::seed_demo(
            &self.opp_client,
            &credentials,
            self.config.demo.payments,
            progress,
        )
        .await?;
        Ok(Some(summary))
    }

    /// Seeds the ops demo data (customers, orders, Stripe charges) unless it exists. Returns
    /// how many charges were created (`None` when the data existed).
    ///
    /// # Errors
    /// [`AppError::SeedRealProvider`] against a real Stripe; [`AppError::SeedOps`].
    pub async fn seed_ops_if_empty(
        &self,
        progress: &ProgressBar,
    ) -> Result<Option<usize>, AppError> {
        if !self.config.uses_stripe_emulator() {
            return Err(AppError::SeedRealProvider(
                self.stripe_client.base_url().to_string(),
            ));
        }
        let entity = self.demo_credentials()?.entity_id;
        if crate::seed_ops::is_seeded(&self.store, &entity).await? {
            return Ok(None);
        }
        let created =
            crate::seed_ops::seed_ops_demo(&self.store, &self.stripe_client, &entity, progress)
                .await
                .map_err(Box::new)?;
        Ok(Some(created))
    }

    fn demo_credentials(&self) -> Result<OppCredentials, AppError> {
        if self.emulator.is_none() {
            return Err(AppError::SeedRealProvider(
                self.opp_client.base_url().to_string(),
            ));
        }
        let caller = local_caller(&self.config, true).unwrap_or_else(|| Caller {
            entity_id: DEMO_ENTITY_ID.into(),
            token: SecretString::from(DEMO_TOKEN.to_string()),
            client_name: None,
        });
        Ok(OppCredentials {
            entity_id: caller.entity_id,
            token: SecretString::from(caller.token.expose_secret().to_string()),
        })
    }

    /// How many ops demo charges were created while building, if any.
    pub fn seeded_ops(&self) -> Option<usize> {
        self.seeded_ops
    }

    /// Whether the offline emulator stands in for Stripe.
    pub fn stripe_sandbox(&self) -> bool {
        self.config.uses_stripe_emulator()
    }

    /// The demo data created while building, if any.
    pub fn seeded(&self) -> Option<&seed::SeedSummary> {
        self.seeded.as_ref()
    }

    /// The operator console (`/console`, see [`crate::console`]), answering only under the
    /// allowed `Host` names, as the approval page does.
    pub fn console_router(&self) -> axum::Router {
        crate::console::router(crate::console::ConsoleParts {
            store: self.store.clone(),
            operators: self.operators(),
            csrf_key: self.csrf_key,
            config: self.config.clone(),
            receipt_key: (
                self.receipt_signer.key_id(),
                self.receipt_signer.public_key(),
            ),
            checkpoints: self.checkpoints.clone(),
            key_ids: self.key_ids(),
        })
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(self.config.http.allowed_hosts.clone()),
            crate::http::check_host,
        ))
    }

    /// The operators who may decide approvals: the configured ones; with the emulator and none
    /// configured, the demo operator.
    pub fn operators(&self) -> Vec<crate::config::OperatorConfig> {
        if self.config.operators.is_empty() && self.emulator.is_some() {
            vec![crate::config::OperatorConfig {
                name: DEMO_OPERATOR.into(),
                token_sha256: crate::service::safety::token_hash(DEMO_OPERATOR_TOKEN),
            }]
        } else {
            self.config.operators.clone()
        }
    }

    /// The shared MCP state (for the stdio transport).
    pub fn mcp_state(&self) -> Arc<McpState> {
        self.state.clone()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The in-process emulator's base URL, when the emulator stands in for OPP.
    pub fn emulator_url(&self) -> Option<&str> {
        self.emulator.as_ref().map(|e| e.base_url.as_str())
    }

    /// The keyed ids of provider keys (`key:<id>` entities, stored ifthenpay requests).
    pub fn key_ids(&self) -> crate::audit_anchor::KeyIds {
        self.checkpoints.signer().key_ids()
    }

    /// Starts writing audit checkpoints: one now, then on the configured schedule;
    /// [`crate::audit_anchor::CheckpointSchedule::finish`] writes the shutdown checkpoint.
    /// [`App::serve`] does this itself; the stdio transport calls it.
    pub fn start_checkpoints(&self) -> crate::audit_anchor::CheckpointSchedule {
        self.checkpoints.start()
    }

    /// Serves HTTP on `listener` until `shutdown` completes, writing audit checkpoints on
    /// schedule and once more after the last request finished.
    ///
    /// # Errors
    /// [`AppError::Serve`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let cancel = CancellationToken::new();
        if let Ok(addr) = listener.local_addr() {
            let _ = self
                .state
                .opp
                .pipeline()
                .safety()
                .public_url
                .set(format!("http://{addr}"));
        }
        if let Ok(mut addr) = listener.local_addr() {
            // The in-process emulator calls this server back, over loopback, when a shopper pays.
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            self.state
                .ifthenpay
                .activate_demo_callbacks(&format!("http://{addr}"))
                .await;
            self.register_demo_webhooks(&format!("http://{addr}")).await;
        }
        let recovery = tokio::spawn(recover_forever(
            self.state.clone(),
            self.config.safety.key_lease_secs,
        ));
        let router = crate::http::router(
            self.state.clone(),
            &self.config.http,
            self.store.clone(),
            self.operators(),
            self.csrf_key,
            cancel.clone(),
        )
        .merge(crate::http::readiness_router(self.readiness()))
        .merge(self.receipt_signer.router())
        .merge(self.console_router())
        .merge(self.events.clone().router().layer(
            tower_http::limit::RequestBodyLimitLayer::new(self.config.http.max_body_bytes),
        ));
        let checkpoints = self.start_checkpoints();
        // TCP_NODELAY on every accepted connection: without it, Nagle's algorithm holds the
        // small last segment of an SSE answer until the peer's delayed ACK (~40 ms on Linux).
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
            }
        });
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                cancel.cancel();
            })
            .await;
        recovery.abort();
        // The audit rows of calls that were cancelled by the shutdown are written before the
        // last checkpoint and the exit.
        self.store.drain_audit().await;
        checkpoints.finish().await;
        served?;
        drop(self.emulator);
        Ok(())
    }
}

impl App {
    /// Points the in-process emulator's webhooks at this server (sandbox only), as a merchant
    /// does at the provider: a Stripe webhook endpoint for `{base}/webhooks/stripe` through
    /// Stripe's API (`POST /v1/webhook_endpoints` with the demo key), and the OPP webhook
    /// configuration for `{base}/webhooks/opp` (made in OPP's merchant UI at the real provider;
    /// the emulator's control `POST /__emulator/opp/webhooks`). Failures are logged.
    async fn register_demo_webhooks(&self, base: &str) {
        let (Some(emulator), true) = (&self.emulator, self.config.demo.webhooks) else {
            return;
        };
        let http = reqwest::Client::new();
        if self.config.uses_stripe_emulator() {
            let sent = http
                .post(format!("{}/v1/webhook_endpoints", emulator.base_url))
                .bearer_auth(DEMO_STRIPE_KEY)
                .form(&[
                    ("url", format!("{base}{}", crate::events::STRIPE_PATH)),
                    ("enabled_events[]", "*".to_string()),
                ])
                .send()
                .await;
            if let Err(error) = sent.and_then(|r| r.error_for_status()) {
                tracing::warn!(error = %error.without_url(), "could not register the demo Stripe webhook endpoint");
            }
        }
        if self.config.uses_emulator() {
            let sent = http
                .post(format!("{}/__emulator/opp/webhooks", emulator.base_url))
                .json(&serde_json::json!({ "url": format!("{base}{}", crate::events::OPP_PATH) }))
                .send()
                .await;
            if let Err(error) = sent.and_then(|r| r.error_for_status()) {
                tracing::warn!(error = %error.without_url(), "could not register the demo OPP webhook");
            }
        }
    }
}

/// Crash recovery, at start and then every key lease (`safety.key_lease_secs`): see
/// [`Pipeline::sweep`]. Keys of the ops toolset are reconciled against Stripe right away, as
/// paywarden holds the Stripe key; OPP keys wait for the next call under them, which brings the
/// caller's OPP credentials.
async fn recover_forever(state: Arc<McpState>, lease_secs: u64) {
    let every = Duration::from_secs(lease_secs.max(1));
    loop {
        match state.opp.pipeline().sweep().await {
            Ok(unknown) => {
                for record in unknown {
                    let ops = crate::service::reconcile::intent_of(&record)
                        .is_some_and(|i| i.toolset == crate::service::ops::TOOLSET);
                    if !ops {
                        continue;
                    }
                    let caller = crate::service::reconcile::system_caller(&record.entity_id);
                    if let Err(e) = state
                        .ops
                        .pipeline()
                        .reconcile(&state.ops, &caller, &record.key, &record.request_hash)
                        .await
                    {
                        tracing::warn!(error = %e, key = %record.key, "could not reconcile a Stripe refund yet");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "crash recovery sweep failed; retrying later"),
        }
        // Stripe refunds left pending: settled (or undone) once Stripe has finished them.
        state.ops.refresh_pending_refunds(None).await;
        tokio::time::sleep(every).await;
    }
}

impl App {
    /// What `GET /readyz` checks: the database, and OPP, Stripe and (when configured or
    /// emulated) ifthenpay at their base URLs.
    pub fn readiness(&self) -> crate::http::Readiness {
        crate::http::Readiness {
            store: self.store.clone(),
            providers: vec![
                crate::http::ProviderProbe {
                    name: "opp".into(),
                    base_url: self.opp_client.base_url().to_string(),
                },
                crate::http::ProviderProbe {
                    name: "stripe".into(),
                    base_url: self.stripe_client.base_url().to_string(),
                },
            ]
            .into_iter()
            .chain(
                self.config
                    .ifthenpay
                    .base_url
                    .clone()
                    .or_else(|| self.emulator.as_ref().map(|e| e.base_url.clone()))
                    .map(|base_url| crate::http::ProviderProbe {
                        name: "ifthenpay".into(),
                        base_url,
                    }),
            )
            .collect(),
            timeout: Duration::from_secs(3),
        }
    }
}

/// The file in the data directory holding the in-process emulator's base URL, for
/// `paywarden ifthenpay shopper`.
pub const EMULATOR_URL_FILE: &str = "emulator.url";

/// The ifthenpay service: against `ifthenpay.base_url`, else the in-process emulator (sandbox),
/// else unconfigured (its tools then say so).
fn ifthenpay_service(
    config: &Config,
    pipeline: &Pipeline,
    emulator: Option<&RunningEmulator>,
    entities: Vec<crate::service::ops::KnownEntity>,
) -> Result<crate::service::ifthenpay::IfthenpayService, AppError> {
    use crate::connectors::ifthenpay::IfthenpayClient;
    let timeout = Duration::from_millis(config.ifthenpay.timeout_ms);
    let (base_url, sandbox) = match (&config.ifthenpay.base_url, emulator) {
        (Some(url), _) => (Some(url.clone()), false),
        (None, Some(e)) => (Some(e.base_url.clone()), true),
        (None, None) => (None, false),
    };
    let client = base_url
        .map(|url| {
            IfthenpayClient::new(&url, timeout).map(|c| {
                c.with_endpoints(
                    config.ifthenpay.payshop_base_url.as_deref(),
                    config.ifthenpay.callback_base_url.as_deref(),
                )
            })
        })
        .transpose()
        .map_err(|e| AppError::Startup(format!("ifthenpay client: {e}")))?;
    Ok(crate::service::ifthenpay::IfthenpayService::new(
        pipeline.for_provider("ifthenpay", sandbox),
        client,
        &config.ifthenpay,
        sandbox,
        entities,
    ))
}

/// The emulator's demo entities, which paywarden accepts for toolsets where it holds the
/// provider credentials when no `[[entities]]` are configured and the emulator runs.
pub fn demo_entities() -> Vec<KnownEntity> {
    [
        (DEMO_ENTITY_ID, DEMO_TOKEN),
        (SECOND_ENTITY_ID, SECOND_TOKEN),
    ]
    .into_iter()
    .map(|(id, token)| KnownEntity {
        id: id.into(),
        token_sha256: crate::service::safety::token_hash(token),
        ifthenpay: None,
    })
    .collect()
}

/// The codec sealing approval questions' request state (2026-07-28 multi-round-trip
/// requests). Its key is shared by every process on the database, so a state sealed by one
/// replica opens at another: the stateless era needs no session affinity.
async fn approval_question_codec(
    store: &Store,
) -> Result<rmcp::model::RequestStateCodec, AppError> {
    let key = store
        .shared_secret("approval_questions_key")
        .await
        .map_err(|e| AppError::Startup(format!("request-state key: {e}")))?;
    rmcp::model::RequestStateCodec::try_new(key.to_vec())
        .map_err(|e| AppError::Startup(format!("request-state codec: {e}")))
}

/// The caller for transports without headers: the configured entity, or the emulator's demo
/// entity in sandbox mode.
pub fn local_caller(config: &Config, sandbox: bool) -> Option<Caller> {
    match (&config.entity_id, &config.token) {
        (Some(entity_id), Some(token)) => Some(Caller {
            entity_id: entity_id.clone(),
            token: token.clone(),
            client_name: None,
        }),
        _ if sandbox => Some(Caller {
            entity_id: DEMO_ENTITY_ID.into(),
            token: SecretString::from(DEMO_TOKEN.to_string()),
            client_name: None,
        }),
        _ => None,
    }
}
