//! The SQLite state: one row per transaction (successful or not), in minor units with the
//! currency, never a full card number or CVV.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{Datelike, NaiveDateTime, Timelike};
use paywarden_domain::{Currency, Money, PaymentType, TxRecord};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::error::EmulatorError;

/// How stored times are written: UTC, second precision, sorts chronologically as text.
pub(crate) const DB_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// How long a writer waits for SQLite's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The card data kept for an initial payment (OPP's `card` object, never the PAN or CVV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CardSummary {
    /// First 6 digits.
    pub bin: String,
    /// Last 4 digits.
    pub last4: String,
    pub holder: Option<String>,
    /// `MM`.
    pub expiry_month: String,
    /// `YYYY`.
    pub expiry_year: String,
}

/// One stored transaction.
#[derive(Debug, Clone)]
pub(crate) struct Tx {
    /// 32 lowercase hex characters.
    pub id: String,
    pub entity_id: String,
    /// The id of the payment's initial (PA/DB) transaction; its own id for an initial payment.
    pub root_id: String,
    /// The transaction a back-office operation referenced (OPP `referencedId`).
    pub referenced_id: Option<String>,
    pub payment_type: PaymentType,
    pub payment_brand: String,
    pub amount: Money,
    pub descriptor: String,
    pub merchant_transaction_id: Option<String>,
    pub succeeded: bool,
    pub result_code: String,
    pub result_description: String,
    /// Why a rejection happened, in words (OPP `resultDetails.ExtendedDescription`).
    pub result_reason: Option<String>,
    pub card: Option<CardSummary>,
    /// OPP `resultDetails.ConnectorTxID1`.
    pub connector_tx_id: String,
    pub ndc: String,
    /// UTC.
    pub created_at: NaiveDateTime,
    /// `customParameters[NAME]=VALUE` as sent (name, value), echoed in answers.
    pub custom_parameters: Vec<(String, String)>,
}

impl Tx {
    /// The ledger's view of this transaction.
    pub(crate) fn record(&self) -> TxRecord {
        TxRecord {
            id: self.id.clone(),
            payment_type: self.payment_type,
            amount: self.amount,
            referenced_id: self.referenced_id.clone(),
            succeeded: self.succeeded,
        }
    }
}

/// What a search matches (always within one entity).
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub merchant_transaction_id: Option<String>,
    /// Inclusive, UTC.
    pub from: Option<NaiveDateTime>,
    /// Inclusive, UTC.
    pub to: Option<NaiveDateTime>,
    /// `None` = every type.
    pub payment_types: Option<Vec<PaymentType>>,
    /// False when a `paymentMethods` filter excludes cards (every emulator payment is `CC`).
    pub methods_match: bool,
}

/// One page: 1-based `page_no`, `limit` rows per page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page {
    pub limit: u32,
    pub page_no: u32,
}

/// The emulator's SQLite database.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    /// The file's one connection for every statement but the search's ([`CONNECTIONS`]):
    /// OPP's, ifthenpay's and Stripe's reads and writes take turns at it (sqlx's pool hands it
    /// out first come, first served), so the process's writers never meet at SQLite's write
    /// lock, and its page cache outlives its own commits.
    pool: SqlitePool,
    /// The search's connections (`Store::search`): the same file read through a memory map
    /// (`MMAP_SIZE`); every other statement uses `pool`.
    scans: SqlitePool,
}

/// How many connections the emulator's file has for everything but the search: one.
///
/// A SQLite connection in WAL mode empties its whole page cache when it begins a read after
/// *another* connection committed (`pagerBeginReadTransaction` in `pager.c`: `pager_reset`
/// when the WAL changed); after its own commits it keeps it. With 8 pooled connections every
/// payment, capture or refund the emulator stored made the next read on each other connection
/// read its pages from the file again (`pread`, then SQLite's page cache rebuilt): 23 % of
/// the emulator's CPU in the confirmed refund flow, and with it about 6 % of the server's
/// (docs/performance.md, "The emulator's file: one connection"). With one connection the
/// pages its statements touch stay cached across the commits; the statements are short
/// (10-250 µs: a payment's transactions, one insert), so taking turns costs less than
/// re-reading. Other processes on the same file (a second emulator) still wait for SQLite's
/// write lock in its busy handler (`BUSY_TIMEOUT`).
pub(crate) const CONNECTIONS: u32 = 1;

/// How many connections the search (`Store::scans`) reads the file through.
const SEARCH_CONNECTIONS: u32 = 8;

pub(crate) const COLUMNS: &str =
    "id, entity_id, root_id, referenced_id, payment_type, payment_brand, \
     amount_minor, currency, descriptor, merchant_transaction_id, succeeded, result_code, \
     result_description, result_reason, card_bin, card_last4, card_holder, card_expiry_month, \
     card_expiry_year, connector_tx_id, ndc, created_at, custom_parameters";

/// How long a query outside a transaction may run on the calling task's thread before it is
/// sent to its connection's worker thread (`SqliteConnectOptions::inline_read_budget`,
/// paywarden's sqlx-sqlite patch; docs/performance.md, "Queries on the caller's thread"). It
/// applies to every query on the file's connections, OPP's, ifthenpay's and Stripe's alike (they
/// share [`CONNECTIONS`]): a payment's transactions or a page of a search take 10-250 µs, and no
/// query calls a function with side effects (`random()`, `changes()`), so one past the budget
/// that runs again on the worker answers the same.
const INLINE_READ_BUDGET: std::time::Duration = std::time::Duration::from_micros(200);

