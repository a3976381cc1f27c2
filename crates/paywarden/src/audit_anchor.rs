//! Signed checkpoints that anchor the audit chain to a secret outside the database, and the
//! keyed ids by which provider keys are referred to.
//!
//! The audit log ([`crate::store`]) is a hash chain: an edit or a deleted middle row breaks it,
//! but whoever can write the database can cut its tail, empty it, or rewrite it and recompute
//! every hash. A **checkpoint** closes that gap: an Ed25519 signature, by a key that is not in
//! the database, over the chain's head hash and its length (the head's `seq`), with the time
//! and the signing key's id. Checkpoints are appended (`O_APPEND`) as JSON Lines to a file
//! outside the database, and optionally handed to a command that ships them off the host.
//! [`verify`] then checks the chain against every checkpoint: a log shorter than a checkpoint
//! is *truncated*, an empty log with checkpoints is *deleted*, and an entry whose hash differs
//! from the one a checkpoint recorded at its position was *rewritten*.
//!
//! A checkpoint line:
//!
//! ```json
//! {"type":"paywarden.audit.checkpoint.v1","seq":42,"head":"<64 hex>","at":"2026-05-01T10:00:00.000000Z","key_id":"<16 hex>","sig":"<base64>"}
//! ```
//!
//! `sig` is the Ed25519 signature (RFC 8032) of the canonical JSON of the other five fields
//! ([`crate::canonical`]: keys sorted, no white space). The fields are ASCII strings and an
//! integer below 2^53, for which that form is byte for byte RFC 8785 (JCS). `key_id` is 16 hex
//! characters of SHA-256 of the 32-byte public key; it only names the key, verification tries
//! every key it is given.
//!
//! The signing key is a 32-byte Ed25519 seed, base64-encoded: `audit.signing_key`
//! (`PAYWARDEN_AUDIT__SIGNING_KEY`), else the file `audit.signing_key_file` (default
//! `<data_dir>/audit-signing.key`), created with mode 0600 on first start. The same seed keys
//! the ids of provider keys ([`KeyIds`]): HMAC-SHA-256 under a subkey derived from it, so an
//! audit export reveals nothing a brute force over a low-entropy key space could match.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::store::{ChainBreak, Store, StoreError, GENESIS};

/// The `type` of every checkpoint this version writes.
pub const CHECKPOINT_TYPE: &str = "paywarden.audit.checkpoint.v1";
/// The signing key file's name in the data directory, when `audit.signing_key_file` is unset.
pub const DEFAULT_KEY_FILE: &str = "audit-signing.key";
/// The checkpoint file's name in the data directory, when `audit.checkpoint_file` is unset.
pub const DEFAULT_CHECKPOINT_FILE: &str = "audit-checkpoints.jsonl";
/// The `meta` key recording the id of the key this database's checkpoints are signed with.
const KEY_ID_META: &str = "audit_signing_key_id";
/// How long `audit.checkpoint_command` may take for one checkpoint.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// The label deriving the provider-key-id subkey from the signing seed.
const KEY_ID_LABEL: &[u8] = b"paywarden/provider-key-id/v1";

type HmacSha256 = Hmac<Sha256>;

/// `[audit]`: the checkpoint signing key, where checkpoints go, and how often.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditConfig {
    /// The signing key as a base64 32-byte Ed25519 seed (`PAYWARDEN_AUDIT__SIGNING_KEY`); wins
    /// over [`AuditConfig::signing_key_file`]. Never logged or serialised.
    #[serde(skip_serializing)]
    pub signing_key: Option<SecretString>,
    /// File holding the base64 seed (default `<data_dir>/audit-signing.key`); created with
    /// mode 0600 when absent. Keep it off the database host's backups of the database.
    pub signing_key_file: Option<PathBuf>,
    /// The JSON Lines file checkpoints are appended to (default
    /// `<data_dir>/audit-checkpoints.jsonl`).
    pub checkpoint_file: Option<PathBuf>,
    /// Seconds between scheduled checkpoints, each written only when the chain advanced
    /// (default 60; 0: only at start-up, at shutdown and on demand).
    pub checkpoint_interval_secs: u64,
    /// A shell command (`sh -c`) each checkpoint line is also written to, on its standard
    /// input, e.g. `logger -t paywarden-audit` or a `curl` to a log service; it must finish
    /// within 10 s. A failure is logged; the file still has the checkpoint.
    pub checkpoint_command: Option<String>,
    /// Public keys (base64, as `paywarden audit public-key` prints them) `audit verify`
    /// checks signatures with; unset: the key derived from the signing key on this host.
    pub public_keys: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            signing_key: None,
            signing_key_file: None,
            checkpoint_file: None,
            checkpoint_interval_secs: 60,
            checkpoint_command: None,
            public_keys: Vec::new(),
        }
    }
}

