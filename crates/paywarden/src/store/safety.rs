//! Storage for the safety layer: single-use confirmation tokens, per-transaction leases that
//! serialise money-moving operations across processes, and the movements ledger.

use chrono::{DateTime, Duration, Utc};
use sqlx::Row;

use super::{Engine, Store, StoreError, WriteStatement};

/// A stored confirmation token's binding.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirmation {
    /// Entity the token was issued to.
    pub entity_id: String,
    /// Tool it confirms.
    pub tool: String,
    /// Hash of the canonical arguments it is bound to.
    pub request_hash: String,
    /// The preview shown when it was issued.
    pub preview: serde_json::Value,
    /// The policy rule that asked for confirmation.
    pub rule: String,
    /// Expiry (UTC).
    pub expires_at: DateTime<Utc>,
}

/// Why a confirmation token is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmationError {
    /// Unknown token (never issued, or made up).
    #[error("this confirmationToken was never issued by paywarden; call the tool without it to get a preview and a real token")]
    Unknown,
    /// Issued to another entity.
    #[error("this confirmationToken belongs to another entity")]
    WrongEntity,
    /// Issued for other arguments or another tool.
    #[error("this confirmationToken was issued for different arguments (or another tool); it confirms exactly the previewed operation. Call without a token to preview the new one")]
    Mismatch,
    /// Already used once.
    #[error("this confirmationToken was already used; each token confirms one operation once")]
    Used,
    /// Past its expiry.
    #[error(
        "this confirmationToken expired at {0}; call the tool without it to get a new preview"
    )]
    Expired(DateTime<Utc>),
    /// Database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ConfirmationError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

/// The `transaction_locks` row of the entity that serialises cumulative-limit decisions of one
/// entity in one currency, across processes sharing the database
/// ([`Store::decide_and_reserve`]).
pub fn limit_lease_name(currency: &str) -> String {
    format!("limits:{currency}")
}

/// What [`Store::decide_and_reserve`] gave.
#[derive(Debug)]
pub enum LimitDecision<R> {
    /// The totals let the call through and its amount is reserved: the reservation's id (for
    /// [`Store::release_reservation`]).
    Reserved(String),
    /// The caller's `decide` answered `R` on today's totals; nothing was reserved.
    Refused(R),
    /// A process of an earlier paywarden version holds the entity's limit lease row (it
    /// decides under a lease, not a lock) and it has not expired: nothing was read or
    /// reserved; try again shortly.
    Held,
    /// SQLite: this process's write turn did not come before the caller's deadline (the
    /// writes queued ahead of it, or another process holding the file's write lock, took
    /// longer): nothing was read or reserved.
    TimedOut,
}

/// 00:00 UTC of `now`'s day: where a day's cumulative limits start.
fn utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |t| t.and_utc())
}

/// Minor units this entity (`$1`) moved in currency `$2` since `$3` (a day's midnight, as
/// [`ts`] writes it): the one statement [`Store::moved_today`] and
/// [`Store::decide_and_reserve`] count with. It reads the daily totals the database keeps
/// beside `movements` (table `movement_days`, migration 0015: a trigger adds each movement to
/// its UTC day's row in the movement's transaction), one row per day, instead of summing the
/// day's movements: the same number, at a cost that does not grow with the day's volume.
macro_rules! moved_since {
    () => {
        "SELECT COALESCE(SUM(amount_minor), 0) FROM movement_days \
         WHERE entity_id = $1 AND currency = $2 AND day >= substr($3, 1, 10)"
    };
}

