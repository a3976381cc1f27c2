//! Configuration: defaults, then a TOML file, then `PAYWARDEN_*` environment variables, then
//! command-line flags (each later source wins).
//!
//! Environment variables use `__` for nesting: `PAYWARDEN_OPP__BASE_URL`,
//! `PAYWARDEN_HTTP__ALLOWED_HOSTS`; top-level keys are plain: `PAYWARDEN_LISTEN`,
//! `PAYWARDEN_DATA_DIR`, `PAYWARDEN_ENTITY_ID`, `PAYWARDEN_TOKEN`.
//!
//! The data directory never depends on the working directory unless a relative one is given
//! explicitly: see [`resolve_data_dir`].

use std::{
    net::SocketAddr,
    path::{Component, Path, PathBuf},
};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Errors while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source (file, environment, flag) had a value of the wrong shape.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The configuration file named with `--config` does not exist.
    #[error("configuration file {0} does not exist; create it or drop --config")]
    MissingFile(PathBuf),
}

/// paywarden's whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address `serve` listens on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Directory for paywarden's SQLite database and the emulator's state. Empty (the default)
    /// until [`Config::load`] resolves it to an absolute path with [`resolve_data_dir`].
    pub data_dir: PathBuf,
    /// The OPP entity that `stdio` and `seed` act as (`X-Entity-Id` for HTTP callers comes from
    /// their headers instead). Defaults to the emulator's demo entity when the emulator is used.
    pub entity_id: Option<String>,
    /// The bearer token of [`Config::entity_id`]. Never logged.
    #[serde(skip_serializing)]
    pub token: Option<SecretString>,
    /// paywarden's database as a URL (`DATABASE_URL`): `sqlite:///abs/path/paywarden.db`, or
    /// `postgres://user[:password]@host:5432/dbname` for several processes sharing one
    /// database. Unset: the SQLite file `paywarden.db` in [`Config::data_dir`].
    pub database_url: Option<String>,
    /// The Open Payment Platform connector.
    pub opp: OppConfig,
    /// The Stripe connector (the `ops` toolset).
    pub stripe: StripeConfig,
    /// Entities (tenants) paywarden authenticates itself, for toolsets where it holds the
    /// provider credentials (`ops`): id and SHA-256 of the token. With the emulator and none
    /// configured, the emulator's demo entities.
    pub entities: Vec<crate::service::ops::KnownEntity>,
    /// HTTP transport settings.
    pub http: HttpConfig,
    /// Demo data.
    pub demo: DemoConfig,
    /// The safety layer: policy, confirmation, approval, refund window, least privilege.
    pub safety: SafetyConfig,
    /// People who may approve or deny `human` operations (approval page, HTTP Basic auth).
    pub operators: Vec<OperatorConfig>,
    /// The ifthenpay connector and the keys paywarden may hold for it.
    pub ifthenpay: IfthenpayConfig,
    /// Signed checkpoints of the audit chain: signing key, sinks, schedule.
    pub audit: crate::audit_anchor::AuditConfig,
}

/// ifthenpay settings. Keys set here are used when a tool call omits them, so they need not
/// pass through the model; callers must then authenticate (`X-Entity-Id`/`X-Token` of one of
/// [`Config::entities`], or of the emulator's demo entities in sandbox mode). Keys are
/// never serialised, logged or returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IfthenpayConfig {
    /// ifthenpay's API base URL, e.g. `https://api.ifthenpay.com`. When unset, the in-process
    /// emulator answers (sandbox) whenever it runs.
    pub base_url: Option<String>,
    /// Base URL of Payshop references (`POST {this}/payshop/reference/`). Default:
    /// `https://ifthenpay.com/api` when `base_url` is the live API (Payshop is on that host),
    /// else `{base_url}/api` (the emulator's layout).
    pub payshop_base_url: Option<String>,
    /// Base URL of callback activation (`POST {this}/endpoint/callback/activation`); default as
    /// `payshop_base_url`.
    pub callback_base_url: Option<String>,
    /// Timeout of one ifthenpay HTTP request, in milliseconds (default 10 000).
    pub timeout_ms: u64,
    /// Multibanco key (`mb_key`).
    #[serde(skip_serializing)]
    pub mb_key: Option<SecretString>,
    /// MB WAY key (`mbway_key`).
    #[serde(skip_serializing)]
    pub mbway_key: Option<SecretString>,
    /// Payshop key (`payshop_key`).
    #[serde(skip_serializing)]
    pub payshop_key: Option<SecretString>,
    /// Credit card key (`ccard_key`).
    #[serde(skip_serializing)]
    pub ccard_key: Option<SecretString>,
    /// Gateway key for PinPay (`gateway_key`).
    #[serde(skip_serializing)]
    pub gateway_key: Option<SecretString>,
    /// Cofidis Pay key (`cofidis_key`).
    #[serde(skip_serializing)]
    pub cofidis_key: Option<SecretString>,
    /// PIX key (`pix_key`).
    #[serde(skip_serializing)]
    pub pix_key: Option<SecretString>,
    /// Backoffice key (`bo_key`) for `payments_list` and callback activation.
    #[serde(skip_serializing)]
    pub bo_key: Option<SecretString>,
    /// The anti-phishing key ifthenpay puts in every callback; callbacks without it are refused.
    /// Default with the emulator: its demo anti-phishing key.
    #[serde(skip_serializing)]
    pub anti_phishing_key: Option<SecretString>,
}

