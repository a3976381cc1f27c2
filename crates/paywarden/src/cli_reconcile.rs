//! `paywarden reconcile [--acknowledge ID --as NAME]`: money-moving calls whose outcome paywarden
//! does not know yet, keys released after their settle window and watched for a late arrival,
//! and operations that reached a provider after their settle window (docs/architecture.md,
//! "Unknown outcomes"). For operators with access to the server's database.
//!
//! Exit code 0 when there is no unacknowledged late arrival, [`EXIT_LATE`] when there is one (a
//! script can alert on it); an `--acknowledge` of nothing is [`EXIT_LATE`] too.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::store::{AuditEntry, KeyState, Store, StoreError};

/// Exit code when a late arrival awaits review (or `--acknowledge` found none to acknowledge).
pub const EXIT_LATE: i32 = 1;

/// `paywarden reconcile`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ReconcileArgs {
    /// After reviewing a late arrival at the provider (and, for a duplicate, reversing it there
    /// if it should not stand), acknowledge it by its id or transaction id: `/readyz` stops
    /// warning about it. Recorded in the audit log.
    #[arg(long, value_name = "ID")]
    pub acknowledge: Option<String>,
    /// Who acknowledges (an operator's name), with --acknowledge.
    #[arg(long = "as", value_name = "NAME", requires = "acknowledge")]
    pub by: Option<String>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Runs the command against `store`; returns the exit code.
///
/// # Errors
/// [`StoreError`] when the database fails.
pub async fn run(store: &Store, args: ReconcileArgs) -> Result<i32, StoreError> {
    if let Some(id) = args.acknowledge {
        let by = args
            .by
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| "operator".into());
        let late = store.unacknowledged_late().await?;
        let Some(found) = late
            .iter()
            .find(|l| l.id == id || l.transaction_id.as_deref() == Some(id.as_str()))
        else {
            eprintln!(
                "no unacknowledged late arrival {id:?}: run `paywarden reconcile` to list them"
            );
            return Ok(EXIT_LATE);
        };
        store.acknowledge_late(&found.id, &by).await?;
        store
            .append_audit(&AuditEntry {
                entity_id: found.entity_id.clone(),
                client_name: None,
                toolset: found.toolset.clone(),
                tool: found.tool.clone(),
                arguments: serde_json::json!({ "idempotencyKey": found.key }),
                outcome: "late_acknowledged".into(),
                result_code: None,
                provider_request_id: None,
                transaction_id: found.transaction_id.clone(),
                message: Some(format!("late arrival acknowledged by {by}")),
                duration_ms: 0,
                sandbox: false,
            })
            .await?;
        println!(
            "acknowledged {} (transaction {}) as {by}",
            found.id,
            found.transaction_id.as_deref().unwrap_or("?")
        );
        return Ok(0);
    }
    print!("{}", report(store).await?.0);
    let unacknowledged = store.unacknowledged_late().await?.len();
    Ok(if unacknowledged > 0 { EXIT_LATE } else { 0 })
}

/// The report `paywarden reconcile` prints, and the number of unacknowledged late arrivals.
///
/// # Errors
/// [`StoreError`] when the database fails.
pub async fn report(store: &Store) -> Result<(String, usize), StoreError> {
    let now = Utc::now();
    let mut out = String::new();
    let keys = store.open_idempotency_keys().await?;
    let _ = writeln!(out, "Open idempotency keys: {}", keys.len());
    for k in &keys {
        let state = match k.state {
            KeyState::InProgress if k.lease_expired(now) => format!(
                "in progress, but its call stopped (lease ran out at {}): reconciled on the next call under the key",
                stamp(k.held_until())
            ),
            KeyState::InProgress => format!("in progress (held until {})", stamp(k.held_until())),
            _ => match k.settle_after {
                Some(t) if t > now => format!(
                    "UNKNOWN outcome: blocked until the provider shows it, or until {} with the provider showing nothing",
                    stamp(t)
                ),
                Some(_) => "UNKNOWN outcome: settle window over; the next call under the key releases it if the provider still shows nothing".into(),
                None => "UNKNOWN outcome recorded without an intent: check the provider by hand".into(),
            },
        };
        let _ = writeln!(
            out,
            "  entity {} key {:?} {}: {state}",
            k.entity_id, k.key, k.tool
        );
    }
    let late = store.late_outcomes().await?;
    let (found, watched): (Vec<_>, Vec<_>) = late.iter().partition(|l| l.transaction_id.is_some());
    let _ = writeln!(
        out,
        "Released keys watched for a late arrival: {}",
        watched.len()
    );
    for l in &watched {
        let _ = writeln!(
            out,
            "  entity {} key {:?} {}: released {}, watched until {}",
            l.entity_id,
            l.key,
            l.tool,
            stamp(l.released_at),
            stamp(l.watch_until)
        );
    }
    let unacknowledged = found.iter().filter(|l| l.acknowledged.is_none()).count();
    let _ = writeln!(
        out,
        "Late arrivals at the provider: {} ({unacknowledged} unacknowledged)",
        found.len()
    );
    for l in &found {
        let ack = match &l.acknowledged {
            Some((at, by)) => format!("acknowledged by {by} at {}", stamp(*at)),
            None => format!(
                "NOT acknowledged: review it at the provider, then `paywarden reconcile --acknowledge {} --as NAME`",
                l.id
            ),
        };
        let _ = writeln!(
            out,
            "  [{}] {} entity {} key {:?} {}: transaction {} found {}; {ack}",
            l.id,
            l.kind.as_deref().unwrap_or("late_arrival"),
            l.entity_id,
            l.key,
            l.tool,
            l.transaction_id.as_deref().unwrap_or("?"),
            l.found_at.map(stamp).unwrap_or_default()
        );
    }
    Ok((out, unacknowledged))
}
