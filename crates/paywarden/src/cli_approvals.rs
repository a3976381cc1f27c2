//! `paywarden approvals list|show ID|approve ID|deny ID [--as NAME] [--note TEXT]`: approval
//! requests from the server's shell, for operators who have access to its data directory.
//!
//! Output is for people: a table for `list`, labelled lines and pretty JSON for `show`, one
//! sentence for a decision. Refusals (unknown id, already decided, expired) go to stderr with
//! exit code [`EXIT_REFUSED`]; an empty `--as` is [`EXIT_USAGE`].

use std::{fmt::Write as _, io::Write as _};

use chrono::{DateTime, Utc};

use crate::{
    approvals_http::{amount_text, is_sandbox, preview_summary},
    store::{Approval, ApprovalError, ApprovalStatus, Store, StoreError},
};

/// Exit code of a command that did what it was asked.
pub const EXIT_OK: i32 = 0;
/// Exit code when the request does not exist or cannot be decided (already decided, expired).
pub const EXIT_REFUSED: i32 = 1;
/// Exit code of a malformed command (an empty `--as`).
pub const EXIT_USAGE: i32 = 2;

/// The `approvals` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ApprovalsAction {
    /// List pending approval requests, newest first (`--all`: every request).
    List {
        /// Include decided, expired and executed requests.
        #[arg(long)]
        all: bool,
    },
    /// Show one request in full: what will move, why, the arguments, the decision.
    Show {
        /// The request's id (`apr_…`).
        id: String,
    },
    /// Approve a pending request: the agent may then execute it, once.
    Approve {
        /// The request's id (`apr_…`).
        id: String,
        /// Operator name recorded with the decision (default: $USER, else "cli").
        #[arg(long = "as", default_value_t = default_operator())]
        operator: String,
        /// A note recorded with the decision.
        #[arg(long)]
        note: Option<String>,
    },
    /// Deny a pending request.
    Deny {
        /// The request's id (`apr_…`).
        id: String,
        /// Operator name recorded with the decision (default: $USER, else "cli").
        #[arg(long = "as", default_value_t = default_operator())]
        operator: String,
        /// A note recorded with the decision.
        #[arg(long)]
        note: Option<String>,
    },
}

/// The operator name a CLI decision is recorded under by default: `$USER`, else `cli`.
pub fn default_operator() -> String {
    std::env::var("USER")
        .ok()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "cli".to_string())
}

/// What a command prints and how it exits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliOutput {
    /// The process exit code.
    pub code: i32,
    /// Text for stdout.
    pub stdout: String,
    /// Text for stderr.
    pub stderr: String,
}

impl CliOutput {
    fn ok(stdout: String) -> Self {
        Self {
            code: EXIT_OK,
            stdout,
            stderr: String::new(),
        }
    }

    fn fail(code: i32, message: String) -> Self {
        Self {
            code,
            stdout: String::new(),
            stderr: format!("{message}\n"),
        }
    }
}

/// Runs `action`, printing to stdout and stderr; returns the exit code.
///
/// # Errors
/// [`StoreError`] on database failure (refusals are exit codes, not errors).
pub async fn run(store: &Store, action: ApprovalsAction) -> Result<i32, StoreError> {
    let output = execute(store, action).await?;
    // A closed stdout or stderr (e.g. `| head`) is not an error of the command.
    let _ = std::io::stdout().write_all(output.stdout.as_bytes());
    let _ = std::io::stderr().write_all(output.stderr.as_bytes());
    Ok(output.code)
}

/// Runs `action` and returns what it would print, without printing.
///
/// # Errors
/// [`StoreError`] on database failure.
pub async fn execute(store: &Store, action: ApprovalsAction) -> Result<CliOutput, StoreError> {
    match action {
        ApprovalsAction::List { all } => list(store, all).await,
        ApprovalsAction::Show { id } => match store.approval(&id).await? {
            Some(approval) => Ok(CliOutput::ok(show(&approval, Utc::now()))),
            None => Ok(CliOutput::fail(EXIT_REFUSED, not_found(&id))),
        },
        ApprovalsAction::Approve { id, operator, note } => {
            decide(store, &id, true, &operator, note.as_deref()).await
        }
        ApprovalsAction::Deny { id, operator, note } => {
            decide(store, &id, false, &operator, note.as_deref()).await
        }
    }
}