impl Default for IfthenpayConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            payshop_base_url: None,
            callback_base_url: None,
            timeout_ms: 10_000,
            mb_key: None,
            mbway_key: None,
            payshop_key: None,
            ccard_key: None,
            gateway_key: None,
            cofidis_key: None,
            pix_key: None,
            bo_key: None,
            anti_phishing_key: None,
        }
    }
}

/// Safety settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SafetyConfig {
    /// Policy file (TOML). Unset: the built-in default policy (`policy/default.toml`).
    pub policy_file: Option<PathBuf>,
    /// Toolsets served (`opp`, `ifthenpay`, later `ops`). Default: all.
    pub toolsets: Vec<String>,
    /// Hide and refuse every tool that moves money.
    pub read_only: bool,
    /// Refunds of payments older than this many days are refused (default 90).
    pub refund_window_days: i64,
    /// How long a confirmation token stays valid, in seconds (default 300).
    pub confirmation_ttl_secs: i64,
    /// How long an approval request stays open, in seconds (default 86 400).
    pub approval_ttl_secs: i64,
    /// Public base URL of this server, used in approval links (default: the listen address).
    pub public_url: Option<String>,
    /// How long a money-moving call holds its idempotency key (and an approval it executes)
    /// without renewing it, in seconds (default 60; the call renews it every third of that
    /// while it runs). Past it, the call's process is taken for dead and the key is reconciled
    /// against the provider.
    pub key_lease_secs: u64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            policy_file: None,
            toolsets: vec!["opp".into(), "ops".into(), "ifthenpay".into()],
            read_only: false,
            refund_window_days: 90,
            confirmation_ttl_secs: 300,
            approval_ttl_secs: 86_400,
            public_url: None,
            key_lease_secs: 60,
        }
    }
}

/// An operator: a person who decides approval requests. The token is stored as its SHA-256
/// (hex), never in clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorConfig {
    /// The operator's name, recorded with each decision (the HTTP Basic user name).
    pub name: String,
    /// Hex SHA-256 of the operator's token (the HTTP Basic password).
    pub token_sha256: String,
}

/// OPP connector settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OppConfig {
    /// OPP base URL, e.g. `https://eu-test.oppwa.com`. When unset, paywarden starts its offline
    /// emulator in-process on a loopback port and every result is marked as sandbox.
    pub base_url: Option<String>,
    /// Timeout of one OPP HTTP request, in milliseconds (default 10 000).
    pub timeout_ms: u64,
    /// How long after a request could last have been sent OPP's silence about it is final, in
    /// milliseconds (default: 3 × `timeout_ms` + 30 000). A call whose outcome is unknown stays
    /// blocked until OPP shows the operation or this window has passed; it must be longer than
    /// any request can be in flight.
    pub settle_window_ms: Option<u64>,
    /// The secret of the merchant's OPP webhook configuration (64 hex characters: the
    /// AES-256-GCM key OPP encrypts notifications with; OPP docs "Webhooks"). Notifications at
    /// `POST /webhooks/opp` are refused without it. Default with the emulator: its demo key.
    /// Never logged or serialised.
    #[serde(skip_serializing)]
    pub webhook_key: Option<SecretString>,
}