/// Minor units reserved by this entity's (`$1`) calls in flight in currency `$2`, made since
/// `$3` and not expired at `$4`: shared as [`moved_since`] is.
macro_rules! reserved_since {
    () => {
        "SELECT COALESCE(SUM(amount_minor), 0) FROM limit_reservations \
         WHERE entity_id = $1 AND currency = $2 AND created_at >= $3 AND expires_at > $4"
    };
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(raw: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
}

impl Store {
    /// Stores a confirmation token (by hash) bound to `binding`.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn create_confirmation(
        &self,
        token_hash: &str,
        binding: &Confirmation,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO confirmations (token_hash, entity_id, tool, request_hash, preview, rule, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(token_hash)
        .bind(&binding.entity_id)
        .bind(&binding.tool)
        .bind(&binding.request_hash)
        .bind(serde_json::to_string(&binding.preview)?)
        .bind(&binding.rule)
        .bind(ts(Utc::now()))
        .bind(ts(binding.expires_at))
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Uses a confirmation token: checks entity, tool, arguments and expiry, and marks it used,
    /// atomically (two concurrent uses: one succeeds).
    ///
    /// # Errors
    /// [`ConfirmationError`] naming why the token is refused.
    pub async fn use_confirmation(
        &self,
        token_hash: &str,
        entity_id: &str,
        tool: &str,
        request_hash: &str,
    ) -> Result<Confirmation, ConfirmationError> {
        let now = Utc::now();
        // One statement spends a token that is this entity's, for exactly this tool and these
        // arguments, unused and unexpired: a concurrent use of the same token finds it spent.
        let spend = sqlx::query(
            "UPDATE confirmations SET used_at = $1 \
             WHERE token_hash = $2 AND entity_id = $3 AND tool = $4 AND request_hash = $5 \
             AND used_at IS NULL AND expires_at > $1 \
             RETURNING preview, rule, expires_at",
        )
        .bind(ts(now))
        .bind(token_hash)
        .bind(entity_id)
        .bind(tool)
        .bind(request_hash);
        let mut conn = self.write_conn().await?;
        let spent = spend.fetch_optional(&mut *conn).await?;
        if spent.is_some() {
            conn.written().await?;
        }
        let Some(row) = spent else {
            return Err(self
                .why_not_spent(token_hash, entity_id, tool, request_hash)
                .await);
        };
        let preview: String = row.try_get("preview")?;
        Ok(Confirmation {
            entity_id: entity_id.to_string(),
            tool: tool.to_string(),
            request_hash: request_hash.to_string(),
            preview: serde_json::from_str(&preview).map_err(StoreError::from)?,
            rule: row.try_get("rule")?,
            expires_at: parse_ts(&row.try_get::<String, _>("expires_at")?)?,
        })
    }

    /// Why [`Store::use_confirmation`] spent no token, in the order a caller should hear it:
    /// never issued, another entity's, other arguments, used, expired.
    async fn why_not_spent(
        &self,
        token_hash: &str,
        entity_id: &str,
        tool: &str,
        request_hash: &str,
    ) -> ConfirmationError {
        let row = match sqlx::query(
            "SELECT entity_id, tool, request_hash, expires_at, used_at FROM confirmations WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await
        {
            Ok(Some(row)) => row,
            Ok(None) => return ConfirmationError::Unknown,
            Err(e) => return e.into(),
        };
        let explain = || -> Result<ConfirmationError, ConfirmationError> {
            if row.try_get::<String, _>("entity_id")? != entity_id {
                return Ok(ConfirmationError::WrongEntity);
            }
            if row.try_get::<String, _>("tool")? != tool
                || row.try_get::<String, _>("request_hash")? != request_hash
            {
                return Ok(ConfirmationError::Mismatch);
            }
            if row.try_get::<Option<String>, _>("used_at")?.is_some() {
                return Ok(ConfirmationError::Used);
            }
            // Unused and matching, so its expiry is what refused it (or it was spent and
            // given back, `release_confirmation`, between the two statements).
            let expires_at = parse_ts(&row.try_get::<String, _>("expires_at")?)?;
            Ok(if expires_at <= Utc::now() {
                ConfirmationError::Expired(expires_at)
            } else {
                ConfirmationError::Used
            })
        };
        explain().unwrap_or_else(|e| e)
    }

    /// Spends an unused confirmation token without executing anything: the user declined the
    /// confirmation it stands for, and that "no" is final. Returns whether a token was spent.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn void_confirmation(&self, token_hash: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE confirmations SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(ts(Utc::now()))
        .bind(token_hash)
        .write_on(self)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Makes a used confirmation token usable again, when the execution it confirmed sent
    /// nothing (the provider refused the credentials, or could not be reached). Returns whether
    /// a token was given back.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn release_confirmation(&self, token_hash: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE confirmations SET used_at = NULL WHERE token_hash = $1 AND used_at IS NOT NULL",
        )
        .bind(token_hash)
        .write_on(self)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Tries once to take the lease on (`entity_id`, `reference_id`) for `holder` until `lease`
    /// from now; an expired lease is taken over. Returns whether it was taken.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn try_lock_transaction(
        &self,
        entity_id: &str,
        reference_id: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = Utc::now();
        let taken = sqlx::query(
            "INSERT INTO transaction_locks (entity_id, reference_id, holder, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (entity_id, reference_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE transaction_locks.expires_at < $5",
        )
        .bind(entity_id)
        .bind(reference_id)
        .bind(holder)
        .bind(ts(now + lease))
        .bind(ts(now))
        .write_on(self)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// Releases a lease held by `holder`.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn unlock_transaction(
        &self,
        entity_id: &str,
        reference_id: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM transaction_locks WHERE entity_id = $1 AND reference_id = $2 AND holder = $3",
        )
        .bind(entity_id)
        .bind(reference_id)
        .bind(holder)
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Records money paywarden moved: provider transaction `transaction_id`, once (recording
    /// the same transaction again, as reconciliation after a crash may, changes nothing).
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_movement(
        &self,
        entity_id: &str,
        toolset: &str,
        tool: &str,
        reference_id: &str,
        transaction_id: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO movements (entity_id, toolset, tool, reference_id, transaction_id, amount_minor, currency, at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS \
             (SELECT 1 FROM movements WHERE entity_id = $1 AND transaction_id = $5)",
        )
        .bind(entity_id)
        .bind(toolset)
        .bind(tool)
        .bind(reference_id)
        .bind(transaction_id)
        .bind(amount_minor)
        .bind(currency)
        .bind(ts(Utc::now()))
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Reserves `amount_minor` of `currency` against this entity's daily total until the end
    /// of the current UTC day (see migration `0007_limit_reservations`), without deciding
    /// anything: for a call a person approved. A call that must stay within the limits uses
    /// [`Store::decide_and_reserve`]. Returns
    /// the reservation's id, for [`Store::release_reservation`]. With `key`, the reservation is
    /// recorded on that idempotency key in the same transaction, so a call that dies holding it
    /// leaves it to the key's reconciliation, never orphaned.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn reserve_limit(
        &self,
        entity_id: &str,
        currency: &str,
        amount_minor: i64,
        key: Option<&str>,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.begin_write().await?;
        insert_reservation(
            &mut tx,
            &id,
            entity_id,
            currency,
            amount_minor,
            key,
            Utc::now(),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Decides a call's cumulative limits and reserves its amount in ONE write transaction that
    /// holds the entity's limit row for `currency` ([`limit_lease_name`]) locked until it
    /// commits: on PostgreSQL a row lock, on SQLite the database's write lock. Inside it: the
    /// minor units of `currency` this entity moved today plus those reserved by calls in flight
    /// are read in one statement, `decide(total_minor)` returns `Some(r)` to refuse (nothing is
    /// reserved: [`LimitDecision::Refused`]) or `None`, and then `amount_minor` is reserved
    /// until the end of the UTC day (recorded on idempotency key `key` when given, as
    /// [`Store::reserve_limit`] does). Another process deciding for the same entity and
    /// currency waits for the commit, so it reads this reservation; a process that dies
    /// mid-decision rolls back with its connection, so nothing stays locked and no lease has to
    /// expire (a lease that expired while its holder was stalled is what let two replicas
    /// decide on the same total). A row left by an earlier version's lease that has not expired
    /// gives [`LimitDecision::Held`]. On SQLite, waiting for this process's write turn ends at
    /// `wait_until` with [`LimitDecision::TimedOut`] (the `BEGIN IMMEDIATE` after it still
    /// waits up to the busy timeout for another process's write lock).
    ///
    /// # Errors
    /// [`StoreError`] on database failure (on SQLite, also when the write lock could not be
    /// taken within the busy timeout); nothing was reserved.
    pub async fn decide_and_reserve<R>(
        &self,
        entity_id: &str,
        currency: &str,
        amount_minor: i64,
        key: Option<&str>,
        wait_until: tokio::time::Instant,
        decide: impl FnOnce(i64) -> Option<R>,
    ) -> Result<LimitDecision<R>, StoreError> {
        let now = Utc::now();
        let midnight = utc_midnight(now);
        let lock_name = limit_lease_name(currency);
        let id = uuid::Uuid::new_v4().to_string();
        let Some(mut tx) = self.begin_write_until(wait_until).await? else {
            return Ok(LimitDecision::TimedOut);
        };
        let taken = match self.engine {
            // Taking the row (absent, or an expired lease of an earlier version) locks it until
            // this transaction ends; a concurrent decider's statement waits here.
            Engine::Postgres => {
                sqlx::query(
                    "INSERT INTO transaction_locks (entity_id, reference_id, holder, expires_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (entity_id, reference_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE transaction_locks.expires_at < $5",
                )
                .bind(entity_id)
                .bind(&lock_name)
                .bind(&id)
                .bind(ts(now + Duration::seconds(10)))
                .bind(ts(now))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1
            }
            // The write transaction is the lock: no other connection writes until it ends, so
            // the row is only read, for an earlier version's lease that has not expired (a
            // write and a delete of the row would lock nothing more).
            Engine::Sqlite => {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM transaction_locks WHERE entity_id = $1 AND reference_id = $2 AND expires_at >= $3",
                )
                .bind(entity_id)
                .bind(&lock_name)
                .bind(ts(now))
                .fetch_one(&mut *tx)
                .await?
                    == 0
            }
        };
        if !taken {
            tx.rollback().await?;
            return Ok(LimitDecision::Held);
        }
        // One statement: a call that records its movement and then releases its reservation
        // between two separate reads would be missed by both.
        let total: i64 = sqlx::query_scalar(concat!(
            "SELECT CAST((",
            moved_since!(),
            ") + (",
            reserved_since!(),
            ") AS BIGINT)"
        ))
        .bind(entity_id)
        .bind(currency)
        .bind(ts(midnight))
        .bind(ts(now))
        .fetch_one(&mut *tx)
        .await?;
        if let Some(refused) = decide(total) {
            tx.rollback().await?;
            return Ok(LimitDecision::Refused(refused));
        }
        match self.engine {
            // PostgreSQL: the reservation, its name on the key and the limit row's removal in
            // one statement (data-modifying `WITH`s, which SQLite does not have): this process's
            // deciders queue at an in-process gate held for the whole decision
            // (`Pipeline::reserve_checked`), other processes' at the row's lock, so every round
            // trip spared here is spared for all of them. A `NULL` key names no row.
            Engine::Postgres => {
                bind_reservation(
                    sqlx::query(
                        "WITH unlocked AS (DELETE FROM transaction_locks WHERE entity_id = $2 AND reference_id = $7), \
                         named AS (UPDATE idempotency_keys SET reservation_id = $1 WHERE entity_id = $2 AND idempotency_key = $8) \
                         INSERT INTO limit_reservations (id, entity_id, currency, amount_minor, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    ),
                    &id,
                    entity_id,
                    currency,
                    amount_minor,
                    now,
                )
                .bind(&lock_name)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            }
            Engine::Sqlite => {
                insert_reservation(&mut tx, &id, entity_id, currency, amount_minor, key, now)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(LimitDecision::Reserved(id))
    }

    /// Releases a reservation: its call settled (the movement is recorded, or nothing moved).
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn release_reservation(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM limit_reservations WHERE id = $1")
            .bind(id)
            .write_on(self)
            .await?;
        Ok(())
    }

    /// Minor units of `currency` reserved today by this entity's calls still in flight (or of
    /// unknown outcome), not yet expired.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn reserved_today(&self, entity_id: &str, currency: &str) -> Result<i64, StoreError> {
        let now = Utc::now();
        let total: i64 =
            sqlx::query_scalar(concat!("SELECT CAST((", reserved_since!(), ") AS BIGINT)"))
                .bind(entity_id)
                .bind(currency)
                .bind(ts(utc_midnight(now)))
                .bind(ts(now))
                .fetch_one(self.pool())
                .await?;
        Ok(total)
    }

    /// Minor units of `currency` this entity moved through paywarden since 00:00 UTC today.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    pub async fn moved_today(&self, entity_id: &str, currency: &str) -> Result<i64, StoreError> {
        let total: i64 =
            sqlx::query_scalar(concat!("SELECT CAST((", moved_since!(), ") AS BIGINT)"))
                .bind(entity_id)
                .bind(currency)
                .bind(ts(utc_midnight(Utc::now())))
                .fetch_one(self.pool())
                .await?;
        Ok(total)
    }
}

/// Inserts reservation `id` of `amount_minor` (negative: 0) of `currency` for `entity_id`,
/// expiring at the end of `now`'s UTC day, and records it on idempotency key `key` when given;
/// inside the caller's write transaction.
async fn insert_reservation(
    tx: &mut super::WriteTx,
    id: &str,
    entity_id: &str,
    currency: &str,
    amount_minor: i64,
    key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some(key) = key {
        sqlx::query(
            "UPDATE idempotency_keys SET reservation_id = $1 WHERE entity_id = $2 AND idempotency_key = $3",
        )
        .bind(id)
        .bind(entity_id)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    }
    bind_reservation(
        sqlx::query(INSERT_RESERVATION),
        id,
        entity_id,
        currency,
        amount_minor,
        now,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A reservation's row; its six parameters are bound by [`bind_reservation`].
const INSERT_RESERVATION: &str = "INSERT INTO limit_reservations (id, entity_id, currency, amount_minor, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// Binds `$1` to `$6` of a statement that inserts reservation `id` (see
/// [`INSERT_RESERVATION`]): `amount_minor` of `currency` (negative: 0), made `now`, expiring
/// at the end of `now`'s UTC day.
fn bind_reservation<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    id: &'q str,
    entity_id: &'q str,
    currency: &'q str,
    amount_minor: i64,
    now: DateTime<Utc>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let end_of_day = utc_midnight(now) + Duration::days(1);
    query
        .bind(id)
        .bind(entity_id)
        .bind(currency)
        .bind(amount_minor.max(0))
        .bind(ts(now))
        .bind(ts(end_of_day))
}
