//! Idempotency keys of money-moving calls, stored per (entity, key) with a hash of the request.
//!
//! Life of a key (migration `0009_unknown_outcomes` describes the columns):
//!
//! ```text
//! begin ──▶ in_progress ──(the provider answered, or paywarden refused)──▶ completed (replayed)
//!             │  held by one call under a lease the call renews while it runs
//!             ├──(nothing was sent)──▶ deleted: a retry runs
//!             ├──(timeout: the provider may have acted)──▶ unknown
//!             └──(lease ran out: the process died)──▶ unknown if an intent was recorded,
//!                                                     else deleted (nothing was sent)
//! unknown ──(the provider shows the operation)──▶ completed with what the provider did
//!         └──(settle_after passed, the provider still shows nothing)──▶ deleted, and watched
//!                                                                       for a late arrival
//! ```
//!
//! `begin` claims a key atomically (a primary-key insert), so two concurrent calls with one key
//! cannot both proceed.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Duration, Utc};
use sqlx::{any::AnyRow, Row};

use super::{Store, StoreError, WriteStatement};

/// What `begin` decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// The key is new: this call proceeds and must complete, mark unknown or abandon it.
    Proceed,
    /// The key was used before with the same request: here is the first outcome.
    Replay {
        /// The stored outcome (JSON), as the first call answered.
        response: serde_json::Value,
        /// Whether the first outcome was a tool error.
        is_error: bool,
    },
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// A call holds it (under a lease).
    InProgress,
    /// The first outcome is stored and replayed.
    Completed,
    /// The provider may or may not have acted; retries are refused until it is reconciled.
    Unknown,
}

impl KeyState {
    /// `in_progress`, `completed` or `unknown`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::InProgress => "in_progress",
            KeyState::Completed => "completed",
            KeyState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "in_progress" => Ok(KeyState::InProgress),
            "completed" => Ok(KeyState::Completed),
            "unknown" => Ok(KeyState::Unknown),
            other => Err(StoreError::Database(sqlx::Error::Decode(
                format!("unknown idempotency key state {other:?}").into(),
            ))),
        }
    }
}

/// A stored key with everything recovery needs.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// The entity.
    pub entity_id: String,
    /// The key.
    pub key: String,
    /// The tool that first used it.
    pub tool: String,
    /// Its toolset (`None` for keys from before migration 0007).
    pub toolset: Option<String>,
    /// [`crate::pipeline::safety::binding_hash`] of the first request.
    pub request_hash: String,
    /// Where it stands.
    pub state: KeyState,
    /// When it was first used.
    pub created_at: DateTime<Utc>,
    /// `InProgress`: until when its call holds it (keys from before leases: `None`).
    pub lease_until: Option<DateTime<Utc>>,
    /// `Unknown`: from when the provider's silence means the operation never happened.
    pub settle_after: Option<DateTime<Utc>>,
    /// What the call was about to send (a [`crate::pipeline::reconcile::Intent`] as JSON),
    /// recorded before sending; `None`: nothing was sent.
    pub intent: Option<serde_json::Value>,
    /// The cumulative-limit reservation the call holds.
    pub reservation_id: Option<String>,
    /// The approval the call executes.
    pub approval_id: Option<String>,
    /// The provider transaction the key settled on.
    pub transaction_id: Option<String>,
    /// `Completed`: the stored outcome.
    pub response: Option<serde_json::Value>,
}

/// How long a key from before leases (no `lease_until`) counts as held after it was created.
pub const LEGACY_LEASE: Duration = Duration::minutes(10);

impl KeyRecord {
    /// Until when the call holds an `InProgress` key.
    pub fn held_until(&self) -> DateTime<Utc> {
        self.lease_until.unwrap_or(self.created_at + LEGACY_LEASE)
    }

    /// Whether an `InProgress` key's call has died (its lease ran out).
    pub fn lease_expired(&self, now: DateTime<Utc>) -> bool {
        self.state == KeyState::InProgress && self.held_until() <= now
    }
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// Same key, different request.
    #[error("idempotency key {key:?} was already used by {tool} with different arguments; use a new key for a new operation, or resend the original arguments to get the original result")]
    Mismatch {
        /// The key.
        key: String,
        /// The tool that first used it.
        tool: String,
    },
    /// The first call with this key has not finished.
    #[error("a call with idempotency key {key:?} is still in progress; wait for it and retry with the same key to get its result")]
    InProgress {
        /// The key.
        key: String,
    },
    /// The first call's outcome is unknown: the provider may have acted and does not show it
    /// (yet), or could not be asked.
    #[error("the outcome of the call with idempotency key {key:?} is still UNKNOWN: the request may have reached the provider, which does not show it (yet). Nothing was sent again. {next}")]
    Unknown {
        /// The key.
        key: String,
        /// What happens next, and what to do.
        next: String,
    },
    /// Database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for IdempotencyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(column: &str, raw: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                StoreError::Database(sqlx::Error::Decode(
                    format!("{column} {raw:?} is not RFC 3339: {e}").into(),
                ))
            })
    })
    .transpose()
}

