//! `paywarden receipt verify|show|export`: signed receipts ([`crate::receipts`]).
//!
//! `verify FILE` works offline (no database, no server): it exits 0 when the receipt's
//! signature holds (by the embedded key, and with `--public-key` by one of those keys), 1 when
//! it does not, naming what is wrong, and 2 when the file or a key cannot be used. `show` and
//! `export` read the receipts paywarden stored.

use std::{fmt::Write as _, io::Write as _, path::PathBuf};

use crate::{receipts, store::Store};

/// Exit code of `verify` when the receipt does not verify.
pub const EXIT_FAILED: i32 = 1;
/// Exit code when a file, a key or a receipt id cannot be used.
pub const EXIT_USAGE: i32 = 2;

/// The `receipt` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ReceiptAction {
    /// Check a receipt (a JSON file, or `-` for stdin) offline: exits 0 when its signature
    /// holds, 1 naming what is wrong (edited, another key), 2 when it cannot be read.
    Verify {
        /// The receipt: a JSON file as `receipt show` or a tool result's
        /// `structuredContent.receipt` gives it.
        file: PathBuf,
        /// Public key(s) to trust: base64 as `paywarden audit public-key` prints it (or as
        /// `GET /.well-known/paywarden/receipt-keys.json` publishes it), or a file holding it
        /// [default: the key embedded in the receipt, which proves it unedited but not who
        /// signed it].
        #[arg(long = "public-key", value_name = "KEY")]
        public_keys: Vec<String>,
    },
    /// Print one stored receipt as JSON (exit 2 when there is none).
    Show {
        /// The receipt id (`rcpt_...`).
        id: String,
        /// Only when it belongs to this entity.
        #[arg(long)]
        entity: Option<String>,
    },
    /// Write every stored receipt as JSON Lines to stdout, oldest first.
    Export {
        /// Only this entity's receipts.
        #[arg(long)]
        entity: Option<String>,
    },
}

/// Why a `receipt` subcommand could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptCliError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Checks the receipt in `file` (`-`: stdin) against `public_keys` (none: the embedded key);
/// returns the exit code, what to print on stdout, and on stderr.
pub fn verify_file(file: &std::path::Path, public_keys: &[String]) -> (i32, String, String) {
    let mut trusted = Vec::new();
    for key in public_keys {
        match crate::audit_anchor::parse_public_key(key) {
            Ok(k) => trusted.push(k),
            Err(e) => return (EXIT_USAGE, String::new(), format!("error: {e}\n")),
        }
    }
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
    } else {
        std::fs::read_to_string(file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            return (
                EXIT_USAGE,
                String::new(),
                format!("error: cannot read {}: {e}\n", file.display()),
            )
        }
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return (
                EXIT_USAGE,
                String::new(),
                format!(
                    "error: {} is not JSON ({e}); pass the receipt object as `paywarden receipt show` prints it\n",
                    file.display()
                ),
            )
        }
    };
    // A whole tool result (structuredContent) is accepted too: its `receipt` member.
    let value = match value.get("receipt") {
        Some(inner) if inner.is_object() => inner.clone(),
        _ => value,
    };
    let id = value
        .get("id")
        .and_then(|v| v.as_str())
        .unwrap_or("(no id)")
        .chars()
        .take(80)
        .collect::<String>();
    match receipts::verify(&value, &trusted) {
        Ok(key_id) => {
            let amount = &value["amount"];
            let mut out = format!(
                "OK: receipt {id} is intact: {} of {} {} by entity {}, audit entry {}; signed by key id {key_id}",
                value["tool"].as_str().unwrap_or_default(),
                amount["minor"],
                amount["currency"].as_str().unwrap_or_default(),
                value["entity"].as_str().unwrap_or_default(),
                value["audit"]["seq"],
            );
            if trusted.is_empty() {
                out.push_str(" (the key embedded in the receipt: pass --public-key with your server's key to prove who signed it)");
            } else {
                out.push_str(" (a trusted key)");
            }
            out.push('\n');
            (0, out, String::new())
        }
        Err(e) => (
            EXIT_FAILED,
            String::new(),
            format!("INVALID receipt {id}: {e}\n"),
        ),
    }
}

/// Runs a `show` or `export` subcommand against `store`; returns the exit code. (`verify`
/// needs no store: [`verify_file`].)
///
/// # Errors
/// [`ReceiptCliError`] when the database fails.
pub async fn run(store: &Store, action: ReceiptAction) -> Result<i32, ReceiptCliError> {
    let (code, stdout, stderr) = match action {
        ReceiptAction::Verify { file, public_keys } => verify_file(&file, &public_keys),
        ReceiptAction::Show { id, entity } => match store.receipt(&id, entity.as_deref()).await? {
            Some(r) => (
                0,
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&r.body)
                        .map_err(crate::store::StoreError::from)?
                ),
                String::new(),
            ),
            None => (
                EXIT_USAGE,
                String::new(),
                format!(
                    "error: no receipt {id:?}{}; `paywarden receipt export` lists them\n",
                    entity
                        .map(|e| format!(" for entity {e:?}"))
                        .unwrap_or_default()
                ),
            ),
        },
        ReceiptAction::Export { entity } => {
            let mut out = String::new();
            for r in store.receipts(entity.as_deref()).await? {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&r.body).map_err(crate::store::StoreError::from)?
                );
            }
            (0, out, String::new())
        }
    };
    let _ = std::io::stdout().write_all(stdout.as_bytes());
    let _ = std::io::stderr().write_all(stderr.as_bytes());
    Ok(code)
}