/// How much of the file each connection of the search pool (`Store::scans`) reads through a
/// memory map (`PRAGMA mmap_size`, in bytes: 1 GiB) instead of copying pages out of the OS
/// page cache with `pread`. A search over the 1,000,000-transaction benchmark database (690 MB)
/// reads pages all over the file, and the copies and SQLite's page cache lookups were about a
/// fifth of the server's CPU (docs/performance.md, "Search at scale"). The mapped pages are the
/// page cache's own, so `VmRSS` counts them once per connection that touched them (`RssFile`;
/// `Pss_File` in `/proc/PID/smaps_rollup` counts them once); a file beyond 1 GiB is read with
/// `pread` past that. SQLite's caveat applies: an I/O error on a mapped page is a `SIGBUS`, not
/// an error code (the emulator's file is its own; a real provider's data is not on this
/// machine).
///
/// Only the search pool maps the file. A connection that begins a read transaction after
/// another connection committed drops its whole map (`pagerBeginReadTransaction` in SQLite's
/// `pager.c` calls `sqlite3OsUnfetch(fd, 0, 0)` when the WAL changed) and faults the pages back
/// in; with every connection mapping the file, each payment, capture or refund cost every
/// other connection an `munmap` (a TLB shoot-down across the process's threads): 6.4 % of the
/// server's CPU in the confirmed refund flow (docs/performance.md, "The emulator's map, for
/// searches only").
const MMAP_SIZE: &str = "1073741824";

impl Store {
    /// Opens (creating) the file, in WAL mode, and applies the embedded migrations.
    pub(crate) async fn open(path: &Path) -> Result<Store, EmulatorError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .inline_read_budget(Some(INLINE_READ_BUDGET));
        let open = |options: SqliteConnectOptions, connections: u32| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .connect_with(options)
        };
        let opened = |source| EmulatorError::Open {
            path: path.to_path_buf(),
            source,
        };
        let pool = open(options.clone(), CONNECTIONS).await.map_err(opened)?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let scans = open(options.pragma("mmap_size", MMAP_SIZE), SEARCH_CONNECTIONS)
            .await
            .map_err(opened)?;
        Ok(Store { pool, scans })
    }

    /// Closes both pools, waiting for their connections to close.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
        self.scans.close().await;
    }

    /// The file's one connection's pool ([`CONNECTIONS`]), shared by the ifthenpay and Stripe
    /// sides, whose tables are in the same file.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Stores an initial payment (PA/DB) in its own transaction.
    pub(crate) async fn insert(&self, tx: &Tx) -> Result<(), EmulatorError> {
        let mut conn = self.pool.acquire().await?;
        insert(&mut conn, tx).await
    }

    /// One transaction of `entity_id` by id (another entity's id is `None`).
    pub(crate) async fn find(
        &self,
        entity_id: &str,
        id: &str,
    ) -> Result<Option<Tx>, EmulatorError> {
        let mut conn = self.pool.acquire().await?;
        find(&mut conn, entity_id, id).await
    }

    /// Transaction `id` of `entity_id` and every transaction of its payment (the tree it
    /// belongs to, itself included), oldest first, read in one statement; `None` when `id` is
    /// not a transaction of `entity_id`.
    pub(crate) async fn with_tree(
        &self,
        entity_id: &str,
        id: &str,
    ) -> Result<Option<(Tx, Vec<Tx>)>, EmulatorError> {
        let mut conn = self.pool.acquire().await?;
        with_tree(&mut conn, entity_id, id).await
    }

    /// A back-office operation on `id`, atomically: inside one `BEGIN IMMEDIATE` write
    /// transaction it loads the referenced transaction and its whole payment tree, asks `build`
    /// for the new transaction (or a refusal, which stores nothing), stores it and commits.
    /// Concurrent operations on the same payment are therefore evaluated one after another.
    ///
    /// `Ok(None)` when `id` is not a transaction of `entity_id`.
    pub(crate) async fn backoffice<R>(
        &self,
        entity_id: &str,
        id: &str,
        build: impl FnOnce(&Tx, &[Tx]) -> Result<Tx, R>,
    ) -> Result<Option<Result<Tx, R>>, EmulatorError> {
        let mut db_tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some((target, tree)) = with_tree(&mut db_tx, entity_id, id).await? else {
            db_tx.rollback().await?;
            return Ok(None);
        };
        match build(&target, &tree) {
            Ok(new_tx) => {
                insert(&mut db_tx, &new_tx).await?;
                db_tx.commit().await?;
                Ok(Some(Ok(new_tx)))
            }
            Err(refusal) => {
                db_tx.rollback().await?;
                Ok(Some(Err(refusal)))
            }
        }
    }

    /// Settles transaction `id` (of any entity) atomically: inside one `BEGIN IMMEDIATE` write
    /// transaction it loads it, the transaction it references (itself for an initial payment)
    /// and the whole payment tree, asks `settle` for its new state (or a refusal, which
    /// changes nothing) and stores the new result. `Ok(None)` when there is no such
    /// transaction.
    pub(crate) async fn settle<R>(
        &self,
        id: &str,
        settle: impl FnOnce(&Tx, &Tx, &[Tx]) -> Result<Tx, R>,
    ) -> Result<Option<Result<Tx, R>>, EmulatorError> {
        let mut db_tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let entity: Option<String> =
            sqlx::query_scalar("SELECT entity_id FROM transactions WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *db_tx)
                .await?;
        let Some(entity) = entity else {
            db_tx.rollback().await?;
            return Ok(None);
        };
        let Some(tx) = find(&mut db_tx, &entity, id).await? else {
            db_tx.rollback().await?;
            return Ok(None);
        };
        let target = match tx.referenced_id.as_deref() {
            Some(r) => find(&mut db_tx, &entity, r).await?,
            None => Some(tx.clone()),
        };
        let Some(target) = target else {
            db_tx.rollback().await?;
            return Ok(None);
        };
        let tree = tree(&mut db_tx, &entity, &tx.root_id).await?;
        match settle(&tx, &target, &tree) {
            Ok(settled) => {
                sqlx::query(
                    "UPDATE transactions SET succeeded = ?, result_code = ?, \
                     result_description = ?, result_reason = ? WHERE id = ?",
                )
                .bind(settled.succeeded)
                .bind(&settled.result_code)
                .bind(&settled.result_description)
                .bind(&settled.result_reason)
                .bind(&settled.id)
                .execute(&mut *db_tx)
                .await?;
                db_tx.commit().await?;
                Ok(Some(Ok(settled)))
            }
            Err(refusal) => {
                db_tx.rollback().await?;
                Ok(Some(Err(refusal)))
            }
        }
    }

    /// The transactions of `entity_id` matching `filter`, oldest first (by time, then by the
    /// order they were stored), with the total match count. Without `page`, all of them.
    ///
    /// A paged date-range search (both bounds, no merchant reference) neither counts nor skips
    /// row by row over the whole range: see `report_page`. Count and page are read in one read
    /// transaction, so they agree with each other.
    pub(crate) async fn search(
        &self,
        entity_id: &str,
        filter: &Filter,
        page: Option<Page>,
    ) -> Result<(Vec<Tx>, u64), EmulatorError> {
        if !filter.methods_match || filter.payment_types.as_ref().is_some_and(Vec::is_empty) {
            return Ok((Vec::new(), 0));
        }
        let mut db_tx = self.scans.begin().await?;
        let found = match (
            page,
            filter.from,
            filter.to,
            &filter.merchant_transaction_id,
        ) {
            (Some(page), Some(from), Some(to), None) => {
                report_page(&mut db_tx, entity_id, filter, from, to, page).await?
            }
            _ => {
                let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM transactions");
                push_filter(&mut count, entity_id, filter, None);
                let total: i64 = count.build_query_scalar().fetch_one(&mut *db_tx).await?;
                let mut select =
                    QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM transactions"));
                push_filter(&mut select, entity_id, filter, None);
                select.push(" ORDER BY created_at, seq");
                if let Some(page) = page {
                    let offset = i64::from(page.page_no.saturating_sub(1)) * i64::from(page.limit);
                    select.push(" LIMIT ");
                    select.push_bind(i64::from(page.limit));
                    select.push(" OFFSET ");
                    select.push_bind(offset);
                }
                let rows = select.build().fetch_all(&mut *db_tx).await?;
                let txs = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
                (txs, u64::try_from(total).unwrap_or(0))
            }
        };
        db_tx.commit().await?;
        Ok(found)
    }
}

