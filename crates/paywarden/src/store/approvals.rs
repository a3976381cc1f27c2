//! Approval requests: operations the policy marks `human` wait here until an operator approves
//! or denies them, and the approved request is then executed exactly once.
//!
//! Life of a request:
//!
//! ```text
//! pending ──approve──▶ approved ──claim──▶ executing ──finish──▶ executed
//!    │                                   ◀──release──┘
//!    │                     (or its lease ran out with no call's key holding it)
//!    ├──deny──▶ denied
//!    └──(expires_at passes)──▶ expired
//! ```
//!
//! Every transition that depends on the current state reads and writes in one
//! write transaction (SQLite `BEGIN IMMEDIATE`; PostgreSQL `SELECT ... FOR UPDATE` on the
//! request's row), so two operators, or two paywarden processes, (or two retries of the model) cannot both
//! win. A pending request whose `expires_at` has passed reads as [`ApprovalStatus::Expired`]
//! everywhere, and is stored as expired the next time it is read.

use std::{fmt, str::FromStr};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{any::AnyRow, Any, Row};

use super::{Store, StoreError, WriteStatement};

/// How long after an approval the agent may still execute it, even past the request's expiry.
pub const EXECUTION_GRACE: chrono::Duration = chrono::Duration::hours(1);

/// How long a claim holds an approval `executing` ([`Store::claim_approval`]) before the call
/// executing it records it on its idempotency key; past it, with no key holding it, the claimer
/// died before sending anything and the approval is claimable again.
pub const DEFAULT_EXECUTION_LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// Where an approval request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Waiting for an operator.
    Pending,
    /// An operator approved it; the agent may now execute it, once.
    Approved,
    /// An operator denied it.
    Denied,
    /// Nobody decided before `expires_at`.
    Expired,
    /// The approved request is being executed.
    Executing,
    /// The approved request was executed; `outcome` holds the result.
    Executed,
}

impl ApprovalStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [ApprovalStatus; 6] = [
        ApprovalStatus::Pending,
        ApprovalStatus::Approved,
        ApprovalStatus::Denied,
        ApprovalStatus::Expired,
        ApprovalStatus::Executing,
        ApprovalStatus::Executed,
    ];

    /// The lower-case name, as stored and serialised (`pending`, `approved`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Executing => "executing",
            ApprovalStatus::Executed => "executed",
        }
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not an [`ApprovalStatus`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown approval status {0:?}; expected pending, approved, denied, expired, executing or executed")]
pub struct UnknownApprovalStatus(pub String);

impl FromStr for ApprovalStatus {
    type Err = UnknownApprovalStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApprovalStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownApprovalStatus(s.to_string()))
    }
}

/// A new approval request, as the pipeline files it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    /// The entity whose operation it is; only this entity can execute it.
    pub entity_id: String,
    /// The MCP client's declared name, when known.
    pub client_name: Option<String>,
    /// Toolset, e.g. `opp`.
    pub toolset: String,
    /// Tool name, e.g. `refund`.
    pub tool: String,
    /// The tool's arguments, secrets already removed.
    pub arguments: serde_json::Value,
    /// SHA-256 of the canonical request; execution must present the same hash.
    pub request_hash: String,
    /// What will move, for the operator: `operation`, `amount`, `currency`, the reference
    /// transaction, from whom and to whom, `sandbox`.
    pub preview: serde_json::Value,
    /// The policy rule that asked for a human.
    pub rule: String,
    /// That rule's message.
    pub message: String,
    /// How long the request stays open. A non-positive (or absurdly large) value makes it
    /// expire at once.
    pub ttl: chrono::Duration,
}

