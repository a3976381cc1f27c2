//! `paywarden audit verify|export|checkpoint|public-key`: the audit log and its signed
//! checkpoints ([`crate::audit_anchor`]) from the server's shell.
//!
//! `verify` exits 0 when the chain is intact and agrees with every checkpoint, 1 when anything
//! is wrong, each cut named in capitals on stderr (`BROKEN`, `TRUNCATED`, `DELETED`,
//! `REWRITTEN`, `MISSING`, `FORGED`); a public key or checkpoint file that cannot be used is
//! a usage error, exit 2.

use std::{fmt::Write as _, io::Write as _, path::PathBuf};

use crate::{
    audit_anchor::{self, AnchorError, AuditSigner, CheckpointWriter},
    config::Config,
    store::Store,
};

/// Exit code of `verify` when the log or a checkpoint fails verification.
pub const EXIT_FAILED: i32 = 1;
/// Exit code of `verify` when a public key or a named checkpoint file cannot be used.
pub const EXIT_USAGE: i32 = 2;

/// The `audit` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum AuditAction {
    /// Check the hash chain and the signed checkpoints; exits 1 and names what is wrong: an
    /// edited or missing entry, a truncated, deleted or rewritten log, a forged checkpoint.
    Verify {
        /// Checkpoint file(s) to check against, e.g. a copy shipped off this host
        /// [default: the configured audit.checkpoint_file].
        #[arg(long = "checkpoints", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// Public key(s) to check signatures with: base64 as `paywarden audit public-key`
        /// prints it, or a file holding it [default: audit.public_keys, else this host's key].
        #[arg(long = "public-key", value_name = "KEY")]
        public_keys: Vec<String>,
        /// Fail when there is no checkpoint at all (the chain is then not anchored).
        #[arg(long)]
        require_checkpoint: bool,
    },
    /// Write every entry as JSON Lines to stdout.
    Export,
    /// Sign a checkpoint of the chain's head now and append it to the configured sinks; prints
    /// it. Creates the signing key when absent.
    Checkpoint {
        /// Record this host's signing key as the database's checkpoint key (after replacing
        /// the key on purpose); without it a different key is refused.
        #[arg(long)]
        adopt_key: bool,
    },
    /// Print the signing key's id and public key. Keep the public key off this host:
    /// `audit verify --public-key` then detects a replaced key. Creates nothing: exits 2 when
    /// there is no key yet.
    PublicKey,
}

/// Runs an `audit` subcommand against `store`; returns the exit code.
///
/// # Errors
/// [`AnchorError`] when the database, the key or a checkpoint file fails.
pub async fn run(store: &Store, config: &Config, action: AuditAction) -> Result<i32, AnchorError> {
    let (code, stdout, stderr) = match action {
        AuditAction::Verify {
            checkpoints,
            public_keys,
            require_checkpoint,
        } => match verify(store, config, checkpoints, public_keys, require_checkpoint).await {
            Err(e @ (AnchorError::BadPublicKey(_) | AnchorError::ReadCheckpoints { .. })) => {
                (EXIT_USAGE, String::new(), format!("error: {e}\n"))
            }
            other => other?,
        },
        AuditAction::Export => {
            let mut out = String::new();
            for record in store.audit_records(None).await? {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&record).map_err(crate::store::StoreError::from)?
                );
            }
            (0, out, String::new())
        }
        AuditAction::Checkpoint { adopt_key } => {
            let signer = AuditSigner::load_or_create(&config.audit, &config.data_dir)?;
            signer.check_database(store, adopt_key).await?;
            let writer =
                CheckpointWriter::open(store.clone(), signer, &config.audit, &config.data_dir)
                    .await?;
            let checkpoint = writer.write().await?;
            let stderr = format!(
                "wrote a checkpoint of {} entries to {}\n",
                checkpoint.seq,
                writer.path().display()
            );
            (0, format!("{}\n", checkpoint.to_line()), stderr)
        }
        AuditAction::PublicKey => match AuditSigner::load(&config.audit, &config.data_dir)? {
            Some(signer) => (
                0,
                format!(
                    "key id: {}\npublic key: {}\nsigning key: {}\n",
                    signer.key_id(),
                    signer.public_key(),
                    signer.origin()
                ),
                String::new(),
            ),
            None => (
                EXIT_USAGE,
                String::new(),
                format!(
                    "error: no audit signing key: {} does not exist and PAYWARDEN_AUDIT__SIGNING_KEY is unset; `paywarden serve` (or `paywarden audit checkpoint`) creates the file, or pass the --data-dir / --config of the server\n",
                    config.audit.key_file(&config.data_dir).display()
                ),
            ),
        },
    };
    // A closed stdout or stderr (e.g. `| head`) is not an error of the command.
    let _ = std::io::stdout().write_all(stdout.as_bytes());
    let _ = std::io::stderr().write_all(stderr.as_bytes());
    Ok(code)
}