/// One page of the date-range report `from..=to` and its total count, without walking the
/// whole range: the range is cut into time-ordered pieces (`report_pieces`: its first partial
/// hour, the whole hours left in its first day, its whole days, the whole hours of its last
/// day, its last partial hour), each counted the cheapest way: the partial hours on the
/// `(entity_id, created_at, seq)` index, the whole hours from `transaction_hour_counts`
/// (migration 0008) and the whole days from `transaction_day_counts` (migration 0006), one row
/// per hour or day. One statement reads a count per partial hour, hour and day of the range
/// (about 75 rows for 30 days; summed here, `locate`, which finds the first one whose running
/// count passes the page's offset); a day is then narrowed to its hour by that day's hour
/// counts (a second statement, 24 rows at most). The page seeks on the
/// index to that hour's (or partial hour's) first second, and OFFSET skips only its rows: at
/// most one hour of rows, whatever the page number. All statements run on `conn`, in the
/// caller's read transaction, so count and page agree.
async fn report_page(
    conn: &mut sqlx::SqliteConnection,
    entity_id: &str,
    filter: &Filter,
    from: NaiveDateTime,
    to: NaiveDateTime,
    page: Page,
) -> Result<(Vec<Tx>, u64), EmulatorError> {
    if from > to {
        return Ok((Vec::new(), 0));
    }
    let offset = u64::from(page.page_no.saturating_sub(1)) * u64::from(page.limit);
    let pieces = report_pieces(from, to);
    // The counts per piece row (a partial hour, an hour or a day), summed here: a window
    // function and its sorts in SQL cost more than the counting itself.
    let counts = piece_counts(conn, entity_id, filter, &pieces).await?;
    let (total, found) = locate(counts, offset);
    let Some((seek_k, mut seek_start, mut before)) = found else {
        // The offset is at or past the last match.
        return Ok((Vec::new(), total));
    };
    if matches!(
        usize::try_from(seek_k).ok().and_then(|k| pieces.get(k)),
        Some(Piece::Days { .. })
    ) {
        // The offset falls in a whole day: the hour of that day it falls in, so that the page
        // skips at most an hour of rows.
        let day = parse_db_time(&seek_start)?.date();
        if let (Some(first), Some(last)) = (day.and_hms_opt(0, 0, 0), day.and_hms_opt(23, 0, 0)) {
            let counts =
                piece_counts(conn, entity_id, filter, &[Piece::Hours { first, last }]).await?;
            // None only if the hour counts disagreed with the day's; the day's start is then
            // still a correct (slower) seek point.
            if let (_, Some((_, hour_start, hour_before))) =
                locate(counts, offset.saturating_sub(before))
            {
                seek_start = hour_start;
                before += hour_before;
            }
        }
    }
    let start = parse_db_time(&seek_start)?;
    let mut select = QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM transactions"));
    push_filter(&mut select, entity_id, filter, Some(start));
    select.push(" ORDER BY created_at, seq LIMIT ");
    select.push_bind(i64::from(page.limit));
    select.push(" OFFSET ");
    select.push_bind(offset_i64(offset.saturating_sub(before)));
    let rows = select.build().fetch_all(&mut *conn).await?;
    let txs = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok((txs, total))
}