/// A stored approval request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// `"apr_"` followed by 32 random lower-case hex digits.
    pub id: String,
    /// The entity whose operation it is.
    pub entity_id: String,
    /// The MCP client's declared name, when known.
    pub client_name: Option<String>,
    /// Toolset, e.g. `opp`.
    pub toolset: String,
    /// Tool name.
    pub tool: String,
    /// The tool's arguments, secrets removed.
    pub arguments: serde_json::Value,
    /// SHA-256 of the canonical request.
    pub request_hash: String,
    /// What will move (see [`NewApproval::preview`]).
    pub preview: serde_json::Value,
    /// The policy rule that asked for a human.
    pub rule: String,
    /// That rule's message.
    pub message: String,
    /// Where the request stands; a pending request past `expires_at` reads as `Expired`.
    pub status: ApprovalStatus,
    /// When it was filed (UTC).
    pub created_at: DateTime<Utc>,
    /// When it stops being decidable (UTC).
    pub expires_at: DateTime<Utc>,
    /// The operator who approved or denied it.
    pub decided_by: Option<String>,
    /// When it was approved or denied (UTC).
    pub decided_at: Option<DateTime<Utc>>,
    /// The operator's note.
    pub decision_note: Option<String>,
    /// When its execution finished (UTC).
    pub executed_at: Option<DateTime<Utc>>,
    /// The execution's outcome.
    pub outcome: Option<serde_json::Value>,
}

/// Why an approval request could not be decided or executed. Messages say what happened and
/// what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No request has this id.
    #[error("no approval request {id}; check the id (it starts with apr_)")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The request belongs to another entity. The message is the same as `NotFound`'s, so
    /// nothing about other entities' requests is revealed.
    #[error("no approval request {id}; check the id (it starts with apr_)")]
    WrongEntity {
        /// The id asked for.
        id: String,
    },
    /// The request being executed is not the one that was approved.
    #[error("the request differs from the one in approval request {id}: an approval covers exactly the arguments the operator saw; resend the same arguments, or ask for a new approval")]
    Mismatch {
        /// The approval's id.
        id: String,
    },
    /// The request was already decided (or is past deciding).
    #[error("approval request {id} is already {status}; it can no longer be approved or denied")]
    NotPending {
        /// The approval's id.
        id: String,
        /// Its status.
        status: ApprovalStatus,
    },
    /// The request cannot be executed in its current status.
    #[error("approval request {id} {}", not_approved_reason(*.status, .decided_by.as_deref()))]
    NotApproved {
        /// The approval's id.
        id: String,
        /// Its status.
        status: ApprovalStatus,
        /// Who decided it (an operator's name, or `agent:<entity>` for an approval the agent
        /// withdrew with `tasks/cancel`), when someone did.
        decided_by: Option<String>,
    },
    /// Nobody decided before the request expired.
    #[error("approval request {id} expired before an operator decided it; ask for a new approval")]
    Expired {
        /// The approval's id.
        id: String,
    },
    /// Database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a request in `status` cannot run, saying who ended a denied one: an agent's withdrawal
/// (`decided_by` `agent:<entity>`, from `tasks/cancel`) is not an operator's denial.
fn not_approved_reason(status: ApprovalStatus, decided_by: Option<&str>) -> String {
    match (status, decided_by) {
        (ApprovalStatus::Denied, Some(who)) if who.starts_with("agent:") => {
            "was withdrawn by the agent (tasks/cancel); nothing moved. Ask for a new approval only if the user still wants it".into()
        }
        (status, _) => not_approved_status(status).into(),
    }
}

fn not_approved_status(status: ApprovalStatus) -> &'static str {
    match status {
        ApprovalStatus::Pending => {
            "is still waiting for an operator; call again with it after an operator approves it"
        }
        ApprovalStatus::Denied => "was denied by an operator; do not retry this operation",
        ApprovalStatus::Expired => {
            "expired before an operator decided it; ask for a new approval"
        }
        ApprovalStatus::Executing => {
            "is being executed right now; look the transaction up instead of retrying"
        }
        ApprovalStatus::Executed => {
            "was already executed (an approval is used once); look the transaction up instead of retrying"
        }
        ApprovalStatus::Approved => "is approved",
    }
}

impl From<sqlx::Error> for ApprovalError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

/// The stored form of a time: RFC 3339, microseconds, `Z` (fixed width, so it sorts as text).
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn decode_error(column: &str, reason: String) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(
        format!("approvals.{column}: {reason}").into(),
    ))
}

fn parse_time(column: &str, raw: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| decode_error(column, format!("{raw:?} is not an RFC 3339 time ({e})")))
}