async fn verify(
    store: &Store,
    config: &Config,
    files: Vec<PathBuf>,
    public_keys: Vec<String>,
    require_checkpoint: bool,
) -> Result<(i32, String, String), AnchorError> {
    let (files, explicit) = if files.is_empty() {
        (vec![config.audit.checkpoint_path(&config.data_dir)], false)
    } else {
        (files, true)
    };
    let (keys, key_source) = if !public_keys.is_empty() {
        (
            parse_keys(&public_keys)?,
            "the public key(s) given with --public-key".to_string(),
        )
    } else if !config.audit.public_keys.is_empty() {
        (
            parse_keys(&config.audit.public_keys)?,
            "audit.public_keys".to_string(),
        )
    } else {
        match AuditSigner::load(&config.audit, &config.data_dir)? {
            Some(signer) => (
                vec![signer.verifying_key()],
                format!(
                    "this host's signing key ({}); pass --public-key with a copy kept elsewhere to rule out a replaced key",
                    signer.origin()
                ),
            ),
            None => (Vec::new(), String::new()),
        }
    };
    let mut checkpoints = Vec::new();
    let mut unreadable = Vec::new();
    for file in &files {
        let (found, bad) = audit_anchor::read_checkpoints(file, explicit)?;
        checkpoints.extend(found);
        unreadable.extend(bad);
    }
    let any_checkpoint = !checkpoints.is_empty();
    let mut report = audit_anchor::verify(store, checkpoints, &keys).await?;
    report.findings.extend(unreadable);

    let mut stdout = String::new();
    let mut stderr = String::new();
    let files_text = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if !report.is_ok() {
        let _ = writeln!(
            stderr,
            "audit log FAILED verification ({}):",
            audit_anchor::entries_text(report.entries)
        );
        if let Some(b) = &report.chain_break {
            let _ = writeln!(
                stderr,
                "  audit chain BROKEN at entry {}: {}",
                b.seq, b.reason
            );
        }
        for finding in &report.findings {
            let _ = writeln!(stderr, "  {finding}");
        }
        let _ = writeln!(stderr, "checkpoints: {files_text}");
        if !key_source.is_empty() {
            let _ = writeln!(stderr, "signatures checked with {key_source}");
        }
        return Ok((EXIT_FAILED, stdout, stderr));
    }
    let _ = writeln!(stdout, "audit chain intact: {} entries", report.entries);
    match &report.latest {
        Some(latest) => {
            let c = &latest.checkpoint;
            let _ = writeln!(
                stdout,
                "anchored: agrees with {} signed checkpoint{} in {files_text} (the latest: {} at {}, key id {})",
                report.trusted,
                if report.trusted == 1 { "" } else { "s" },
                audit_anchor::entries_text(c.seq),
                c.at,
                c.key_id
            );
            let _ = writeln!(stdout, "signatures checked with {key_source}");
            Ok((0, stdout, stderr))
        }
        None => {
            debug_assert!(!any_checkpoint);
            let _ = writeln!(
                stderr,
                "warning: NOT ANCHORED: no checkpoints in {files_text}; the chain's links are intact, but a cut at its end or a recomputed rewrite would go unnoticed (see docs/deploy.md, \"Audit checkpoints\")"
            );
            Ok((
                if require_checkpoint { EXIT_FAILED } else { 0 },
                stdout,
                stderr,
            ))
        }
    }
}

fn parse_keys(texts: &[String]) -> Result<Vec<ed25519_dalek::VerifyingKey>, AnchorError> {
    texts
        .iter()
        .map(|t| audit_anchor::parse_public_key(t))
        .collect()
}