/// One row per partial hour, hour and day of `pieces` (in no particular order): the piece's
/// index in `pieces`, the bucket's first second (`DB_TIME_FORMAT`) and how many of
/// `entity_id`'s transactions of `filter`'s types it holds. One statement: a `UNION ALL` of an
/// index count per `Rows` piece and a `GROUP BY` over `transaction_hour_counts` or
/// `transaction_day_counts` per `Hours` or `Days` piece.
async fn piece_counts(
    conn: &mut sqlx::SqliteConnection,
    entity_id: &str,
    filter: &Filter,
    pieces: &[Piece],
) -> Result<Vec<(i64, String, i64)>, EmulatorError> {
    let mut q = QueryBuilder::<Sqlite>::new("");
    for (k, piece) in pieces.iter().enumerate() {
        if k > 0 {
            q.push(" UNION ALL ");
        }
        q.push(format!("SELECT {k}, "));
        // A count table, its key column, what makes a key a time, and the piece's keys.
        let (table, column, to_time, first, last) = match piece {
            Piece::Rows { from, to } => {
                let from = from.format(DB_TIME_FORMAT).to_string();
                q.push_bind(from.clone());
                q.push(", (SELECT COUNT(*) FROM transactions WHERE entity_id = ");
                q.push_bind(entity_id.to_string());
                q.push(" AND created_at >= ");
                q.push_bind(from);
                q.push(" AND created_at <= ");
                q.push_bind(to.format(DB_TIME_FORMAT).to_string());
                push_types(&mut q, filter);
                q.push(")");
                continue;
            }
            Piece::Hours { first, last } => (
                "transaction_hour_counts",
                "hour",
                ":00:00",
                first.format(HOUR_FORMAT).to_string(),
                last.format(HOUR_FORMAT).to_string(),
            ),
            Piece::Days { first, last } => (
                "transaction_day_counts",
                "day",
                " 00:00:00",
                first.format("%Y-%m-%d").to_string(),
                last.format("%Y-%m-%d").to_string(),
            ),
        };
        q.push(format!(
            "{column} || '{to_time}', SUM(n) FROM {table} WHERE entity_id = "
        ));
        q.push_bind(entity_id.to_string());
        q.push(format!(" AND {column} >= "));
        q.push_bind(first);
        q.push(format!(" AND {column} <= "));
        q.push_bind(last);
        push_types(&mut q, filter);
        q.push(format!(" GROUP BY {column}"));
    }
    Ok(q.build_query_as().fetch_all(&mut *conn).await?)
}

/// A stored time (`DB_TIME_FORMAT`), or `Corrupt`.
fn parse_db_time(raw: &str) -> Result<NaiveDateTime, EmulatorError> {
    NaiveDateTime::parse_from_str(raw, DB_TIME_FORMAT)
        .map_err(|_| EmulatorError::Corrupt(format!("report piece start {raw:?}")))
}

/// The total of `counts` (rows of piece index, bucket start, count) and the bucket that holds
/// match number `offset` (0-based) in time order: its piece index, its start and how many
/// matches lie before it. `None` when `offset` is at or past the total.
fn locate(mut counts: Vec<(i64, String, i64)>, offset: u64) -> (u64, Option<(i64, String, u64)>) {
    counts.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut total = 0u64;
    let mut found = None;
    for (k, start, n) in counts {
        let n = u64::try_from(n).unwrap_or(0);
        if found.is_none() && n > 0 && total + n > offset {
            found = Some((k, start, total));
        }
        total += n;
    }
    (total, found)
}

/// A row offset as SQLite's integer (saturating: no report has 2^63 rows).
fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// How `transaction_hour_counts.hour` is written: the first 13 characters of a stored time.
const HOUR_FORMAT: &str = "%Y-%m-%d %H";