fn parse_optional_time(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let raw: Option<String> = row.try_get(column)?;
    raw.map(|raw| parse_time(column, &raw)).transpose()
}

/// Maps a row as stored (no expiry applied).
fn from_row(row: &AnyRow) -> Result<Approval, StoreError> {
    let status: String = row.try_get("status")?;
    let arguments: String = row.try_get("arguments")?;
    let preview: String = row.try_get("preview")?;
    let outcome: Option<String> = row.try_get("outcome")?;
    let created_at: String = row.try_get("created_at")?;
    let expires_at: String = row.try_get("expires_at")?;
    Ok(Approval {
        id: row.try_get("id")?,
        entity_id: row.try_get("entity_id")?,
        client_name: row.try_get("client_name")?,
        toolset: row.try_get("toolset")?,
        tool: row.try_get("tool")?,
        arguments: serde_json::from_str(&arguments)?,
        request_hash: row.try_get("request_hash")?,
        preview: serde_json::from_str(&preview)?,
        rule: row.try_get("rule")?,
        message: row.try_get("message")?,
        status: status
            .parse()
            .map_err(|e: UnknownApprovalStatus| decode_error("status", e.to_string()))?,
        created_at: parse_time("created_at", &created_at)?,
        expires_at: parse_time("expires_at", &expires_at)?,
        decided_by: row.try_get("decided_by")?,
        decided_at: parse_optional_time(row, "decided_at")?,
        decision_note: row.try_get("decision_note")?,
        executed_at: parse_optional_time(row, "executed_at")?,
        outcome: outcome.map(|o| serde_json::from_str(&o)).transpose()?,
    })
}

impl Approval {
    /// Whether this pending request is past its expiry at `now`.
    fn overdue(&self, now: DateTime<Utc>) -> bool {
        self.status == ApprovalStatus::Pending && now >= self.expires_at
    }

    /// This approval with a pending-but-overdue status reported as `Expired`.
    fn seen_at(mut self, now: DateTime<Utc>) -> Self {
        if self.overdue(now) {
            self.status = ApprovalStatus::Expired;
        }
        self
    }
}

/// The approval `id`; `lock` is appended to the query (` FOR UPDATE` inside a write
/// transaction on PostgreSQL, see [`Store::for_update`]).
async fn fetch<'e, E>(executor: E, id: &str, lock: &str) -> Result<Option<Approval>, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    sqlx::query(&format!("SELECT * FROM approvals WHERE id = $1{lock}"))
        .bind(id)
        .fetch_optional(executor)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A fresh approval id: `apr_` and 128 random bits in hex.
fn new_id() -> String {
    format!("apr_{}", hex::encode(rand::random::<[u8; 16]>()))
}

impl Store {
    /// Files a new pending approval request.
    ///
    /// # Errors
    /// [`StoreError`] on database failure or unserialisable JSON.
    pub async fn create_approval(&self, new: NewApproval) -> Result<Approval, StoreError> {
        let now = Utc::now();
        let expires_at = now.checked_add_signed(new.ttl).unwrap_or(now).max(now);
        let id = new_id();
        sqlx::query(
            "INSERT INTO approvals (id, entity_id, client_name, toolset, tool, arguments, request_hash, \
             preview, rule, message, status, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&id)
        .bind(&new.entity_id)
        .bind(&new.client_name)
        .bind(&new.toolset)
        .bind(&new.tool)
        .bind(serde_json::to_string(&new.arguments)?)
        .bind(&new.request_hash)
        .bind(serde_json::to_string(&new.preview)?)
        .bind(&new.rule)
        .bind(&new.message)
        .bind(ApprovalStatus::Pending.as_str())
        .bind(stamp(now))
        .bind(stamp(expires_at))
        .write_on(self)
        .await?;
        Ok(Approval {
            id,
            entity_id: new.entity_id,
            client_name: new.client_name,
            toolset: new.toolset,
            tool: new.tool,
            arguments: new.arguments,
            request_hash: new.request_hash,
            preview: new.preview,
            rule: new.rule,
            message: new.message,
            status: ApprovalStatus::Pending,
            created_at: parse_time("created_at", &stamp(now))?,
            expires_at: parse_time("expires_at", &stamp(expires_at))?,
            decided_by: None,
            decided_at: None,
            decision_note: None,
            executed_at: None,
            outcome: None,
        }
        .seen_at(now))
    }

    /// Stores every pending request past its expiry as expired.
    async fn expire_overdue(&self, id: Option<&str>) -> Result<(), StoreError> {
        let now = stamp(Utc::now());
        let query = match id {
            Some(id) => sqlx::query(
                "UPDATE approvals SET status = 'expired' WHERE id = $1 AND status = 'pending' AND expires_at <= $2",
            )
            .bind(id),
            None => sqlx::query(
                "UPDATE approvals SET status = 'expired' WHERE status = 'pending' AND expires_at <= $1",
            ),
        };
        query.bind(now).write_on(self).await?;
        Ok(())
    }

    /// One approval request, or `None` when no request has this id. A pending request past its
    /// expiry reads (and is stored) as expired.
    ///
    /// # Errors
    /// [`StoreError`] on database failure or unreadable stored data.
    pub async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        self.expire_overdue(Some(id)).await?;
        let now = Utc::now();
        Ok(fetch(self.pool(), id, "").await?.map(|a| a.seen_at(now)))
    }

