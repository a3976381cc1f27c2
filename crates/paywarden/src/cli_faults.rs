//! `paywarden faults ...`: arm the emulator's sandbox failure injection (docs/emulator.md,
//! "Failure injection").
//!
//! ```text
//! paywarden faults arm --provider stripe --method POST --path /v1/refunds --kind error_after_commit [--status 500]
//! paywarden faults arm --path '/v1/payments/*' --kind throttle --retry-after-s 2 --times 3
//! paywarden faults arm --path /v1/refunds --kind refund_pending [--then failed --after-ms 5000]
//! paywarden faults list | clear
//! paywarden faults resolve-refund re_123 --status failed [--failure-reason expired_or_canceled_card]
//! ```
//!
//! The emulator is found at `--emulator-url`, else in `<data-dir>/emulator.url`. Sandbox only:
//! the command refuses an address that is not the emulator (an answer without
//! `X-Paywarden-Sandbox: true`), so it can never be pointed at a real provider.

use std::path::Path;

use serde_json::{json, Value};

/// What the next matching request suffers (the emulator's `FaultAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    /// Handled, then the answer is held (`--hold-ms`): the client times out.
    TimeoutAfterCommit,
    /// Handled, then answered with a 5xx (`--status`).
    ErrorAfterCommit,
    /// Handled, then the connection is cut mid-answer.
    ResetAfterCommit,
    /// HTTP 409: the same idempotency key is in flight (handled in the background).
    Conflict,
    /// HTTP 429 with `Retry-After` (`--retry-after-s`): not processed.
    Throttle,
    /// Delivered late: held `--delay-ms` before it is handled.
    Delay,
    /// Stripe `POST /v1/refunds`: the refund is left `pending` (`--then`, `--after-ms`).
    RefundPending,
    /// OPP `POST /v1/payments*`: answered `000.200.000` transaction pending (`--then`
    /// succeeded|declined, `--after-ms`; or settle it with `POST /__emulator/opp/payments/{id}`).
    OppPending,
}

/// `paywarden faults` sub-commands.
#[derive(Debug, clap::Subcommand)]
pub enum FaultsAction {
    /// Arm a fault for the next matching request(s).
    Arm {
        /// opp, stripe or ifthenpay [default: any].
        #[arg(long)]
        provider: Option<String>,
        /// HTTP method, e.g. POST [default: any].
        #[arg(long)]
        method: Option<String>,
        /// Path pattern (`*` matches anything), e.g. /v1/refunds or '/v1/payments/*'.
        #[arg(long)]
        path: String,
        /// What happens.
        #[arg(long, value_enum)]
        kind: FaultKind,
        /// How many matching requests suffer it.
        #[arg(long, default_value_t = 1)]
        times: u32,
        /// error_after_commit: the 5xx status.
        #[arg(long)]
        status: Option<u16>,
        /// timeout_after_commit: how long the answer is held.
        #[arg(long)]
        hold_ms: Option<u64>,
        /// throttle, conflict: `Retry-After` seconds.
        #[arg(long)]
        retry_after_s: Option<u64>,
        /// delay: how long the request is held before it is handled.
        #[arg(long)]
        delay_ms: Option<u64>,
        /// refund_pending: what the refund becomes by itself (succeeded, failed, canceled);
        /// opp_pending: what the transaction becomes (succeeded, declined).
        #[arg(long)]
        then: Option<String>,
        /// refund_pending, opp_pending: after how long.
        #[arg(long)]
        after_ms: Option<u64>,
        /// The emulator's base URL [default: read from <data-dir>/emulator.url].
        #[arg(long)]
        emulator_url: Option<String>,
    },
    /// List the armed faults.
    List {
        /// The emulator's base URL [default: read from <data-dir>/emulator.url].
        #[arg(long)]
        emulator_url: Option<String>,
    },
    /// Disarm every fault.
    Clear {
        /// The emulator's base URL [default: read from <data-dir>/emulator.url].
        #[arg(long)]
        emulator_url: Option<String>,
    },
    /// Settle a Stripe refund the emulator left pending.
    ResolveRefund {
        /// The refund id (re_...).
        id: String,
        /// succeeded, failed or canceled.
        #[arg(long)]
        status: String,
        /// For failed: Stripe's failure_reason [default: unknown].
        #[arg(long)]
        failure_reason: Option<String>,
        /// The emulator's base URL [default: read from <data-dir>/emulator.url].
        #[arg(long)]
        emulator_url: Option<String>,
    },
}