fn parse_json(raw: Option<String>) -> Result<Option<serde_json::Value>, StoreError> {
    Ok(raw.map(|r| serde_json::from_str(&r)).transpose()?)
}

/// What a caller is told to do about an unknown outcome settling at `settle_after`.
fn unknown_next(settle_after: Option<DateTime<Utc>>) -> String {
    match settle_after {
        Some(t) => format!(
            "Retry later with the same key: paywarden asks the provider first, and sends again only once {} has passed with the provider still showing nothing. Or look the transaction up with the toolset's lookup tool",
            ts(t)
        ),
        None => "paywarden cannot look this operation up by itself: check it at the provider (or with the toolset's lookup tool) before doing anything else; an operator sees it with `paywarden reconcile`".into(),
    }
}

const KEY_COLUMNS: &str =
    "entity_id, idempotency_key, tool, toolset, request_hash, state, response, \
     created_at, lease_until, settle_after, intent, reservation_id, approval_id, transaction_id";

fn key_from_row(row: &AnyRow) -> Result<KeyRecord, StoreError> {
    let state: String = row.try_get("state")?;
    Ok(KeyRecord {
        entity_id: row.try_get("entity_id")?,
        key: row.try_get("idempotency_key")?,
        tool: row.try_get("tool")?,
        toolset: row.try_get("toolset")?,
        request_hash: row.try_get("request_hash")?,
        state: state.parse()?,
        created_at: parse_ts("created_at", Some(row.try_get("created_at")?))?
            .unwrap_or_else(Utc::now),
        lease_until: parse_ts("lease_until", row.try_get("lease_until")?)?,
        settle_after: parse_ts("settle_after", row.try_get("settle_after")?)?,
        intent: parse_json(row.try_get("intent")?)?,
        reservation_id: row.try_get("reservation_id")?,
        approval_id: row.try_get("approval_id")?,
        transaction_id: row.try_get("transaction_id")?,
        response: parse_json(row.try_get("response")?)?,
    })
}