    /// Approval requests with `status` (all of them when `None`), newest first. Pending
    /// requests past their expiry are reported (and stored) as expired.
    ///
    /// # Errors
    /// [`StoreError`] on database failure or unreadable stored data.
    pub async fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
    ) -> Result<Vec<Approval>, StoreError> {
        self.expire_overdue(None).await?;
        let rows = match status {
            Some(status) => {
                sqlx::query(
                    "SELECT * FROM approvals WHERE status = $1 ORDER BY created_at DESC, id",
                )
                .bind(status.as_str())
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query("SELECT * FROM approvals ORDER BY created_at DESC, id")
                    .fetch_all(self.pool())
                    .await?
            }
        };
        let now = Utc::now();
        let mut approvals = Vec::with_capacity(rows.len());
        for row in &rows {
            let approval = from_row(row)?.seen_at(now);
            if status.is_none_or(|s| s == approval.status) {
                approvals.push(approval);
            }
        }
        Ok(approvals)
    }

    /// An operator's decision: `approve` moves a pending, unexpired request to `Approved`,
    /// otherwise to `Denied`, recording `decided_by`, the time and the note (a blank note is
    /// stored as none). Atomic: of two concurrent decisions, one wins and the other gets
    /// `NotPending`.
    ///
    /// # Errors
    /// [`ApprovalError::NotFound`]; [`ApprovalError::Expired`] when it expired undecided;
    /// [`ApprovalError::NotPending`] when it was already decided; [`ApprovalError::Store`].
    pub async fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        decided_by: &str,
        note: Option<&str>,
    ) -> Result<Approval, ApprovalError> {
        let note = note.map(str::trim).filter(|n| !n.is_empty());
        let mut tx = self.begin_write().await?;
        let Some(current) = fetch(&mut *tx, id, self.for_update()).await? else {
            return Err(ApprovalError::NotFound { id: id.to_string() });
        };
        let now = Utc::now();
        if current.overdue(now) {
            sqlx::query(
                "UPDATE approvals SET status = 'expired' WHERE id = $1 AND status = 'pending'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Err(ApprovalError::Expired { id: id.to_string() });
        }
        match current.status {
            ApprovalStatus::Pending => {}
            ApprovalStatus::Expired => return Err(ApprovalError::Expired { id: id.to_string() }),
            status => {
                return Err(ApprovalError::NotPending {
                    id: id.to_string(),
                    status,
                })
            }
        }
        let status = if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        sqlx::query(
            "UPDATE approvals SET status = $1, decided_by = $2, decided_at = $3, decision_note = $4 \
             WHERE id = $5 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(decided_by)
        .bind(stamp(now))
        .bind(note)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let decided = fetch(&mut *tx, id, "")
            .await?
            .ok_or_else(|| ApprovalError::NotFound { id: id.to_string() })?;
        tx.commit().await?;
        // The decision joins the audit chain, whichever way it was made (the page or the CLI).
        self.append_audit(&super::AuditEntry {
            entity_id: decided.entity_id.clone(),
            client_name: Some(format!("operator:{decided_by}")),
            toolset: decided.toolset.clone(),
            tool: decided.tool.clone(),
            arguments: serde_json::json!({
                "approvalId": decided.id,
                "decision": if approve { "approve" } else { "deny" },
                "note": note,
            }),
            outcome: if approve { "approved" } else { "denied" }.into(),
            result_code: None,
            provider_request_id: None,
            transaction_id: Some(decided.id.clone()),
            message: Some(format!(
                "{} by {decided_by}",
                if approve { "approved" } else { "denied" }
            )),
            duration_ms: 0,
            sandbox: decided
                .preview
                .get("sandbox")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        })
        .await?;
        Ok(decided)
    }

    /// Claims an approved request for execution by `entity_id` with a request whose canonical
    /// hash is `request_hash`: `Approved` becomes `Executing`, atomically and exactly once.
    ///
    /// # Errors
    /// [`ApprovalError::NotFound`]; [`ApprovalError::WrongEntity`] when the request belongs to
    /// another entity (checked first; its message reveals nothing);
    /// [`ApprovalError::Mismatch`] when the hash differs; [`ApprovalError::NotApproved`] in
    /// any status but `Approved`; [`ApprovalError::Store`].
    pub async fn claim_approval(
        &self,
        id: &str,
        entity_id: &str,
        request_hash: &str,
    ) -> Result<Approval, ApprovalError> {
        self.claim_approval_leased(id, entity_id, request_hash, DEFAULT_EXECUTION_LEASE)
            .await
    }

    /// [`Store::claim_approval`] holding the claim for `lease`: an approval left `executing`
    /// past its lease by a claimer that died before any call's idempotency key held it (so
    /// before anything was sent) is claimed again.
    ///
    /// # Errors
    /// As [`Store::claim_approval`].
    pub async fn claim_approval_leased(
        &self,
        id: &str,
        entity_id: &str,
        request_hash: &str,
        lease: chrono::Duration,
    ) -> Result<Approval, ApprovalError> {
        let mut tx = self.begin_write().await?;
        let Some(current) = fetch(&mut *tx, id, self.for_update()).await? else {
            return Err(ApprovalError::NotFound { id: id.to_string() });
        };
        if current.entity_id != entity_id {
            return Err(ApprovalError::WrongEntity { id: id.to_string() });
        }
        if current.request_hash != request_hash {
            return Err(ApprovalError::Mismatch { id: id.to_string() });
        }
        let now = Utc::now();
        let mut current = current.seen_at(now);
        if current.status == ApprovalStatus::Executing && abandoned(&mut tx, id, now).await? {
            current.status = ApprovalStatus::Approved;
        }
        if current.status != ApprovalStatus::Approved {
            return Err(ApprovalError::NotApproved {
                id: id.to_string(),
                status: current.status,
                decided_by: current.decided_by.clone(),
            });
        }
        // An approval is acted on soon or not at all: until the request's expiry, and at least
        // an hour after the decision.
        let deadline = current.expires_at.max(
            current
                .decided_at
                .map(|d| d + EXECUTION_GRACE)
                .unwrap_or(current.expires_at),
        );
        if now > deadline {
            return Err(ApprovalError::Expired { id: id.to_string() });
        }
        let claimed = sqlx::query(
            "UPDATE approvals SET status = 'executing', executing_until = $2 \
             WHERE id = $1 AND status IN ('approved', 'executing')",
        )
        .bind(id)
        .bind(stamp(now + lease))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed != 1 {
            return Err(ApprovalError::NotApproved {
                id: id.to_string(),
                status: ApprovalStatus::Executing,
                decided_by: None,
            });
        }
        tx.commit().await?;
        Ok(Approval {
            status: ApprovalStatus::Executing,
            ..current
        })
    }

    /// Records the execution's outcome: `Executing` becomes `Executed`, with `executed_at`.
    ///
    /// # Errors
    /// [`StoreError::Database`] with [`sqlx::Error::RowNotFound`] when no request with this id
    /// is executing; other [`StoreError`]s on database failure.
    pub async fn finish_approval(
        &self,
        id: &str,
        outcome: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE approvals SET status = 'executed', outcome = $1, executed_at = $2 \
             WHERE id = $3 AND status = 'executing'",
        )
        .bind(serde_json::to_string(outcome)?)
        .bind(stamp(Utc::now()))
        .bind(id)
        .write_on(self)
        .await?
        .rows_affected();
        if updated == 1 {
            Ok(())
        } else {
            Err(StoreError::Database(sqlx::Error::RowNotFound))
        }
    }

    /// Gives a claimed request back (`Executing` becomes `Approved` again) when its execution
    /// failed before the provider could have acted, so the agent can retry it. Returns whether
    /// a request was released.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn release_approval(&self, id: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE approvals SET status = 'approved', executing_until = NULL WHERE id = $1 AND status = 'executing'",
        )
        .bind(id)
        .write_on(self)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }
}