impl AuditConfig {
    /// The signing key file: [`AuditConfig::signing_key_file`], else `audit-signing.key` in
    /// `data_dir`.
    pub fn key_file(&self, data_dir: &Path) -> PathBuf {
        self.signing_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join(DEFAULT_KEY_FILE))
    }

    /// The checkpoint file: [`AuditConfig::checkpoint_file`], else `audit-checkpoints.jsonl`
    /// in `data_dir`.
    pub fn checkpoint_path(&self, data_dir: &Path) -> PathBuf {
        self.checkpoint_file
            .clone()
            .unwrap_or_else(|| data_dir.join(DEFAULT_CHECKPOINT_FILE))
    }
}

/// Errors of the audit anchor.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The signing key file could not be read or created.
    #[error("audit signing key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The signing key is not a base64 32-byte seed.
    #[error("the audit signing key from {origin} is not a base64-encoded 32-byte Ed25519 seed; generate one with `openssl rand -base64 32`, or remove the file to have paywarden create one")]
    BadKey {
        /// Where it came from (a file path or the setting's name); never the key.
        origin: String,
    },
    /// A public key given to `verify` is not one.
    #[error("audit public key {0:?} is neither a base64-encoded 32-byte Ed25519 public key (as `paywarden audit public-key` prints it) nor a file holding one")]
    BadPublicKey(String),
    /// This process's signing key is not the one the database's other processes use.
    #[error("this process's audit signing key (id {ours}, from {origin}) is not the one this database's checkpoints are signed with (id {recorded}); every paywarden on one database must use the same key: copy that key file here or set PAYWARDEN_AUDIT__SIGNING_KEY to the same key. After replacing the key on purpose, run `paywarden audit checkpoint --adopt-key` once")]
    KeyMismatch {
        /// This process's key id.
        ours: String,
        /// The key id the database recorded.
        recorded: String,
        /// Where this process's key came from.
        origin: String,
    },
    /// The checkpoint file could not be written.
    #[error("cannot append the audit checkpoint to {path}: {source}")]
    Sink {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `audit.checkpoint_command` failed.
    #[error("audit.checkpoint_command failed: {0}")]
    Command(String),
    /// A checkpoint file named for verification could not be read.
    #[error("cannot read audit checkpoints from {path}: {source}")]
    ReadCheckpoints {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Decodes base64 (standard or URL-safe, padded or not) into exactly 32 bytes.
fn decode_32(text: &str) -> Option<[u8; 32]> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    let mut buf = [0u8; 48];
    let len = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode_slice(text, &mut buf).ok())?;
    let out = (len == 32).then(|| {
        let mut out = [0u8; 32];
        out.copy_from_slice(&buf[..32]);
        out
    });
    buf.fill(0);
    out
}

/// 16 hex characters of SHA-256 of a public key: the id checkpoints name their key by.
pub fn key_id_of(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..16].to_string()
}

/// A public key as `paywarden audit public-key` prints it (base64 of its 32 bytes).
pub fn public_key_text(key: &VerifyingKey) -> String {
    b64().encode(key.as_bytes())
}

/// Parses a public key: base64 of 32 bytes, or the path of a file holding that.
///
/// # Errors
/// [`AnchorError::BadPublicKey`].
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, AnchorError> {
    let bytes = decode_32(text).or_else(|| {
        std::fs::read_to_string(text.trim())
            .ok()
            .and_then(|content| decode_32(&content))
    });
    bytes
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| AnchorError::BadPublicKey(text.chars().take(100).collect()))
}