/// One piece of a report range (see `report_pieces`), in UTC, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// The transactions in `from..=to`, counted on the `(entity_id, created_at, seq)` index.
    Rows {
        from: NaiveDateTime,
        to: NaiveDateTime,
    },
    /// The whole hours starting at `first` through the one starting at `last`.
    Hours {
        first: NaiveDateTime,
        last: NaiveDateTime,
    },
    /// The whole days `first..=last`.
    Days {
        first: chrono::NaiveDate,
        last: chrono::NaiveDate,
    },
}

/// `from..=to` (`from <= to`) cut into disjoint, time-ordered pieces that cover it exactly:
/// its first partial hour and its last partial hour as `Rows` (one piece when both ends fall
/// in one hour), and between them the whole hours of its first day, its whole days and the
/// whole hours of its last day (the whole hours between the ends when both fall in one day).
/// A range with an end outside the years 0000..=9999, or whose hour arithmetic would leave
/// chrono's range, is one `Rows` piece.
fn report_pieces(from: NaiveDateTime, to: NaiveDateTime) -> Vec<Piece> {
    let whole = vec![Piece::Rows { from, to }];
    // The count tables' keys are the stored text's first 13 and 10 characters, which order
    // and cut like the times only for 4-digit years (chrono writes other years signed:
    // "-0001-12-31 …", "+10000-01-01 …"). A range reaching outside them is counted on the
    // index, as the plain scan compares it.
    if ![from, to].iter().all(|t| (0..=9999).contains(&t.year())) {
        return whole;
    }
    let hour_of = |t: NaiveDateTime| t.date().and_hms_opt(t.hour(), 0, 0);
    let (Some(first_hour), Some(last_hour)) = (hour_of(from), hour_of(to)) else {
        return whole;
    };
    if first_hour == last_hour {
        return whole;
    }
    let hour = chrono::Duration::hours(1);
    let second = chrono::Duration::seconds(1);
    let (Some(after_first), Some(before_last)) = (
        first_hour.checked_add_signed(hour),
        last_hour.checked_sub_signed(hour),
    ) else {
        return whole;
    };
    let Some(first_end) = after_first.checked_sub_signed(second) else {
        return whole;
    };
    let mut pieces = vec![Piece::Rows {
        from,
        to: first_end,
    }];
    let (first_day, last_day) = (from.date(), to.date());
    if first_day == last_day {
        if after_first <= before_last {
            pieces.push(Piece::Hours {
                first: after_first,
                last: before_last,
            });
        }
    } else {
        let (Some(first_day_last_hour), Some(last_day_first_hour)) = (
            first_day.and_hms_opt(23, 0, 0),
            last_day.and_hms_opt(0, 0, 0),
        ) else {
            return whole;
        };
        if after_first <= first_day_last_hour {
            pieces.push(Piece::Hours {
                first: after_first,
                last: first_day_last_hour,
            });
        }
        if let (Some(d1), Some(d2)) = (first_day.succ_opt(), last_day.pred_opt()) {
            if d1 <= d2 {
                pieces.push(Piece::Days {
                    first: d1,
                    last: d2,
                });
            }
        }
        if last_day_first_hour <= before_last {
            pieces.push(Piece::Hours {
                first: last_day_first_hour,
                last: before_last,
            });
        }
    }
    pieces.push(Piece::Rows {
        from: last_hour,
        to,
    });
    pieces
}

/// ` AND payment_type IN (...)` for `filter`'s types (` AND 0` for an empty list).
fn push_types(q: &mut QueryBuilder<'_, Sqlite>, filter: &Filter) {
    if let Some(types) = &filter.payment_types {
        if types.is_empty() {
            q.push(" AND 0");
        } else {
            q.push(" AND payment_type IN (");
            let mut separated = q.separated(", ");
            for t in types {
                separated.push_bind(t.code());
            }
            separated.push_unseparated(")");
        }
    }
}

/// The WHERE clause of `filter` for `entity_id`; `start`, when given, replaces `filter.from`
/// as the lower time bound (a report page's seek point).
fn push_filter(
    q: &mut QueryBuilder<'_, Sqlite>,
    entity_id: &str,
    filter: &Filter,
    start: Option<NaiveDateTime>,
) {
    q.push(" WHERE entity_id = ");
    q.push_bind(entity_id.to_string());
    if !filter.methods_match {
        q.push(" AND 0");
    }
    if let Some(m) = &filter.merchant_transaction_id {
        q.push(" AND merchant_transaction_id = ");
        q.push_bind(m.clone());
    }
    if let Some(from) = start.or(filter.from) {
        q.push(" AND created_at >= ");
        q.push_bind(from.format(DB_TIME_FORMAT).to_string());
    }
    if let Some(to) = filter.to {
        q.push(" AND created_at <= ");
        q.push_bind(to.format(DB_TIME_FORMAT).to_string());
    }
    push_types(q, filter);
}

