//! `paywarden ifthenpay ...`: play the shopper against the ifthenpay emulator, and the demo keys
//! the banner prints.
//!
//! ```text
//! paywarden ifthenpay shopper pay    --request-id ID | --reference REF | --pin-code PIN [--method CCARD]
//! paywarden ifthenpay shopper reject --request-id ID          (MB WAY only)
//! paywarden ifthenpay shopper expire --request-id ID | --reference REF
//! ```
//!
//! The emulator is found at `--emulator-url`, else in `<data-dir>/emulator.url`, which `serve`
//! and `emulator` write when they start it.

use std::path::Path;

use serde_json::{json, Value};

/// What the shopper does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShopperAction {
    /// Pay (ATM, Payshop agent, MB WAY app, checkout page); the emulator then calls paywarden back.
    Pay,
    /// Reject an MB WAY request in the app.
    Reject,
    /// Let the request expire (MB WAY's 4 minutes, a reference's expiry date).
    Expire,
}

/// `paywarden ifthenpay` sub-commands.
#[derive(Debug, clap::Subcommand)]
pub enum IfthenpayAction {
    /// Play the shopper: pay, reject or let expire a pending payment request in the emulator.
    Shopper {
        /// pay, reject or expire.
        #[arg(value_enum)]
        action: ShopperAction,
        /// The request id a tool returned (request_id).
        #[arg(long)]
        request_id: Option<String>,
        /// A Multibanco or Payshop reference.
        #[arg(long)]
        reference: Option<String>,
        /// A PinPay PIN code.
        #[arg(long)]
        pin_code: Option<String>,
        /// For PinPay links: the method the shopper pays with (MB, MBWAY, CCARD, ...; default CCARD).
        #[arg(long)]
        method: Option<String>,
        /// The emulator's base URL [default: read from <data-dir>/emulator.url].
        #[arg(long)]
        emulator_url: Option<String>,
    },
}

/// The demo keys of the emulator, as `(argument, key)` pairs, for the banner and the README.
pub fn demo_keys() -> [(&'static str, &'static str); 9] {
    use paywarden_emulator as e;
    [
        ("mb_key", e::IFTHENPAY_MB_KEY),
        ("mbway_key", e::IFTHENPAY_MBWAY_KEY),
        ("payshop_key", e::IFTHENPAY_PAYSHOP_KEY),
        ("ccard_key", e::IFTHENPAY_CCARD_KEY),
        ("gateway_key", e::IFTHENPAY_GATEWAY_KEY),
        ("cofidis_key", e::IFTHENPAY_COFIDIS_KEY),
        ("pix_key", e::IFTHENPAY_PIX_KEY),
        ("bo_key", e::IFTHENPAY_BACKOFFICE_KEY),
        ("anti_phishing_key", e::IFTHENPAY_ANTI_PHISHING_KEY),
    ]
}

/// Runs `paywarden ifthenpay ...`; returns the process exit code.
///
/// # Errors
/// When the emulator cannot be found or reached.
pub async fn run(action: IfthenpayAction, data_dir: &Path) -> anyhow::Result<i32> {
    let IfthenpayAction::Shopper {
        action,
        request_id,
        reference,
        pin_code,
        method,
        emulator_url,
    } = action;
    let base = match emulator_url {
        Some(url) => url,
        None => {
            let file = data_dir.join(crate::app::EMULATOR_URL_FILE);
            std::fs::read_to_string(&file)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "no emulator address in {} ({e}): start `paywarden serve` (or `paywarden emulator`) with this --data-dir, or pass --emulator-url",
                        file.display()
                    )
                })?
                .trim()
                .to_string()
        }
    };
    if request_id.is_none() && reference.is_none() && pin_code.is_none() {
        anyhow::bail!("name the payment request: --request-id, --reference or --pin-code");
    }
    let action = match action {
        ShopperAction::Pay => "pay",
        ShopperAction::Reject => "reject",
        ShopperAction::Expire => "expire",
    };
    let mut body = json!({ "action": action });
    for (name, value) in [
        ("request_id", request_id),
        ("reference", reference),
        ("pin_code", pin_code),
        ("method", method),
    ] {
        if let Some(v) = value {
            body[name] = json!(v);
        }
    }
    let response = reqwest::Client::new()
        .post(format!(
            "{}/sandbox/ifthenpay/shopper",
            base.trim_end_matches('/')
        ))
        .json(&body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("the emulator at {base} could not be reached: {e}"))?;
    let ok = response.status().is_success();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_default()
    );
    Ok(if ok { 0 } else { 1 })
}