/// The checkpoint signing key (and, derived from it, the provider-key-id secret).
pub struct AuditSigner {
    key: SigningKey,
    key_ids: KeyIds,
    origin: String,
}

impl fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditSigner")
            .field("key_id", &self.key_id())
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl AuditSigner {
    fn from_seed(mut seed: [u8; 32], origin: String) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let key_ids = KeyIds::derive(&seed);
        seed.fill(0);
        Self {
            key,
            key_ids,
            origin,
        }
    }

    fn from_text(text: &str, origin: String) -> Result<Self, AnchorError> {
        match decode_32(text) {
            Some(seed) => Ok(Self::from_seed(seed, origin)),
            None => Err(AnchorError::BadKey { origin }),
        }
    }

    /// The configured key (`audit.signing_key`, else the key file); `Ok(None)` when neither
    /// exists. Creates nothing.
    ///
    /// # Errors
    /// [`AnchorError::KeyFile`] when the file exists but cannot be read;
    /// [`AnchorError::BadKey`].
    pub fn load(config: &AuditConfig, data_dir: &Path) -> Result<Option<Self>, AnchorError> {
        if let Some(secret) = &config.signing_key {
            return Self::from_text(
                secret.expose_secret(),
                "audit.signing_key (PAYWARDEN_AUDIT__SIGNING_KEY)".into(),
            )
            .map(Some);
        }
        let path = config.key_file(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                warn_if_readable_by_others(&path);
                let text = SecretString::from(text);
                Self::from_text(text.expose_secret(), path.display().to_string()).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AnchorError::KeyFile { path, source }),
        }
    }

    /// The configured key, creating the key file (mode 0600, a fresh random seed) when
    /// neither it nor `audit.signing_key` exists. Logs the public key when it creates one.
    ///
    /// # Errors
    /// As [`AuditSigner::load`]; [`AnchorError::KeyFile`] when the file cannot be created.
    pub fn load_or_create(config: &AuditConfig, data_dir: &Path) -> Result<Self, AnchorError> {
        if let Some(signer) = Self::load(config, data_dir)? {
            return Ok(signer);
        }
        let path = config.key_file(data_dir);
        let key_error = |source| AnchorError::KeyFile {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(key_error)?;
        }
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let text = SecretString::from(format!("{}\n", b64().encode(seed)));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&path) {
            Ok(mut file) => {
                use std::io::Write;
                file.write_all(text.expose_secret().as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(key_error)?;
                let signer = Self::from_seed(seed, path.display().to_string());
                tracing::info!(
                    file = %path.display(),
                    key_id = signer.key_id(),
                    public_key = signer.public_key(),
                    "created the audit checkpoint signing key; keep a copy of its public key off this host to verify checkpoints with (`paywarden audit public-key` prints it again)"
                );
                Ok(signer)
            }
            // Another process created it in the meantime: use that one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                seed.fill(0);
                Self::load(config, data_dir)?.ok_or_else(|| key_error(e))
            }
            Err(e) => Err(key_error(e)),
        }
    }

    /// The key's id (16 hex characters of SHA-256 of the public key).
    pub fn key_id(&self) -> String {
        key_id_of(&self.key.verifying_key())
    }

    /// The public key, base64.
    pub fn public_key(&self) -> String {
        public_key_text(&self.key.verifying_key())
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Where the key came from (a file path or the setting's name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A signer of receipts with this key ([`crate::receipts`]).
    pub fn receipt_signer(&self) -> crate::receipts::ReceiptSigner {
        crate::receipts::ReceiptSigner::new(self.key.clone())
    }

    /// The provider-key-id secret derived from this key.
    pub fn key_ids(&self) -> KeyIds {
        self.key_ids.clone()
    }

    /// Signs a checkpoint of the head `(seq, head)` at `at` (RFC 3339).
    pub fn sign(&self, seq: i64, head: &str, at: &str) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            kind: CHECKPOINT_TYPE.into(),
            seq,
            head: head.into(),
            at: at.into(),
            key_id: self.key_id(),
            sig: String::new(),
        };
        let signature = self.key.sign(checkpoint.message().as_bytes());
        checkpoint.sig = b64().encode(signature.to_bytes());
        checkpoint
    }

    /// Checks that this is the key the database's checkpoints are signed with (recording it
    /// when no process has yet); with `adopt`, records it as that key instead. Replicas must
    /// share one key: provider key ids ([`KeyIds`]) derive from it, and scope requests.
    ///
    /// # Errors
    /// [`AnchorError::KeyMismatch`]; [`AnchorError::Store`].
    pub async fn check_database(&self, store: &Store, adopt: bool) -> Result<(), AnchorError> {
        let ours = self.key_id();
        if adopt {
            store.set_meta(KEY_ID_META, &ours).await?;
            return Ok(());
        }
        let recorded = store.meta_or_insert(KEY_ID_META, &ours).await?;
        if recorded == ours {
            Ok(())
        } else {
            Err(AnchorError::KeyMismatch {
                ours,
                recorded,
                origin: self.origin.clone(),
            })
        }
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:o}"),
                "the audit signing key file is readable by other users; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// The secret keying provider-key ids: `HMAC-SHA-256(subkey, provider key)`, 32 hex characters.