async fn insert(conn: &mut sqlx::SqliteConnection, tx: &Tx) -> Result<(), EmulatorError> {
    let card = tx.card.as_ref();
    sqlx::query(&format!(
        "INSERT INTO transactions ({COLUMNS}) VALUES \
         (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&tx.id)
    .bind(&tx.entity_id)
    .bind(&tx.root_id)
    .bind(&tx.referenced_id)
    .bind(tx.payment_type.code())
    .bind(&tx.payment_brand)
    .bind(tx.amount.minor_units())
    .bind(tx.amount.currency().code())
    .bind(&tx.descriptor)
    .bind(&tx.merchant_transaction_id)
    .bind(tx.succeeded)
    .bind(&tx.result_code)
    .bind(&tx.result_description)
    .bind(&tx.result_reason)
    .bind(card.map(|c| c.bin.as_str()))
    .bind(card.map(|c| c.last4.as_str()))
    .bind(card.and_then(|c| c.holder.as_deref()))
    .bind(card.map(|c| c.expiry_month.as_str()))
    .bind(card.map(|c| c.expiry_year.as_str()))
    .bind(&tx.connector_tx_id)
    .bind(&tx.ndc)
    .bind(tx.created_at.format(DB_TIME_FORMAT).to_string())
    .bind(custom_json(&tx.custom_parameters))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn find(
    conn: &mut sqlx::SqliteConnection,
    entity_id: &str,
    id: &str,
) -> Result<Option<Tx>, EmulatorError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM transactions WHERE entity_id = ? AND id = ?"
    ))
    .bind(entity_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

async fn with_tree(
    conn: &mut sqlx::SqliteConnection,
    entity_id: &str,
    id: &str,
) -> Result<Option<(Tx, Vec<Tx>)>, EmulatorError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM transactions WHERE entity_id = ?1 AND root_id = \
         (SELECT root_id FROM transactions WHERE entity_id = ?1 AND id = ?2) \
         ORDER BY created_at, seq"
    ))
    .bind(entity_id)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let tree = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(tree
        .iter()
        .find(|t| t.id == id)
        .cloned()
        .map(|target| (target, tree)))
}

async fn tree(
    conn: &mut sqlx::SqliteConnection,
    entity_id: &str,
    root_id: &str,
) -> Result<Vec<Tx>, EmulatorError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM transactions WHERE entity_id = ? AND root_id = ? \
         ORDER BY created_at, seq"
    ))
    .bind(entity_id)
    .bind(root_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

fn from_row(row: &SqliteRow) -> Result<Tx, EmulatorError> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: String| EmulatorError::Corrupt(format!("transaction {id}: {what}"));

    let raw_type: String = row.try_get("payment_type")?;
    let payment_type = PaymentType::from_str(&raw_type)
        .map_err(|_| corrupt(format!("unknown payment type {raw_type:?}")))?;
    let raw_currency: String = row.try_get("currency")?;
    let currency = Currency::from_code(&raw_currency).map_err(|e| corrupt(e.to_string()))?;
    let minor: i64 = row.try_get("amount_minor")?;
    let amount = Money::from_minor(minor, currency).map_err(|e| corrupt(e.to_string()))?;
    let raw_time: String = row.try_get("created_at")?;
    let created_at = NaiveDateTime::parse_from_str(&raw_time, DB_TIME_FORMAT)
        .map_err(|e| corrupt(format!("bad time {raw_time:?}: {e}")))?;

    let bin: Option<String> = row.try_get("card_bin")?;
    let last4: Option<String> = row.try_get("card_last4")?;
    let card = match (bin, last4) {
        (Some(bin), Some(last4)) => Some(CardSummary {
            bin,
            last4,
            holder: row.try_get("card_holder")?,
            expiry_month: row
                .try_get::<Option<String>, _>("card_expiry_month")?
                .unwrap_or_default(),
            expiry_year: row
                .try_get::<Option<String>, _>("card_expiry_year")?
                .unwrap_or_default(),
        }),
        _ => None,
    };

    Ok(Tx {
        entity_id: row.try_get("entity_id")?,
        root_id: row.try_get("root_id")?,
        referenced_id: row.try_get("referenced_id")?,
        payment_type,
        payment_brand: row.try_get("payment_brand")?,
        amount,
        descriptor: row.try_get("descriptor")?,
        merchant_transaction_id: row.try_get("merchant_transaction_id")?,
        succeeded: row.try_get("succeeded")?,
        result_code: row.try_get("result_code")?,
        result_description: row.try_get("result_description")?,
        result_reason: row.try_get("result_reason")?,
        card,
        connector_tx_id: row.try_get("connector_tx_id")?,
        ndc: row.try_get("ndc")?,
        created_at,
        custom_parameters: custom_from_json(row.try_get("custom_parameters")?)
            .map_err(|e| corrupt(format!("bad customParameters: {e}")))?,
        id,
    })
}