impl Store {
    /// Recovers approvals left `executing` past their lease by a process that died: one that no
    /// call's idempotency key holds goes back to `approved` (nothing was sent); one whose key
    /// completed becomes `executed` with the key's outcome. An approval whose key is still open
    /// stays `executing` until that key is reconciled. Returns how many changed.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn recover_approvals(&self) -> Result<usize, StoreError> {
        let now = stamp(Utc::now());
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM approvals WHERE status = 'executing' AND executing_until < $1",
        )
        .bind(&now)
        .fetch_all(self.pool())
        .await?;
        let mut changed = 0;
        for id in stale {
            let mut tx = self.begin_write().await?;
            let Some(current) = fetch(&mut *tx, &id, self.for_update()).await? else {
                continue;
            };
            if current.status != ApprovalStatus::Executing {
                continue;
            }
            if abandoned(&mut tx, &id, Utc::now()).await? {
                sqlx::query("UPDATE approvals SET status = 'approved', executing_until = NULL WHERE id = $1 AND status = 'executing'")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                changed += 1;
            } else if let Some(row) = sqlx::query(
                "SELECT response, is_error FROM idempotency_keys WHERE approval_id = $1 AND state = 'completed'",
            )
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?
            {
                let response: Option<String> = row.try_get("response")?;
                let response: serde_json::Value =
                    serde_json::from_str(response.as_deref().unwrap_or("null"))?;
                let is_error = super::get_bool(&row, "is_error")?.unwrap_or(false);
                let outcome = serde_json::json!({
                    "structured": response.get("structured"),
                    "text": super::stored_text(&response),
                    "isError": is_error,
                });
                sqlx::query("UPDATE approvals SET status = 'executed', outcome = $1, executed_at = $2 WHERE id = $3 AND status = 'executing'")
                    .bind(serde_json::to_string(&outcome)?)
                    .bind(stamp(Utc::now()))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                changed += 1;
            }
            tx.commit().await?;
        }
        Ok(changed)
    }
}

/// Whether an `executing` approval was abandoned: its lease ran out and no call's idempotency
/// key holds it (so its claimer died before sending anything). An approval claimed before
/// leases existed (no `executing_until`) is never taken for abandoned.
async fn abandoned(
    tx: &mut super::WriteTx,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let until: Option<String> =
        sqlx::query_scalar("SELECT executing_until FROM approvals WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .flatten();
    let Some(until) = until else {
        return Ok(false);
    };
    if parse_time("executing_until", &until)? > now {
        return Ok(false);
    }
    let held: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys WHERE approval_id = $1")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
    Ok(held == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in ApprovalStatus::ALL {
            assert_eq!(status.as_str().parse::<ApprovalStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::String(status.to_string())
            );
        }
        assert!("Pending".parse::<ApprovalStatus>().is_err());
    }

    #[test]
    fn ids_are_apr_and_32_hex_digits() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert!(id.starts_with("apr_"));
        assert!(id[4..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(new_id(), id);
    }

    #[test]
    fn stamps_are_fixed_width_utc() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(stamp(t), "2026-01-02T03:04:05.000000Z");
        assert_eq!(parse_time("t", &stamp(t)).unwrap(), t);
    }
}