/// The subkey is `HMAC-SHA-256(signing seed, "paywarden/provider-key-id/v1")`, so the ids are
/// stable for as long as the signing key is, equal on every replica sharing it, and useless
/// to whoever reads the audit log or the database without it.
#[derive(Clone)]
pub struct KeyIds {
    key: [u8; 32],
}

impl fmt::Debug for KeyIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyIds(..)")
    }
}

impl KeyIds {
    fn derive(seed: &[u8; 32]) -> Self {
        let mut key = [0u8; 32];
        if let Ok(mut mac) = HmacSha256::new_from_slice(seed) {
            mac.update(KEY_ID_LABEL);
            key.copy_from_slice(&mac.finalize().into_bytes());
        }
        Self { key }
    }

    /// A random secret for this process only (ids then change at every start). For services
    /// built without a signing key, e.g. in unit tests.
    pub fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self { key }
    }

    /// The id of `provider_key`: 32 hex characters of HMAC-SHA-256 under this secret.
    pub fn id(&self, provider_key: &str) -> String {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(provider_key.as_bytes());
        hex::encode(mac.finalize().into_bytes())[..32].to_string()
    }
}

/// One signed checkpoint of the audit chain's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`CHECKPOINT_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The head's position, which is also the number of entries (0: an empty log).
    pub seq: i64,
    /// The head's hash ([`GENESIS`] for an empty log).
    pub head: String,
    /// When it was signed (UTC, RFC 3339).
    pub at: String,
    /// The signing key's id ([`key_id_of`]).
    pub key_id: String,
    /// Base64 Ed25519 signature of the canonical JSON of the other fields.
    pub sig: String,
}

impl Checkpoint {
    /// The signed bytes: canonical JSON of every field but `sig`.
    fn message(&self) -> String {
        crate::canonical::canonical_json(&serde_json::json!({
            "type": self.kind,
            "seq": self.seq,
            "head": self.head,
            "at": self.at,
            "key_id": self.key_id,
        }))
    }

    /// Whether `sig` is a signature by `key` over this checkpoint.
    pub fn verifies_with(&self, key: &VerifyingKey) -> bool {
        let Ok(bytes) = b64().decode(self.sig.trim()) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        self.kind == CHECKPOINT_TYPE && key.verify(self.message().as_bytes(), &signature).is_ok()
    }