/// Custom parameters as stored: a JSON object, or NULL when there are none.
fn custom_json(custom: &[(String, String)]) -> Option<String> {
    if custom.is_empty() {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> = custom
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    Some(serde_json::Value::Object(map).to_string())
}

fn custom_from_json(raw: Option<String>) -> Result<Vec<(String, String)>, serde_json::Error> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(&raw)?;
    Ok(map.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan SQLite chooses for the query `search` builds for a merchant reference (the
    /// filter and order of `GET /v1/query?merchantTransactionId=`), on a fresh store.
    async fn merchant_reference_plan() -> String {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("emulator.db")).await.unwrap();
        let filter = Filter {
            merchant_transaction_id: Some("paywarden-credential-check".into()),
            methods_match: true,
            ..Filter::default()
        };
        let mut select = QueryBuilder::<Sqlite>::new(format!(
            "EXPLAIN QUERY PLAN SELECT {COLUMNS} FROM transactions"
        ));
        push_filter(
            &mut select,
            "8ac7a4c9000000000000000000000001",
            &filter,
            None,
        );
        select.push(" ORDER BY created_at, seq");
        let rows = select.build().fetch_all(store.pool()).await.unwrap();
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every range is cut into pieces that follow each other second by second from `from` to
    /// `to`, whole hours and days on their boundaries, at most one piece of each kind at each
    /// end: ranges within an hour, across hours, across midnight, over many days, on and off
    /// the boundaries.
    #[test]
    fn a_report_range_is_cut_into_pieces_that_cover_it_exactly() {
        use chrono::Duration;
        let t = |s: &str| NaiveDateTime::parse_from_str(s, DB_TIME_FORMAT).unwrap();
        let bounds = |p: &Piece| match *p {
            Piece::Rows { from, to } => (from, to),
            Piece::Hours { first, last } => {
                assert_eq!((first.minute(), first.second()), (0, 0), "{p:?}");
                assert_eq!((last.minute(), last.second()), (0, 0), "{p:?}");
                (first, last + Duration::seconds(3599))
            }
            Piece::Days { first, last } => (
                first.and_hms_opt(0, 0, 0).unwrap(),
                last.and_hms_opt(23, 59, 59).unwrap(),
            ),
        };
        let base = t("2026-03-28 00:00:00");
        // Offsets in seconds from `base`: boundaries, one second either side, and odd times.
        let marks: Vec<i64> = [0, 1, 3599, 3600, 3601, 7199, 7200, 86_399, 86_400, 86_401]
            .into_iter()
            .chain([5_000, 40_000, 90_061, 172_799, 172_800, 200_000, 2_600_000])
            .collect();
        for &a in &marks {
            for &b in &marks {
                if a > b {
                    continue;
                }
                let (from, to) = (base + Duration::seconds(a), base + Duration::seconds(b));
                let pieces = report_pieces(from, to);
                assert!(!pieces.is_empty());
                let mut next = from;
                for p in &pieces {
                    let (start, end) = bounds(p);
                    assert_eq!(start, next, "{from}..{to}: {pieces:?}");
                    assert!(start <= end, "{from}..{to}: {pieces:?}");
                    next = end + Duration::seconds(1);
                }
                assert_eq!(next, to + Duration::seconds(1), "{from}..{to}: {pieces:?}");
                assert!(pieces.len() <= 5, "{from}..{to}: {pieces:?}");
                let rows = pieces
                    .iter()
                    .filter(|p| matches!(p, Piece::Rows { .. }))
                    .count();
                assert!(rows <= 2, "{from}..{to}: {pieces:?}");
                // No partial-hour piece is longer than an hour: what a page skips row by
                // row at the ends.
                for p in &pieces {
                    if let Piece::Rows { from, to } = *p {
                        assert!(to - from < Duration::hours(1), "{p:?}");
                    }
                }
            }
        }
    }

    /// A debit of 10.50 EUR of the demo entity at `at`, its own root.
    fn debit(id: &str, at: &str) -> Tx {
        let eur = Currency::from_code("EUR").unwrap();
        Tx {
            id: id.into(),
            entity_id: crate::DEMO_ENTITY_ID.into(),
            root_id: id.into(),
            referenced_id: None,
            payment_type: PaymentType::Debit,
            payment_brand: "VISA".into(),
            amount: Money::from_minor(1050, eur).unwrap(),
            descriptor: "PAYWARDEN_SANDBOX".into(),
            merchant_transaction_id: Some(format!("order-{id}")),
            succeeded: true,
            result_code: "000.100.110".into(),
            result_description: "Request successfully processed".into(),
            result_reason: None,
            card: None,
            connector_tx_id: "PWSBX0011223344556677".into(),
            ndc: "ndc".into(),
            created_at: NaiveDateTime::parse_from_str(at, DB_TIME_FORMAT).unwrap(),
            custom_parameters: Vec::new(),
        }
    }

    extern "C" {
        // The bundled SQLite that libsqlite3-sys links into the test binary.
        fn sqlite3_db_status(
            db: *mut std::ffi::c_void,
            op: std::ffi::c_int,
            current: *mut std::ffi::c_int,
            highwater: *mut std::ffi::c_int,
            reset: std::ffi::c_int,
        ) -> std::ffi::c_int;
    }

    /// Pages `conn` read from the file (or the WAL) since its counter was last reset
    /// (`SQLITE_DBSTATUS_CACHE_MISS`, 8 in sqlite3.h), resetting it.
    async fn cache_misses(conn: &mut sqlx::SqliteConnection) -> i64 {
        const SQLITE_DBSTATUS_CACHE_MISS: std::ffi::c_int = 8;
        let mut handle = conn.lock_handle().await.unwrap();
        let (mut current, mut highwater) = (0, 0);
        // SAFETY: the handle is locked for this block; the call only reads and resets counters.
        let rc = unsafe {
            sqlite3_db_status(
                handle.as_raw_handle().as_ptr().cast(),
                SQLITE_DBSTATUS_CACHE_MISS,
                &mut current,
                &mut highwater,
                1,
            )
        };
        assert_eq!(rc, 0, "sqlite3_db_status");
        i64::from(current)
    }

    /// Cache misses summed over the pool's open connections (resetting them), and how many
    /// connections it has open.
    async fn pool_cache_misses(pool: &SqlitePool) -> (i64, usize) {
        let mut conns = Vec::new();
        while let Some(conn) = pool.try_acquire() {
            conns.push(conn);
        }
        let mut misses = 0;
        for conn in &mut conns {
            misses += cache_misses(conn).await;
        }
        (misses, conns.len())
    }

    /// Every statement but the search's runs on the file's one connection (`CONNECTIONS`),
    /// shared with the Stripe and ifthenpay sides, so the pages a payment's query needs stay
    /// cached across the emulator's own commits. With the 8 pooled connections of before, a
    /// query on a connection other than the one that had just committed found its page cache
    /// emptied (SQLite resets it when another connection changed the WAL) and read every page
    /// again: this test counted 265 pages read from the file in 20 rounds of a payment and a
    /// Stripe row stored, then the payment queried.
    #[tokio::test]
    async fn a_payment_queried_after_the_emulator_stored_it_is_read_from_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emulator.db");
        let store = Store::open(&path).await.unwrap();
        let entity = crate::DEMO_ENTITY_ID;
        let first = "8ac7a4a1000000000000000000000000";
        store
            .insert(&debit(first, "2026-03-02 10:00:00"))
            .await
            .unwrap();
        // Concurrent writes and queries: a pool of several connections opens them here.
        let mut tasks = Vec::new();
        for n in 1..=16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("8ac7a4a1{n:024}");
                store
                    .insert(&debit(&id, "2026-03-03 10:00:00"))
                    .await
                    .unwrap();
                store.with_tree(entity, first).await.unwrap().unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let (_, open) = pool_cache_misses(&store.pool).await;
        assert_eq!(open, CONNECTIONS as usize, "the file's connections");
        // The Stripe side writes on the same connection (crate::Emulator::open).
        let stripe = crate::stripe::StripeStore::new(store.pool().clone());
        for n in 100..120 {
            let id = format!("8ac7a4a1{n:024}");
            store
                .insert(&debit(&id, "2026-03-04 10:00:00"))
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO stripe_idempotency \
                 (account, idempotency_key, request_fingerprint, status, body, created) \
                 VALUES ('acct_test', ?, 'f', 200, '{}', 0)",
            )
            .bind(&id)
            .execute(&stripe.pool)
            .await
            .unwrap();
            let (target, tree) = store.with_tree(entity, &id).await.unwrap().unwrap();
            assert_eq!((target.id.as_str(), tree.len()), (id.as_str(), 1));
        }
        let (misses, _) = pool_cache_misses(&store.pool).await;
        assert_eq!(
            misses, 0,
            "pages read from the file by the emulator's queries"
        );
    }

    /// Only the search's connections map the file (`MMAP_SIZE`): a commit makes every other
    /// mapping connection drop its map at its next read. A search on a mapping connection that
    /// has read before still sees each transaction the other pool committed since (SQLite
    /// drops the stale map when the WAL changed), in a paged range and by merchant reference.
    #[tokio::test]
    async fn only_the_search_pool_maps_the_file_and_its_searches_see_each_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("emulator.db")).await.unwrap();
        let mmap_size = |pool: SqlitePool| async move {
            sqlx::query_scalar::<_, i64>("PRAGMA mmap_size")
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        assert_eq!(mmap_size(store.pool.clone()).await, 0);
        assert_eq!(mmap_size(store.scans.clone()).await.to_string(), MMAP_SIZE);
        let t = |s: &str| NaiveDateTime::parse_from_str(s, DB_TIME_FORMAT).unwrap();
        let range = Filter {
            from: Some(t("2026-03-01 00:00:00")),
            to: Some(t("2026-03-31 23:59:59")),
            methods_match: true,
            ..Filter::default()
        };
        let page = Some(Page {
            limit: 20,
            page_no: 1,
        });
        let entity = crate::DEMO_ENTITY_ID;
        let (found, total) = store.search(entity, &range, page).await.unwrap();
        assert_eq!((found.len(), total), (0, 0));
        for (n, at) in [
            "2026-03-02 10:00:00",
            "2026-03-20 23:30:00",
            "2026-03-31 23:59:59",
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("8ac7a4a100000000000000000000000{n}");
            store.insert(&debit(&id, at)).await.unwrap();
            let (found, total) = store.search(entity, &range, page).await.unwrap();
            assert_eq!(total, n as u64 + 1, "after {id}");
            assert_eq!(found.last().map(|t| t.id.as_str()), Some(id.as_str()));
            let by_reference = Filter {
                merchant_transaction_id: Some(format!("order-{id}")),
                methods_match: true,
                ..Filter::default()
            };
            let (found, _) = store.search(entity, &by_reference, None).await.unwrap();
            assert_eq!(found.len(), 1, "by reference, after {id}");
        }
    }

    #[tokio::test]
    async fn a_merchant_reference_query_seeks_its_reference_instead_of_walking_the_entity() {
        // Before migration 0007 the plan was `SEARCH transactions USING INDEX
        // transactions_entity_time (entity_id=?)`: every transaction of the entity, filtered
        // row by row (0.46 s over 1,000,000 transactions), for each credential check.
        let plan = merchant_reference_plan().await;
        assert!(
            plan.contains("USING INDEX transactions_entity_mtid_time (entity_id=? AND merchant_transaction_id=?)"),
            "{plan}"
        );
        assert!(
            !plan.contains("TEMP B-TREE"),
            "no sort of the matches: {plan}"
        );
    }
}