/// Stripe connector settings (the `ops` toolset).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StripeConfig {
    /// Stripe API base URL (default `https://api.stripe.com` when a key is set). When neither
    /// this nor a key is set, paywarden uses its offline Stripe emulator and the demo key.
    pub base_url: Option<String>,
    /// The Stripe secret (`sk_test_...`) or restricted (`rk_test_...`) key; also read from
    /// `STRIPE_API_KEY`. Never logged or serialised.
    #[serde(skip_serializing)]
    pub api_key: Option<SecretString>,
    /// Accept live-mode keys (`sk_live_`, `rk_live_`), which move real money. Default false:
    /// a live key stops start-up.
    pub allow_live_keys: bool,
    /// Timeout of one Stripe request, in milliseconds (default 10 000).
    pub timeout_ms: u64,
    /// As `opp.settle_window_ms`, for Stripe (default: 3 × `timeout_ms` + 30 000).
    pub settle_window_ms: Option<u64>,
    /// The signing secret (`whsec_...`) of the Stripe webhook endpoint pointing at
    /// `POST /webhooks/stripe` (one per Stripe account, which is this connector's); also read
    /// from `STRIPE_WEBHOOK_SECRET`. Events are refused without it. Default with the emulator:
    /// its demo secret. Never logged or serialised.
    #[serde(skip_serializing)]
    pub webhook_secret: Option<SecretString>,
    /// How old a `Stripe-Signature` timestamp may be, in seconds (default 300, Stripe's).
    pub webhook_tolerance_secs: u64,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key: None,
            allow_live_keys: false,
            timeout_ms: 10_000,
            settle_window_ms: None,
            webhook_secret: None,
            webhook_tolerance_secs: crate::events::DEFAULT_TOLERANCE_SECS,
        }
    }
}

/// HTTP transport settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Accepted `Host` header values (hostname or `host:port`); others get 403.
    /// Default: `localhost`, `127.0.0.1`, `::1`.
    pub allowed_hosts: Vec<String>,
    /// Accepted browser `Origin` values (`scheme://host[:port|:*]`); a request with another
    /// `Origin` gets 403. Requests without `Origin` (non-browser clients) pass.
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// A Streamable HTTP session (2025-era clients) with no traffic for this long is closed;
    /// its client gets 404 for the old `Mcp-Session-Id` and starts a new session (default 300).
    pub session_idle_timeout_secs: u64,
    /// Most Streamable HTTP sessions open at once, on all endpoints together (default 10 000).
    /// An `initialize` beyond it gets HTTP 503 with a JSON-RPC error and `Retry-After`.
    pub max_sessions: usize,
    /// Most sessions one entity may hold open at once (default 100); callers without
    /// credentials at `/mcp/payments/` share one allowance. Beyond it: HTTP 429 with a JSON-RPC
    /// error.
    pub max_sessions_per_entity: usize,
    /// How long a verdict of the provider on a pair of credentials (`X-Entity-Id`/`X-Token`)
    /// is reused before asking again, in seconds (default 60). Only when no `[[entities]]`
    /// are configured.
    pub auth_cache_ttl_secs: u64,
    /// Most verdicts kept (default 10 000; the least recently used goes first). Keyed by a
    /// keyed hash of entity and token, never the token.
    pub auth_cache_entries: usize,
}

/// Demo data settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DemoConfig {
    /// Seed the emulator with demo transactions when its data dir is empty (default true;
    /// only ever applies to the emulator).
    pub seed: bool,
    /// How many initial payments the demo data has (default 50).
    pub payments: usize,
    /// Point the emulator's Stripe and OPP webhooks at this server at start-up (default true;
    /// only ever applies to the emulator). See README "Provider events".
    pub webhooks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::new(),
            entity_id: None,
            token: None,
            database_url: None,
            opp: OppConfig::default(),
            stripe: StripeConfig::default(),
            entities: Vec::new(),
            http: HttpConfig::default(),
            demo: DemoConfig::default(),
            safety: SafetyConfig::default(),
            operators: Vec::new(),
            ifthenpay: IfthenpayConfig::default(),
            audit: crate::audit_anchor::AuditConfig::default(),
        }
    }
}