    /// The checkpoint as one JSON line (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Writes checkpoints of one database's chain to the configured sinks.
#[derive(Debug)]
pub struct CheckpointWriter {
    store: Store,
    signer: AuditSigner,
    file: PathBuf,
    command: Option<String>,
    interval: Duration,
    last: tokio::sync::Mutex<Option<(i64, String)>>,
}

impl CheckpointWriter {
    /// A writer for `store`'s chain, signing with `signer`, to the sinks in `config`. Opens
    /// the checkpoint file once (creating it) so a sink that cannot be written fails at start.
    ///
    /// # Errors
    /// [`AnchorError::Sink`].
    pub async fn open(
        store: Store,
        signer: AuditSigner,
        config: &AuditConfig,
        data_dir: &Path,
    ) -> Result<Self, AnchorError> {
        let file = config.checkpoint_path(data_dir);
        append_file(&file)
            .await
            .map_err(|source| AnchorError::Sink {
                path: file.clone(),
                source,
            })?;
        Ok(Self {
            store,
            signer,
            file,
            command: config
                .checkpoint_command
                .clone()
                .filter(|c| !c.trim().is_empty()),
            interval: Duration::from_secs(config.checkpoint_interval_secs),
            last: tokio::sync::Mutex::new(None),
        })
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The signer.
    pub fn signer(&self) -> &AuditSigner {
        &self.signer
    }

    /// Reads the head and writes a checkpoint of it, whether or not the chain advanced.
    ///
    /// # Errors
    /// [`AnchorError::Store`]; [`AnchorError::Sink`]; [`AnchorError::Command`] (the file was
    /// written).
    pub async fn write(&self) -> Result<Checkpoint, AnchorError> {
        let mut last = self.last.lock().await;
        self.write_locked(&mut last).await
    }

    /// Writes a checkpoint when the head moved since this writer's last one (or it wrote none).
    ///
    /// # Errors
    /// As [`CheckpointWriter::write`].
    pub async fn write_if_advanced(&self) -> Result<Option<Checkpoint>, AnchorError> {
        let mut last = self.last.lock().await;
        let head = self.store.audit_head().await?;
        if last.as_ref() == Some(&head) {
            return Ok(None);
        }
        self.write_locked(&mut last).await.map(Some)
    }

    async fn write_locked(
        &self,
        last: &mut Option<(i64, String)>,
    ) -> Result<Checkpoint, AnchorError> {
        let (seq, head) = self.store.audit_head().await?;
        // The head may be committed and not yet durable (an append waiting for its fsync, or
        // another process's): a checkpoint must never sign rows a power loss could take back.
        self.store.written().await.map_err(StoreError::from)?;
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let checkpoint = self.signer.sign(seq, &head, &at);
        let line = format!("{}\n", checkpoint.to_line());
        let mut file = append_file(&self.file)
            .await
            .map_err(|source| AnchorError::Sink {
                path: self.file.clone(),
                source,
            })?;
        // One write of the whole line: O_APPEND keeps lines of several processes whole.
        file.write_all(line.as_bytes())
            .await
            .and(file.sync_data().await)
            .map_err(|source| AnchorError::Sink {
                path: self.file.clone(),
                source,
            })?;
        *last = Some((seq, head));
        if let Some(command) = &self.command {
            run_command(command, &line).await?;
        }
        Ok(checkpoint)
    }

    /// Starts the schedule: a checkpoint now, then every interval when the chain advanced.
    /// [`CheckpointSchedule::finish`] stops it and writes the shutdown checkpoint.
    pub fn start(self: &Arc<Self>) -> CheckpointSchedule {
        let cancel = CancellationToken::new();
        let writer = self.clone();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            writer.scheduled().await;
            if writer.interval.is_zero() {
                return;
            }
            let mut ticks = tokio::time::interval(writer.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => writer.scheduled().await,
                }
            }
        });
        CheckpointSchedule {
            writer: self.clone(),
            cancel,
            task,
        }
    }

    async fn scheduled(&self) {
        if let Err(error) = self.write_if_advanced().await {
            tracing::error!(%error, "audit checkpoint failed");
        }
    }
}

/// A running checkpoint schedule.
#[derive(Debug)]
pub struct CheckpointSchedule {
    writer: Arc<CheckpointWriter>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl CheckpointSchedule {
    /// Stops the schedule and writes the shutdown checkpoint (when the chain advanced since
    /// the last one). Call it after the last audited call finished. Failures are logged.
    pub async fn finish(self) {
        self.cancel.cancel();
        let _ = self.task.await;
        match self.writer.write_if_advanced().await {
            Ok(Some(c)) => tracing::info!(
                seq = c.seq,
                file = %self.writer.path().display(),
                "wrote the shutdown audit checkpoint"
            ),
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "the shutdown audit checkpoint failed"),
        }
    }
}

async fn append_file(path: &Path) -> std::io::Result<tokio::fs::File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .await
}