impl Store {
    /// Claims `key` for `entity_id` and a request whose canonical hash is `request_hash`, held
    /// by `holder` for `lease` (renew it with [`Store::renew_idempotent_lease`]).
    ///
    /// # Errors
    /// [`IdempotencyError`]: the key belongs to another request, is in progress, or its first
    /// outcome is unknown (also when its call died and it was not reconciled yet).
    pub async fn begin_idempotent(
        &self,
        entity_id: &str,
        key: &str,
        (toolset, tool): (&str, &str),
        request_hash: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Begin, IdempotencyError> {
        let now = Utc::now();
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (entity_id, idempotency_key, tool, request_hash, state, created_at, holder, lease_until, toolset) \
             VALUES ($1, $2, $3, $4, 'in_progress', $5, $6, $7, $8) ON CONFLICT (entity_id, idempotency_key) DO NOTHING",
        )
        .bind(entity_id)
        .bind(key)
        .bind(tool)
        .bind(request_hash)
        .bind(ts(now))
        .bind(holder)
        .bind(ts(now + lease))
        .bind(toolset)
        .write_on(self)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Begin::Proceed);
        }
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, is_error FROM idempotency_keys WHERE entity_id = $1 AND idempotency_key = $2"
        ))
        .bind(entity_id)
        .bind(key)
        .fetch_one(self.pool())
        .await?;
        let record = key_from_row(&row)?;
        if record.request_hash != request_hash || record.tool != tool {
            return Err(IdempotencyError::Mismatch {
                key: key.to_string(),
                tool: record.tool,
            });
        }
        match record.state {
            KeyState::Completed => Ok(Begin::Replay {
                response: record.response.unwrap_or(serde_json::Value::Null),
                is_error: super::get_bool(&row, "is_error")?.unwrap_or(false),
            }),
            KeyState::InProgress if !record.lease_expired(now) => {
                Err(IdempotencyError::InProgress {
                    key: key.to_string(),
                })
            }
            _ => Err(IdempotencyError::Unknown {
                key: key.to_string(),
                next: unknown_next(record.settle_after),
            }),
        }
    }

    /// Extends the lease of an `in_progress` key its `holder` still holds. Returns whether it
    /// still held it.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn renew_idempotent_lease(
        &self,
        entity_id: &str,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE idempotency_keys SET lease_until = $1 \
             WHERE entity_id = $2 AND idempotency_key = $3 AND state = 'in_progress' AND holder = $4",
        )
        .bind(ts(Utc::now() + lease))
        .bind(entity_id)
        .bind(key)
        .bind(holder)
        .write_on(self)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Records on the key the cumulative-limit reservation and the approval its call holds, so
    /// that whoever settles the key (the call, or reconciliation after it died) settles them too.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn attach_to_idempotent(
        &self,
        entity_id: &str,
        key: &str,
        reservation_id: Option<&str>,
        approval_id: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET reservation_id = $1, approval_id = $2 \
             WHERE entity_id = $3 AND idempotency_key = $4",
        )
        .bind(reservation_id)
        .bind(approval_id)
        .bind(entity_id)
        .bind(key)
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Records what the key's call is about to send, before it is sent: from now on the request
    /// may reach the provider, and a key whose call dies is reconciled against it. Only while
    /// `holder` still holds the key (`in_progress`, its holder): the same statement renews the
    /// lease for `lease`. Returns whether it did; `false` means the call lost its key (it
    /// stalled past the lease and recovery released or took it), and then it must not send.
    ///
    /// # Errors
    /// [`StoreError`] on database failure (then nothing must be sent).
    pub async fn record_idempotent_intent(
        &self,
        entity_id: &str,
        key: &str,
        holder: &str,
        intent: &serde_json::Value,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let recorded = sqlx::query(
            "UPDATE idempotency_keys SET intent = $1, lease_until = $2 \
             WHERE entity_id = $3 AND idempotency_key = $4 AND state = 'in_progress' AND holder = $5",
        )
        .bind(serde_json::to_string(intent)?)
        .bind(ts(Utc::now() + lease))
        .bind(entity_id)
        .bind(key)
        .bind(holder)
        .write_on(self)
        .await?
        .rows_affected();
        Ok(recorded == 1)
    }

    /// Stores the first outcome of `key` (held by `holder`, or unknown since), with the
    /// provider transaction it created, if any.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn complete_idempotent(
        &self,
        entity_id: &str,
        key: &str,
        holder: &str,
        response: &serde_json::Value,
        is_error: bool,
        transaction_id: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', response = $1, is_error = $2, completed_at = $3, \
             transaction_id = $4, holder = NULL, lease_until = NULL \
             WHERE entity_id = $5 AND idempotency_key = $6 \
             AND ((state = 'in_progress' AND holder = $7) OR state = 'unknown')",
        )
        .bind(serde_json::to_string(response)?)
        .bind(is_error)
        .bind(ts(Utc::now()))
        .bind(transaction_id)
        .bind(entity_id)
        .bind(key)
        .bind(holder)
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Marks `key`'s outcome unknown (the provider timed out after the request may have
    /// arrived): retries are refused until the provider shows the operation or `settle_after`
    /// has passed with the provider showing nothing (`None`: until an operator resolves it).
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn mark_idempotent_unknown(
        &self,
        entity_id: &str,
        key: &str,
        settle_after: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'unknown', settle_after = $1, holder = NULL, lease_until = NULL \
             WHERE entity_id = $2 AND idempotency_key = $3 AND state IN ('in_progress', 'unknown')",
        )
        .bind(settle_after.map(ts))
        .bind(entity_id)
        .bind(key)
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Turns a key whose call died (`in_progress`, lease `lease_until` run out) into an unknown
    /// outcome settling at `settle_after` (`None`: until an operator resolves it). Returns false
    /// when someone else changed it first.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn expire_idempotent_lease(
        &self,
        record: &KeyRecord,
        settle_after: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let lease = record.lease_until.map(ts);
        let changed = sqlx::query(
            "UPDATE idempotency_keys SET state = 'unknown', settle_after = $1, holder = NULL \
             WHERE entity_id = $2 AND idempotency_key = $3 AND state = 'in_progress' \
             AND (lease_until = $4 OR (lease_until IS NULL AND $4 IS NULL))",
        )
        .bind(settle_after.map(ts))
        .bind(&record.entity_id)
        .bind(&record.key)
        .bind(lease)
        .write_on(self)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Releases `key` when its call failed before the provider could have acted, so a retry
    /// can run.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn abandon_idempotent(
        &self,
        entity_id: &str,
        key: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE entity_id = $1 AND idempotency_key = $2 \
             AND state = 'in_progress' AND holder = $3",
        )
        .bind(entity_id)
        .bind(key)
        .bind(holder)
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Deletes a key that reconciliation found never moved anything (its call died before
    /// sending, or the provider shows nothing after the settle window), provided it is still
    /// as `record` saw it. Returns whether it was deleted.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn release_idempotent(&self, record: &KeyRecord) -> Result<bool, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys WHERE entity_id = $1 AND idempotency_key = $2 AND state = $3 \
             AND state <> 'completed' AND (lease_until = $4 OR (lease_until IS NULL AND $4 IS NULL))",
        )
        .bind(&record.entity_id)
        .bind(&record.key)
        .bind(record.state.as_str())
        .bind(record.lease_until.map(ts))
        .write_on(self)
        .await?
        .rows_affected();
        Ok(deleted == 1)
    }

    /// The stored key, if used.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn idempotency_key(
        &self,
        entity_id: &str,
        key: &str,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM idempotency_keys WHERE entity_id = $1 AND idempotency_key = $2"
        ))
        .bind(entity_id)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Keys not completed: in progress (live or with a dead call) and unknown, oldest first.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn open_idempotency_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM idempotency_keys WHERE state <> 'completed' ORDER BY created_at"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Settles a key whose outcome was unknown with the outcome the provider reported, bound to
    /// the provider transaction `transaction_id`.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn settle_unknown_idempotent(
        &self,
        entity_id: &str,
        key: &str,
        response: &serde_json::Value,
        is_error: bool,
        transaction_id: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', response = $1, is_error = $2, completed_at = $3, \
             transaction_id = $4 WHERE entity_id = $5 AND idempotency_key = $6 AND state = 'unknown'",
        )
        .bind(serde_json::to_string(response)?)
        .bind(is_error)
        .bind(ts(Utc::now()))
        .bind(transaction_id)
        .bind(entity_id)
        .bind(key)
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Stores a key as completed with an outcome found at the provider, when the key has no row
    /// (it was released after its settle window and the operation arrived late): a retry then
    /// replays it instead of sending again. Does nothing when the key exists.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_completed_idempotent(
        &self,
        entity_id: &str,
        key: &str,
        tool: &str,
        request_hash: &str,
        response: &serde_json::Value,
        is_error: bool,
        transaction_id: &str,
    ) -> Result<(), StoreError> {
        let now = ts(Utc::now());
        sqlx::query(
            "INSERT INTO idempotency_keys (entity_id, idempotency_key, tool, request_hash, state, response, is_error, created_at, completed_at, transaction_id) \
             VALUES ($1, $2, $3, $4, 'completed', $5, $6, $7, $7, $8) ON CONFLICT (entity_id, idempotency_key) DO NOTHING",
        )
        .bind(entity_id)
        .bind(key)
        .bind(tool)
        .bind(request_hash)
        .bind(serde_json::to_string(response)?)
        .bind(is_error)
        .bind(now)
        .bind(transaction_id)
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Whether provider transaction `transaction_id` is bound to a key of `entity_id` other than
    /// `key` (`None`: to any key): reconciliation never claims it for another key.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn transaction_claimed(
        &self,
        entity_id: &str,
        transaction_id: &str,
        key: Option<&str>,
    ) -> Result<bool, StoreError> {
        let bound: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM idempotency_keys WHERE entity_id = $1 AND transaction_id = $2 \
             AND ($3 IS NULL OR idempotency_key <> $3)",
        )
        .bind(entity_id)
        .bind(transaction_id)
        .bind(key)
        .fetch_one(self.pool())
        .await?;
        Ok(bound > 0)
    }
}

/// The text of an outcome a key stored (the pipeline's `ToolOutcome::key_record`; an
/// approval's outcome stores it whole): its `text`, or its `text_head`, a line break and its
/// `structured` as compact JSON, byte for byte the text first answered; `None` when the record
/// holds neither.
pub fn stored_text(record: &serde_json::Value) -> Option<std::borrow::Cow<'_, str>> {
    if let Some(text) = record.get("text").and_then(|t| t.as_str()) {
        return Some(std::borrow::Cow::Borrowed(text));
    }
    let head = record.get("text_head").and_then(|t| t.as_str())?;
    let structured = record.get("structured").unwrap_or(&serde_json::Value::Null);
    Some(std::borrow::Cow::Owned(format!("{head}\n{structured}")))
}