impl Default for OppConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            timeout_ms: 10_000,
            settle_window_ms: None,
            webhook_key: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: vec![
                "http://localhost:*".into(),
                "http://127.0.0.1:*".into(),
                "https://localhost:*".into(),
                "https://127.0.0.1:*".into(),
            ],
            max_body_bytes: 1024 * 1024,
            session_idle_timeout_secs: 300,
            max_sessions: 10_000,
            max_sessions_per_entity: 100,
            auth_cache_ttl_secs: 60,
            auth_cache_entries: 10_000,
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            seed: true,
            payments: 50,
            webhooks: true,
        }
    }
}

/// Where the data directory came from (see [`resolve_data_dir`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirSource {
    /// Given explicitly: `--data-dir`, `PAYWARDEN_DATA_DIR` or `data_dir` in the file.
    Explicit,
    /// Beside the SQLite database `database_url` / `DATABASE_URL` names.
    BesideDatabase,
    /// The platform's per-user data directory.
    PerUser,
}

impl std::fmt::Display for DataDirSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Explicit => "given by --data-dir, PAYWARDEN_DATA_DIR or data_dir",
            Self::BesideDatabase => "beside the SQLite database named by DATABASE_URL",
            Self::PerUser => "the per-user data directory",
        })
    }
}

/// The suffix of the data directory kept beside a SQLite database (like SQLite's own `-wal`
/// and `-shm` files): `DATABASE_URL=sqlite:////x/payments.db` keeps its state in
/// `/x/payments.db-paywarden/`.
pub const BESIDE_DATABASE_SUFFIX: &str = "-paywarden";

/// Chooses paywarden's data directory (the emulator's `emulator.db` and `emulator.url`, and
/// `paywarden.db` when no database is named), always as an absolute path:
///
/// 1. `explicit` when not empty (`--data-dir`, `PAYWARDEN_DATA_DIR`, `data_dir`); a relative one
///    is taken against `cwd`, the working directory at start-up.
/// 2. Else, when `database_url` names a SQLite file, the directory beside it: that file's path
///    plus [`BESIDE_DATABASE_SUFFIX`] (`/x/payments.db` -> `/x/payments.db-paywarden`), so the
///    database and the emulator's state always travel together.
/// 3. Else `paywarden` in `user_data_dir`, the platform's per-user data directory
///    (`$XDG_DATA_HOME` or `~/.local/share` on Linux, `~/Library/Application Support` on macOS,
///    `%APPDATA%` on Windows; from the `dirs` crate).
///
/// `.` components are dropped; the directory is not created here.
///
/// # Errors
/// [`ConfigError::Invalid`] when a relative path must be resolved but `cwd` is unknown, or when
/// step 3 applies and there is no per-user data directory (no home directory).
pub fn resolve_data_dir(
    explicit: &Path,
    sqlite_file: Option<&Path>,
    cwd: Option<&Path>,
    user_data_dir: Option<&Path>,
) -> Result<(PathBuf, DataDirSource), ConfigError> {
    let absolute = |path: &Path| -> Result<PathBuf, ConfigError> {
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            cwd.ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "cannot resolve the relative path {} (the working directory is unknown); give an absolute --data-dir",
                    path.display()
                ))
            })?
            .join(path)
        };
        Ok(joined
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect())
    };
    if !explicit.as_os_str().is_empty() {
        return Ok((absolute(explicit)?, DataDirSource::Explicit));
    }
    if let Some(file) = sqlite_file {
        let mut beside = absolute(file)?.into_os_string();
        beside.push(BESIDE_DATABASE_SUFFIX);
        return Ok((PathBuf::from(beside), DataDirSource::BesideDatabase));
    }
    match user_data_dir {
        Some(dir) => Ok((absolute(&dir.join("paywarden"))?, DataDirSource::PerUser)),
        None => Err(ConfigError::Invalid(
            "no data directory: there is no per-user data directory (is HOME set?) and no SQLite DATABASE_URL; pass --data-dir DIR or set PAYWARDEN_DATA_DIR".into(),
        )),
    }
}