async fn run_command(command: &str, line: &str) -> Result<(), AnchorError> {
    let fail = |reason: String| AnchorError::Command(reason);
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start `sh -c`: {e}")))?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| fail(format!("cannot write to it: {e}")))?;
        }
        child
            .wait()
            .await
            .map_err(|e| fail(format!("cannot wait for it: {e}")))
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(fail(format!("it exited with {status}"))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(fail(format!(
            "it did not finish within {} s",
            COMMAND_TIMEOUT.as_secs()
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Verification

/// A checkpoint as read from a file, with where it was.
#[derive(Debug, Clone)]
pub struct FoundCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The file.
    pub file: PathBuf,
    /// Its line (from 1).
    pub line: usize,
}

/// What [`verify`] found wrong. Each names the cut in capitals, as `audit verify` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The log is empty, but a checkpoint records entries.
    Deleted {
        /// The longest checkpointed length.
        checkpoint_seq: i64,
        /// When that checkpoint was signed.
        at: String,
    },
    /// The log is shorter than a checkpoint.
    Truncated {
        /// Entries in the log.
        entries: i64,
        /// The longest checkpointed length.
        checkpoint_seq: i64,
        /// When that checkpoint was signed.
        at: String,
    },
    /// An entry's hash differs from the one a checkpoint recorded at its position.
    Rewritten {
        /// The first checkpointed position that differs.
        seq: i64,
        /// When that checkpoint was signed.
        at: String,
        /// The last checkpointed position below it that still matches (0: none).
        last_good: i64,
    },
    /// A checkpointed entry is missing while later ones exist.
    Missing {
        /// The position.
        seq: i64,
        /// When the checkpoint was signed.
        at: String,
    },
    /// A checkpoint whose signature no given public key verifies.
    Forged {
        /// The file.
        file: PathBuf,
        /// Its line.
        line: usize,
        /// The length it claims.
        seq: i64,
        /// The key id it claims.
        key_id: String,
    },
    /// A line that is not a checkpoint.
    Unreadable {
        /// The file.
        file: PathBuf,
        /// Its line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// Checkpoints exist but no public key was available to check them.
    NoPublicKey {
        /// How many checkpoints went unchecked.
        checkpoints: usize,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Deleted { checkpoint_seq, at } => write!(
                f,
                "audit log DELETED: the log is empty, but a checkpoint signed at {at} records {}",
                entries_text(*checkpoint_seq)
            ),
            Finding::Truncated {
                entries,
                checkpoint_seq,
                at,
            } => write!(
                f,
                "audit log TRUNCATED: the log has {}, but a checkpoint signed at {at} records {}: entries {} to {checkpoint_seq} were deleted",
                entries_text(*entries),
                entries_text(*checkpoint_seq),
                entries + 1
            ),
            Finding::Rewritten { seq, at, last_good } => write!(
                f,
                "audit log REWRITTEN: entry {seq} does not have the hash a checkpoint signed at {at} records for it; entries {} to {seq} were edited, replaced or deleted and the hashes after them recomputed (the last checkpoint that still matches is at entry {last_good})",
                last_good + 1
            ),
            Finding::Missing { seq, at } => write!(
                f,
                "audit log entry {seq}, recorded by a checkpoint signed at {at}, is MISSING"
            ),
            Finding::Forged {
                file,
                line,
                seq,
                key_id,
            } => write!(
                f,
                "FORGED checkpoint at {}:{line} (claims {seq} entries, key id {key_id}): no trusted public key verifies its signature; it was not signed by the audit signing key you verify with",
                file.display()
            ),
            Finding::Unreadable { file, line, reason } => write!(
                f,
                "unreadable checkpoint at {}:{line}: {reason}",
                file.display()
            ),
            Finding::NoPublicKey { checkpoints } => write!(
                f,
                "{checkpoints} checkpoints cannot be checked: no public key; pass --public-key (as `paywarden audit public-key` prints it) or set audit.public_keys"
            ),
        }
    }
}

/// `1 entry`, `N entries`.
pub(crate) fn entries_text(n: i64) -> String {
    if n == 1 {
        "1 entry".into()
    } else {
        format!("{n} entries")
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Entries in the log.
    pub entries: i64,
    /// The chain's first break, if any.
    pub chain_break: Option<ChainBreak>,
    /// Checkpoints whose signature verified.
    pub trusted: usize,
    /// The trusted checkpoint with the longest length (latest written among equals).
    pub latest: Option<FoundCheckpoint>,
    /// What is wrong besides the chain break.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether the chain is intact and agrees with every trusted checkpoint, and every
    /// checkpoint is trusted.
    pub fn is_ok(&self) -> bool {
        self.chain_break.is_none() && self.findings.is_empty()
    }
}

/// Reads checkpoint files; a missing file has none (`Ok` with no lines) unless `required`.
///
/// # Errors
/// [`AnchorError::ReadCheckpoints`].
pub fn read_checkpoints(
    file: &Path,
    required: bool,
) -> Result<(Vec<FoundCheckpoint>, Vec<Finding>), AnchorError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
        Err(source) => {
            return Err(AnchorError::ReadCheckpoints {
                path: file.to_path_buf(),
                source,
            })
        }
    };
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Checkpoint>(line) {
            Ok(checkpoint) => found.push(FoundCheckpoint {
                checkpoint,
                file: file.to_path_buf(),
                line: index + 1,
            }),
            Err(e) => unreadable.push(Finding::Unreadable {
                file: file.to_path_buf(),
                line: index + 1,
                reason: e.to_string(),
            }),
        }
    }
    Ok((found, unreadable))
}