fn not_found(id: &str) -> String {
    format!("no approval request {id}; `paywarden approvals list --all` shows every request")
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

async fn list(store: &Store, all: bool) -> Result<CliOutput, StoreError> {
    let status = if all {
        None
    } else {
        Some(ApprovalStatus::Pending)
    };
    let approvals = store.list_approvals(status).await?;
    if approvals.is_empty() {
        return Ok(CliOutput::ok(if all {
            "no approval requests\n".to_string()
        } else {
            "no pending approval requests\n".to_string()
        }));
    }
    let rows: Vec<[String; 7]> = approvals
        .iter()
        .map(|a| {
            [
                a.id.clone(),
                a.status.to_string(),
                format!("{}/{}", a.toolset, a.tool),
                a.entity_id.clone(),
                preview_summary(&a.preview),
                time(a.created_at),
                if a.status == ApprovalStatus::Pending {
                    time(a.expires_at)
                } else {
                    "-".to_string()
                },
            ]
        })
        .collect();
    let header = [
        "ID",
        "STATUS",
        "TOOL",
        "ENTITY",
        "WHAT WILL MOVE",
        "CREATED",
        "EXPIRES",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    Ok(CliOutput::ok(out))
}

/// The full description of one request.
fn show(a: &Approval, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "approval {}  [{}]{}",
        a.id,
        a.status.as_str().to_uppercase(),
        if is_sandbox(&a.preview) {
            "  SANDBOX (emulator, no real money)"
        } else {
            ""
        }
    );
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(out, "  {name:<12} {value}");
    };
    field("tool", &format!("{}/{}", a.toolset, a.tool));
    field("entity", &a.entity_id);
    field(
        "client",
        a.client_name.as_deref().unwrap_or("(not declared)"),
    );
    if let Some(op) = a.preview.get("operation").and_then(|v| v.as_str()) {
        field("operation", op);
    }
    if let Some(amount) = amount_text(&a.preview) {
        field("amount", &amount);
    }
    field("what moves", &preview_summary(&a.preview));
    field("rule", &a.rule);
    field("message", &a.message);
    field("created", &time(a.created_at));
    let expires = if a.status == ApprovalStatus::Pending {
        let left = a.expires_at.signed_duration_since(now);
        format!(
            "{} (in {} h {} min)",
            time(a.expires_at),
            left.num_hours(),
            left.num_minutes() % 60
        )
    } else {
        time(a.expires_at)
    };
    field("expires", &expires);
    if let (Some(by), Some(at)) = (&a.decided_by, a.decided_at) {
        let verb = if a.status == ApprovalStatus::Denied {
            "denied"
        } else {
            "approved"
        };
        field("decision", &format!("{verb} by {by} at {}", time(at)));
        if let Some(note) = &a.decision_note {
            field("note", note);
        }
    }
    if let Some(at) = a.executed_at {
        field("executed", &time(at));
    }
    field("request hash", &a.request_hash);
    let pretty =
        |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    let _ = writeln!(out, "preview:\n{}", pretty(&a.preview));
    let _ = writeln!(out, "arguments:\n{}", pretty(&a.arguments));
    if let Some(outcome) = &a.outcome {
        let _ = writeln!(out, "outcome:\n{}", pretty(outcome));
    }
    out
}

async fn decide(
    store: &Store,
    id: &str,
    approve: bool,
    operator: &str,
    note: Option<&str>,
) -> Result<CliOutput, StoreError> {
    let operator = operator.trim();
    if operator.is_empty() {
        return Ok(CliOutput::fail(
            EXIT_USAGE,
            "--as must name the operator who decides (it is recorded with the decision)"
                .to_string(),
        ));
    }
    match store.decide_approval(id, approve, operator, note).await {
        Ok(a) => {
            let mut out = format!(
                "{} {} ({}/{}: {}) as {}\n",
                a.status,
                a.id,
                a.toolset,
                a.tool,
                preview_summary(&a.preview),
                operator
            );
            out.push_str(if approve {
                "The agent can now execute exactly this request, once.\n"
            } else {
                "The agent is told not to do this.\n"
            });
            Ok(CliOutput::ok(out))
        }
        Err(ApprovalError::NotFound { .. } | ApprovalError::WrongEntity { .. }) => {
            Ok(CliOutput::fail(EXIT_REFUSED, not_found(id)))
        }
        Err(ApprovalError::NotPending { status, .. }) => {
            let current = store.approval(id).await?;
            let by = current
                .as_ref()
                .and_then(|a| Some((a.decided_by.clone()?, a.decided_at?)));
            let message = match (status, by) {
                (ApprovalStatus::Approved | ApprovalStatus::Denied, Some((by, at))) => format!(
                    "approval {id} is already {status} by {by} at {}; nothing was changed",
                    time(at)
                ),
                (ApprovalStatus::Executing | ApprovalStatus::Executed, Some((by, at))) => {
                    format!(
                        "approval {id} was approved by {by} at {} and is already {status}; nothing was changed",
                        time(at)
                    )
                }
                _ => format!("approval {id} is already {status}; nothing was changed"),
            };
            Ok(CliOutput::fail(EXIT_REFUSED, message))
        }
        Err(ApprovalError::Expired { .. }) => {
            let when = store
                .approval(id)
                .await?
                .map(|a| format!(" at {}", time(a.expires_at)))
                .unwrap_or_default();
            Ok(CliOutput::fail(
                EXIT_REFUSED,
                format!(
                    "approval {id} expired{when} before anyone decided it; it can no longer be \
                     {} (the agent must ask again)",
                    if approve { "approved" } else { "denied" }
                ),
            ))
        }
        Err(ApprovalError::Store(e)) => Err(e),
        Err(e) => Ok(CliOutput::fail(EXIT_REFUSED, e.to_string())),
    }
}
