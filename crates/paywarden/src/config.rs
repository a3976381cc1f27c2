//! Configuration: defaults, then a TOML file, then `PAYWARDEN_*` environment variables, then
//! command-line flags (each later source wins).
//!
//! Environment variables use `__` for nesting: `PAYWARDEN_OPP__BASE_URL`,
//! `PAYWARDEN_HTTP__ALLOWED_HOSTS`; top-level keys are plain: `PAYWARDEN_LISTEN`,
//! `PAYWARDEN_DATA_DIR`, `PAYWARDEN_ENTITY_ID`, `PAYWARDEN_TOKEN`.

use std::{net::SocketAddr, path::PathBuf};

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
    /// Directory for paywarden's SQLite database and the emulator's state
    /// (default `./paywarden-data`).
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
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key: None,
            allow_live_keys: false,
            timeout_ms: 10_000,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("paywarden-data"),
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
        }
    }
}

impl Default for OppConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            timeout_ms: 10_000,
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
        }
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
    /// environment, and `overrides`, in that order of precedence (last wins).
    ///
    /// # Errors
    /// [`ConfigError::MissingFile`] when `file` is given and absent; [`ConfigError::Invalid`]
    /// when a value has the wrong shape (the message names the key and the source).
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
        Ok(config)
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
            assert_eq!(config.data_dir, PathBuf::from("from-file"));
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
            assert_eq!(config.data_dir, PathBuf::from("from-env"));
            assert!(!config.uses_emulator());

            let flags = Overrides {
                data_dir: Some(PathBuf::from("from-flag")),
                ..Overrides::default()
            };
            let config = Config::load(Some(&path), &flags).map_err(|e| e.to_string())?;
            assert_eq!(config.data_dir, PathBuf::from("from-flag"));
            assert_eq!(config.listen.port(), 9000);
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
        let shown = format!("{config:?}") + &serde_json::to_string(&config).unwrap_or_default();
        assert!(!shown.contains("s3cr3t-mb-key") && !shown.contains("s3cr3t-ap"));
        assert!(!serde_json::to_string(&config)
            .unwrap_or_default()
            .contains("s3cr3t-token"));
    }
}