/// Checks `store`'s chain, then the chain against every checkpoint in `checkpoints` whose
/// signature one of `keys` verifies. Checkpoints that none verifies are [`Finding::Forged`].
///
/// # Errors
/// [`AnchorError::Store`].
pub async fn verify(
    store: &Store,
    checkpoints: Vec<FoundCheckpoint>,
    keys: &[VerifyingKey],
) -> Result<Report, AnchorError> {
    let chain_break = store.verify_audit().await?;
    let hashes: BTreeMap<i64, String> = store
        .audit_records(None)
        .await?
        .into_iter()
        .map(|r| (r.seq, r.hash))
        .collect();
    let entries = i64::try_from(hashes.len()).unwrap_or(i64::MAX);
    let last_seq = hashes.keys().next_back().copied().unwrap_or(0);
    let mut findings = Vec::new();
    if keys.is_empty() && !checkpoints.is_empty() {
        findings.push(Finding::NoPublicKey {
            checkpoints: checkpoints.len(),
        });
    }
    let mut trusted = Vec::new();
    // The same line in several files (the box's and a shipped copy) is checked once.
    let mut checked: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    for found in checkpoints {
        if keys.is_empty() {
            continue;
        }
        let line = found.checkpoint.to_line();
        let valid = *checked
            .entry(line)
            .or_insert_with(|| keys.iter().any(|k| found.checkpoint.verifies_with(k)));
        if valid {
            trusted.push(found);
        } else {
            findings.push(Finding::Forged {
                file: found.file.clone(),
                line: found.line,
                seq: found.checkpoint.seq,
                key_id: found.checkpoint.key_id.chars().take(64).collect(),
            });
        }
    }
    // Stable sort by length; among equal lengths the latest read wins `latest`.
    trusted.sort_by_key(|f| f.checkpoint.seq);
    let mut longest: Option<&FoundCheckpoint> = None;
    let mut first_rewritten: Option<(i64, String)> = None;
    for found in &trusted {
        let c = &found.checkpoint;
        if c.seq > last_seq {
            longest = Some(found);
            continue;
        }
        let matches = if c.seq == 0 {
            c.head == GENESIS
        } else {
            match hashes.get(&c.seq) {
                Some(hash) => *hash == c.head,
                None => {
                    findings.push(Finding::Missing {
                        seq: c.seq,
                        at: c.at.clone(),
                    });
                    continue;
                }
            }
        };
        if !matches && first_rewritten.is_none() {
            first_rewritten = Some((c.seq, c.at.clone()));
        }
    }
    if let Some((seq, at)) = first_rewritten {
        let last_good = trusted
            .iter()
            .map(|f| &f.checkpoint)
            .filter(|c| c.seq < seq && c.seq <= last_seq)
            .filter(|c| c.seq == 0 || hashes.get(&c.seq) == Some(&c.head))
            .map(|c| c.seq)
            .max()
            .unwrap_or(0);
        findings.push(Finding::Rewritten { seq, at, last_good });
    }
    if let Some(found) = longest {
        let c = &found.checkpoint;
        findings.push(if hashes.is_empty() {
            Finding::Deleted {
                checkpoint_seq: c.seq,
                at: c.at.clone(),
            }
        } else {
            Finding::Truncated {
                entries,
                checkpoint_seq: c.seq,
                at: c.at.clone(),
            }
        });
    }
    let latest = trusted.last().cloned();
    Ok(Report {
        entries,
        chain_break,
        trusted: trusted.len(),
        latest,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_checkpoint_signs_only_a_head_that_is_durable() {
        // The head may be committed by an append still waiting for its fsync (or by another
        // process): the writer waits for an fsync that starts after it read the head.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("paywarden.db")).await.unwrap();
        let writer = CheckpointWriter::open(
            store.clone(),
            signer(1),
            &AuditConfig::default(),
            dir.path(),
        )
        .await
        .unwrap();
        let (before, _) = store.durability().await.unwrap();
        writer.write().await.unwrap();
        let (noted, synced) = store.durability().await.unwrap();
        assert_eq!(noted, before + 1, "the checkpoint waited for an fsync");
        assert!(synced >= noted);
    }

    fn signer(byte: u8) -> AuditSigner {
        AuditSigner::from_seed([byte; 32], "test".into())
    }

    #[test]
    fn a_checkpoint_verifies_with_its_key_only_and_not_once_changed() {
        let a = signer(1);
        let b = signer(2);
        let c = a.sign(3, &"ab".repeat(32), "2026-01-01T00:00:00.000000Z");
        assert!(c.verifies_with(&a.verifying_key()));
        assert!(!c.verifies_with(&b.verifying_key()));
        let mut longer = c.clone();
        longer.seq = 4;
        assert!(!longer.verifies_with(&a.verifying_key()));
        let line = c.to_line();
        let back: Checkpoint = serde_json::from_str(&line).unwrap();
        assert_eq!(back, c);
        assert!(line.starts_with(r#"{"type":"paywarden.audit.checkpoint.v1","seq":3,"#));
    }

    #[test]
    fn public_keys_parse_from_text_and_reject_garbage() {
        let a = signer(1);
        let parsed = parse_public_key(&a.public_key()).unwrap();
        assert_eq!(parsed, a.verifying_key());
        assert!(parse_public_key("not a key").is_err());
        assert!(parse_public_key(&b64().encode([1u8; 31])).is_err());
    }

    #[test]
    fn key_ids_are_keyed_stable_and_reveal_nothing() {
        let a = signer(1).key_ids();
        let b = signer(2).key_ids();
        assert_eq!(a.id("PWD-100001"), signer(1).key_ids().id("PWD-100001"));
        assert_ne!(a.id("PWD-100001"), b.id("PWD-100001"));
        assert_ne!(a.id("PWD-100001"), a.id("PWD-100002"));
        assert_eq!(a.id("PWD-100001").len(), 32);
        let unsalted = hex::encode(Sha256::digest(b"PWD-100001"));
        assert!(!unsalted.starts_with(&a.id("PWD-100001")));
        assert!(!format!("{a:?}").contains(&hex::encode(a.key)));
    }

    #[test]
    fn the_signing_key_is_never_serialised_or_debug_printed() {
        let config = AuditConfig {
            signing_key: Some(SecretString::from(b64().encode([5u8; 32]))),
            ..AuditConfig::default()
        };
        let shown = format!("{config:?}") + &serde_json::to_string(&config).unwrap();
        assert!(!shown.contains(&b64().encode([5u8; 32])), "{shown}");
        let signer = AuditSigner::load(&config, Path::new("/nonexistent"))
            .unwrap()
            .unwrap();
        assert!(!format!("{signer:?}").contains(&b64().encode([5u8; 32])));
    }

    #[test]
    fn a_bad_seed_is_named_by_where_it_came_from_not_by_its_value() {
        let err = AuditSigner::from_text("s3cret-but-short", "PAYWARDEN_X".into()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("PAYWARDEN_X") && !text.contains("s3cret"),
            "{text}"
        );
    }
}