fn base_url(given: Option<String>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(url) = given {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let file = data_dir.join(crate::app::EMULATOR_URL_FILE);
    Ok(std::fs::read_to_string(&file)
        .map_err(|e| {
            anyhow::anyhow!(
                "no emulator address in {} ({e}): start `paywarden serve` (or `paywarden emulator`) with this --data-dir, or pass --emulator-url",
                file.display()
            )
        })?
        .trim()
        .trim_end_matches('/')
        .to_string())
}

fn action_json(kind: FaultKind, a: &ArmOptions) -> Value {
    let mut v = match kind {
        FaultKind::TimeoutAfterCommit => json!({"kind": "timeout_after_commit"}),
        FaultKind::ErrorAfterCommit => json!({"kind": "error_after_commit"}),
        FaultKind::ResetAfterCommit => json!({"kind": "reset_after_commit"}),
        FaultKind::Conflict => json!({"kind": "conflict"}),
        FaultKind::Throttle => json!({"kind": "throttle"}),
        FaultKind::Delay => json!({"kind": "delay", "delay_ms": a.delay_ms.unwrap_or(0)}),
        FaultKind::RefundPending => json!({"kind": "refund_pending"}),
        FaultKind::OppPending => json!({"kind": "opp_pending"}),
    };
    for (name, value) in [
        ("status", a.status.map(Value::from)),
        ("hold_ms", a.hold_ms.map(Value::from)),
        ("retry_after_s", a.retry_after_s.map(Value::from)),
        ("then", a.then.clone().map(Value::from)),
        ("after_ms", a.after_ms.map(Value::from)),
    ] {
        if let Some(value) = value {
            v[name] = value;
        }
    }
    v
}

struct ArmOptions {
    status: Option<u16>,
    hold_ms: Option<u64>,
    retry_after_s: Option<u64>,
    delay_ms: Option<u64>,
    then: Option<String>,
    after_ms: Option<u64>,
}

/// Runs `paywarden faults ...`; returns the process exit code.
///
/// # Errors
/// When the emulator cannot be found or reached, or the address is not the emulator.
pub async fn run(action: FaultsAction, data_dir: &Path) -> anyhow::Result<i32> {
    let http = reqwest::Client::new();
    let (request, base) = match action {
        FaultsAction::Arm {
            provider,
            method,
            path,
            kind,
            times,
            status,
            hold_ms,
            retry_after_s,
            delay_ms,
            then,
            after_ms,
            emulator_url,
        } => {
            let base = base_url(emulator_url, data_dir)?;
            let options = ArmOptions {
                status,
                hold_ms,
                retry_after_s,
                delay_ms,
                then,
                after_ms,
            };
            let mut fault = json!({
                "path": path,
                "action": action_json(kind, &options),
                "times": times,
            });
            if let Some(p) = provider {
                fault["provider"] = json!(p.to_ascii_lowercase());
            }
            if let Some(m) = method {
                fault["method"] = json!(m.to_ascii_uppercase());
            }
            (
                http.post(format!("{base}/__emulator/faults")).json(&fault),
                base,
            )
        }
        FaultsAction::List { emulator_url } => {
            let base = base_url(emulator_url, data_dir)?;
            (http.get(format!("{base}/__emulator/faults")), base)
        }
        FaultsAction::Clear { emulator_url } => {
            let base = base_url(emulator_url, data_dir)?;
            (http.delete(format!("{base}/__emulator/faults")), base)
        }
        FaultsAction::ResolveRefund {
            id,
            status,
            failure_reason,
            emulator_url,
        } => {
            let base = base_url(emulator_url, data_dir)?;
            let mut body = json!({"status": status});
            if let Some(r) = failure_reason {
                body["failure_reason"] = json!(r);
            }
            (
                http.post(format!("{base}/__emulator/stripe/refunds/{id}"))
                    .json(&body),
                base,
            )
        }
    };
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("the emulator at {base} could not be reached: {e}"))?;
    let sandbox = response
        .headers()
        .get("x-paywarden-sandbox")
        .is_some_and(|v| v == "true");
    if !sandbox {
        anyhow::bail!(
            "{base} is not paywarden's emulator (no `X-Paywarden-Sandbox: true`): faults can only be injected in the sandbox"
        );
    }
    let ok = response.status().is_success();
    let text = response.text().await.unwrap_or_default();
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !answer.is_null() {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    }
    Ok(if ok { 0 } else { 1 })
}