/// Values given on the command line; `None` means "not given", so lower sources apply.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--entity-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    /// `--token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Config {
    /// Loads configuration from defaults, `file` (TOML, optional), the `PAYWARDEN_*`
    /// environment, and `overrides`, in that order of precedence (last wins), then resolves
    /// [`Config::data_dir`] to an absolute path ([`Config::resolve_data_dir`]) and logs it.
    ///
    /// # Errors
    /// [`ConfigError::MissingFile`] when `file` is given and absent; [`ConfigError::Invalid`]
    /// when a value has the wrong shape (the message names the key and the source) or no data
    /// directory can be chosen.
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::MissingFile(file.to_path_buf()));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment
            .merge(Env::prefixed("PAYWARDEN_").split("__").ignore(&["config"]))
            .merge(Serialized::globals(overrides));
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        // The ops seed's own variables, when nothing more specific set these.
        if config.database_url.is_none() {
            config.database_url = std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty());
        }
        if config.stripe.api_key.is_none() {
            config.stripe.api_key = std::env::var("STRIPE_API_KEY")
                .ok()
                .filter(|v| !v.is_empty())
                .map(SecretString::from);
        }
        if config.stripe.webhook_secret.is_none() {
            config.stripe.webhook_secret = std::env::var("STRIPE_WEBHOOK_SECRET")
                .ok()
                .filter(|v| !v.is_empty())
                .map(SecretString::from);
        }
        config.check_unknown_outcome_settings()?;
        let source = config.resolve_data_dir()?;
        tracing::info!(data_dir = %config.data_dir.display(), "data directory ({source})");
        Ok(config)
    }

    /// Makes [`Config::data_dir`] absolute and independent of the working directory unless it
    /// was given relative on purpose: see [`resolve_data_dir`] (the working directory and the
    /// platform's per-user data directory come from the process). Idempotent.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when no data directory can be chosen.
    pub fn resolve_data_dir(&mut self) -> Result<DataDirSource, ConfigError> {
        let cwd = std::env::current_dir().ok();
        let (dir, source) = resolve_data_dir(
            &self.data_dir,
            self.sqlite_file().as_deref(),
            cwd.as_deref(),
            dirs::data_dir().as_deref(),
        )?;
        self.data_dir = dir;
        Ok(source)
    }

    /// The SQLite file [`Config::database_url`] names, as written (`None` for PostgreSQL, an
    /// unset URL, or an in-memory database).
    fn sqlite_file(&self) -> Option<PathBuf> {
        let url = self.database_url.as_deref()?;
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = path.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }

    /// The window after which a provider's silence about a request is final (see
    /// `opp.settle_window_ms`): the configured one, else 3 × `timeout_ms` + 30 s.
    pub fn settle_window(timeout_ms: u64, configured: Option<u64>) -> std::time::Duration {
        std::time::Duration::from_millis(
            configured.unwrap_or_else(|| timeout_ms.saturating_mul(3).saturating_add(30_000)),
        )
    }

    /// Refuses a key lease of 0 and a settle window shorter than its connector's timeout (a
    /// request could still be in flight when its silence is taken as final).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting and what to set.
    pub fn check_unknown_outcome_settings(&self) -> Result<(), ConfigError> {
        if self.safety.key_lease_secs == 0 {
            return Err(ConfigError::Invalid(
                "safety.key_lease_secs must be at least 1 (seconds a call holds its idempotency key between renewals); the default is 60".into(),
            ));
        }
        for (name, timeout, window) in [
            ("opp", self.opp.timeout_ms, self.opp.settle_window_ms),
            (
                "stripe",
                self.stripe.timeout_ms,
                self.stripe.settle_window_ms,
            ),
        ] {
            if let Some(window) = window {
                if window < timeout {
                    return Err(ConfigError::Invalid(format!(
                        "{name}.settle_window_ms ({window}) is shorter than {name}.timeout_ms ({timeout}): a request could still be in flight when the provider's silence is taken as final. Set it above the timeout (default 3 x timeout + 30000), or remove it"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether the offline emulator stands in for OPP (no base URL configured).
    pub fn uses_emulator(&self) -> bool {
        self.opp.base_url.is_none()
    }

    /// Whether the offline emulator stands in for Stripe (no Stripe key or base URL).
    pub fn uses_stripe_emulator(&self) -> bool {
        self.stripe.api_key.is_none() && self.stripe.base_url.is_none()
    }

    /// paywarden's database as a URL the store opens: [`Config::database_url`] when set
    /// (`sqlite://PATH`, `sqlite:PATH`, `sqlite:///abs`, `postgres://user@host:5432/db`,
    /// `postgresql://...`), else the SQLite file `paywarden.db` in the data directory.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for another scheme, or an `sqlite:` URL that names no file.
    pub fn database(&self) -> Result<String, ConfigError> {
        match &self.database_url {
            None => Ok(crate::store::sqlite_url(
                &self.data_dir.join("paywarden.db"),
            )),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(url.clone())
            }
            Some(url) => {
                let path = url
                    .strip_prefix("sqlite://")
                    .or_else(|| url.strip_prefix("sqlite:"))
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!(
                            "database_url / DATABASE_URL {:?}: use sqlite:///abs/path/paywarden.db or postgres://user@host:5432/dbname",
                            url.split('@').next_back().unwrap_or_default()
                        ))
                    })?;
                if path.split('?').next().unwrap_or_default().is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "database_url {url:?} names no file"
                    )));
                }
                Ok(format!("sqlite://{path}"))
            }
        }
    }

    /// Whether paywarden's own database is PostgreSQL.
    pub fn uses_postgres(&self) -> bool {
        self.database_url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn the_database_url_picks_the_engine() {
        let mut config = Config {
            data_dir: PathBuf::from("/srv/pw data"),
            ..Config::default()
        };
        assert_eq!(
            config.database().unwrap(),
            "sqlite:///srv/pw data/paywarden.db?mode=rwc"
        );
        assert!(!config.uses_postgres());
        for (url, expected) in [
            ("sqlite:///abs/p.db", "sqlite:///abs/p.db"),
            ("sqlite:rel.db", "sqlite://rel.db"),
            (
                "postgres://pw:secret@db:5432/paywarden",
                "postgres://pw:secret@db:5432/paywarden",
            ),
            ("postgresql://db/paywarden", "postgresql://db/paywarden"),
        ] {
            config.database_url = Some(url.into());
            assert_eq!(config.database().unwrap(), expected, "{url}");
        }
        assert!(config.uses_postgres());
        for bad in ["mysql://db/x", "sqlite://", "sqlite:?mode=ro"] {
            config.database_url = Some(bad.into());
            assert!(config.database().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_then_file_then_environment_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "paywarden.toml",
                r#"
                listen = "127.0.0.1:9000"
                data_dir = "from-file"
                [opp]
                timeout_ms = 1234
                [http]
                allowed_hosts = ["pay.example.com"]
                "#,
            )?;
            let path = jail.directory().join("paywarden.toml");
            let config =
                Config::load(Some(&path), &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.port(), 9000);
            // Relative data directories are taken against the working directory (the jail's).
            let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
            assert_eq!(config.data_dir, cwd.join("from-file"));
            assert_eq!(config.opp.timeout_ms, 1234);
            assert_eq!(
                config.http.allowed_hosts,
                vec!["pay.example.com".to_string()]
            );
            assert!(config.uses_emulator());

            jail.set_env("PAYWARDEN_DATA_DIR", "from-env");
            jail.set_env("PAYWARDEN_OPP__BASE_URL", "https://eu-test.oppwa.com");
            let config =
                Config::load(Some(&path), &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.data_dir, cwd.join("from-env"));
            assert!(!config.uses_emulator());

            let flags = Overrides {
                data_dir: Some(PathBuf::from("from-flag")),
                ..Overrides::default()
            };
            let config = Config::load(Some(&path), &flags).map_err(|e| e.to_string())?;
            assert_eq!(config.data_dir, cwd.join("from-flag"));
            assert_eq!(config.listen.port(), 9000);
            Ok(())
        });
    }

    #[test]
    fn the_data_dir_is_explicit_or_beside_the_database_or_per_user_never_the_cwd() {
        let cwd = Path::new("/launched/from");
        let home_data = Path::new("/home/u/.local/share");
        let resolve = |explicit: &str, db: Option<&str>, user: Option<&Path>| {
            resolve_data_dir(Path::new(explicit), db.map(Path::new), Some(cwd), user)
        };
        // Explicit wins over everything; relative means from the working directory.
        for (given, expected) in [
            ("/srv/pw", "/srv/pw"),
            ("data", "/launched/from/data"),
            ("./data/./x", "/launched/from/data/x"),
        ] {
            assert_eq!(
                resolve(given, Some("/x/payments.db"), Some(home_data)).unwrap(),
                (PathBuf::from(expected), DataDirSource::Explicit),
                "{given}"
            );
        }
        // A named SQLite database: its sibling, whatever the working directory.
        assert_eq!(
            resolve("", Some("/x/payments.db"), Some(home_data)).unwrap(),
            (
                PathBuf::from("/x/payments.db-paywarden"),
                DataDirSource::BesideDatabase
            )
        );
        assert_eq!(
            resolve_data_dir(Path::new(""), Some(Path::new("/x/payments.db")), None, None)
                .unwrap()
                .0,
            PathBuf::from("/x/payments.db-paywarden")
        );
        assert_eq!(
            resolve("", Some("rel.db"), None).unwrap().0,
            PathBuf::from("/launched/from/rel.db-paywarden")
        );
        // Nothing named: the per-user data directory.
        assert_eq!(
            resolve("", None, Some(home_data)).unwrap(),
            (
                PathBuf::from("/home/u/.local/share/paywarden"),
                DataDirSource::PerUser
            )
        );
        // Nowhere to go: a clear error saying what to do.
        let err = resolve("", None, None).unwrap_err().to_string();
        assert!(err.contains("--data-dir") && err.contains("HOME"), "{err}");
        let err = resolve_data_dir(Path::new("rel"), None, None, Some(home_data))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rel") && err.contains("absolute"), "{err}");
    }

    #[test]
    fn load_resolves_the_data_dir_from_database_url_and_home() {
        figment::Jail::expect_with(|jail| {
            let root = jail.directory().to_path_buf();
            jail.set_env("HOME", root.join("home").display());
            jail.set_env("XDG_DATA_HOME", root.join("xdg").display());
            jail.set_env("DATABASE_URL", "");
            let per_user = dirs::data_dir().ok_or("no data dir")?.join("paywarden");
            #[cfg(target_os = "linux")]
            assert_eq!(per_user, root.join("xdg/paywarden"));
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.data_dir, per_user);
            assert_eq!(
                config.database().map_err(|e| e.to_string())?,
                crate::store::sqlite_url(&per_user.join("paywarden.db"))
            );

            jail.set_env("DATABASE_URL", "sqlite:////abs/path/payments.db");
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(
                config.data_dir,
                PathBuf::from("/abs/path/payments.db-paywarden")
            );
            jail.set_env("DATABASE_URL", "sqlite:///abs/path/payments.db?mode=rwc");
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(
                config.data_dir,
                PathBuf::from("/abs/path/payments.db-paywarden")
            );
            // PostgreSQL names no file: the per-user directory again.
            jail.set_env("DATABASE_URL", "postgres://pw@db:5432/paywarden");
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.data_dir, per_user);
            // An explicit directory still wins.
            jail.set_env("PAYWARDEN_DATA_DIR", "/srv/pw");
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.data_dir, PathBuf::from("/srv/pw"));
            Ok(())
        });
    }

    #[test]
    fn bad_values_and_missing_files_are_clear_errors() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PAYWARDEN_LISTEN", "not-an-address");
            let err = Config::load(None, &Overrides::default())
                .map(|_| ())
                .unwrap_err();
            assert!(err.to_string().to_lowercase().contains("listen"), "{err}");
            Ok(())
        });
        let err = Config::load(
            Some(std::path::Path::new("/no/such/paywarden.toml")),
            &Overrides::default(),
        )
        .map(|_| ())
        .unwrap_err();
        assert!(err.to_string().contains("/no/such/paywarden.toml"), "{err}");
    }

    #[test]
    fn the_token_is_never_serialised_or_debug_printed() {
        let config = Config {
            token: Some(SecretString::from("s3cr3t-token".to_string())),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("s3cr3t-token"));
        let mut config = config;
        config.ifthenpay.mb_key = Some(SecretString::from("s3cr3t-mb-key".to_string()));
        config.ifthenpay.anti_phishing_key = Some(SecretString::from("s3cr3t-ap".to_string()));
        config.stripe.webhook_secret = Some(SecretString::from("whsec_s3cr3t".to_string()));
        config.opp.webhook_key = Some(SecretString::from("ab".repeat(32)));
        let shown = format!("{config:?}") + &serde_json::to_string(&config).unwrap_or_default();
        assert!(!shown.contains("s3cr3t-mb-key") && !shown.contains("s3cr3t-ap"));
        assert!(!shown.contains("whsec_s3cr3t") && !shown.contains(&"ab".repeat(32)));
        assert!(!serde_json::to_string(&config)
            .unwrap_or_default()
            .contains("s3cr3t-token"));
    }
}
