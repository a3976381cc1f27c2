//! Bulk seeding of OPP transactions straight into the emulator's SQLite file, for benchmarks
//! and tests that need a large history (a million transactions in seconds, where the HTTP
//! API creates a few thousand per second).
//!
//! The rows are what the emulator's own endpoints would have stored for the same requests
//! (same columns, id, descriptor, connector id and `ndc` shapes, result codes of
//! [`paywarden_domain::result_code::codes`], the test cards' BIN and last four digits), and
//! every payment tree follows OPP's state rules (a capture or reversal of a successful
//! pre-authorization, refunds of at most what was captured or debited, a chargeback of a
//! debit and its reversal), so the OPP connector and the ledger read them like any other.
//! Generated deterministically from [`BulkSeed::seed`]: the same seed, count, range and end
//! time on the same starting file give the same rows.
//!
//! A sandbox-only control, like the fault injection: it writes to a local file and never
//! talks to a provider.

use std::path::Path;

use chrono::{Duration, NaiveDateTime};
use paywarden_domain::{result_code::codes, Currency, Money, PaymentType};
use rand::{rngs::StdRng, Rng, SeedableRng};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite};

use crate::error::EmulatorError;
use crate::store::{CardSummary, Store, Tx, DB_TIME_FORMAT};

/// What to seed.
#[derive(Debug, Clone)]
pub struct BulkSeed {
    /// The OPP `entityId` that owns the transactions.
    pub entity_id: String,
    /// How many transactions (rows) to create, back-office operations included.
    pub transactions: u64,
    /// The transactions' times are spread over the `days` days before [`BulkSeed::until`].
    pub days: u32,
    /// The latest transaction time (UTC, second precision); usually now.
    pub until: NaiveDateTime,
    /// The random generator's seed.
    pub seed: u64,
}

/// What [`bulk_seed`] created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkSeedSummary {
    /// Initial payments (PA and DB), declined ones included.
    pub payments: u64,
    /// Rows written in all (initial payments and back-office operations).
    pub transactions: u64,
}

/// Largest [`BulkSeed::transactions`] accepted.
pub const BULK_SEED_MAX: u64 = 50_000_000;

/// Rows per INSERT statement (23 bound values each: well under SQLite's 32,766 variables).
const ROWS_PER_STATEMENT: usize = 500;

/// Rows per write transaction.
const ROWS_PER_TRANSACTION: usize = 50_000;

/// Inserts `spec.transactions` generated transactions of `spec.entity_id` into the emulator
/// database at `database_path` (created and migrated when missing), in write transactions of
/// 50,000 rows.
///
/// # Errors
/// [`EmulatorError::Config`] for a count of 0 or above [`BULK_SEED_MAX`], a range of 0 days
/// or more than 36,500, or an empty entity id; [`EmulatorError::Open`],
/// [`EmulatorError::Migrate`], [`EmulatorError::Database`] from SQLite.
pub async fn bulk_seed(
    database_path: &Path,
    spec: &BulkSeed,
) -> Result<BulkSeedSummary, EmulatorError> {
    if spec.transactions == 0 || spec.transactions > BULK_SEED_MAX {
        return Err(EmulatorError::Config(format!(
            "the number of transactions to seed must be from 1 to {BULK_SEED_MAX}, not {}",
            spec.transactions
        )));
    }
    if spec.days == 0 || spec.days > 36_500 {
        return Err(EmulatorError::Config(format!(
            "the seeded range must be from 1 to 36500 days, not {}",
            spec.days
        )));
    }
    if spec.entity_id.trim().is_empty() {
        return Err(EmulatorError::Config("the entity id is empty".into()));
    }
    // Creates the file and applies the migrations.
    Store::open(database_path).await?.close().await;
    // One writer connection tuned for a bulk load: a large page cache (the random-keyed `id`
    // and `root_id` indexes outgrow SQLite's default 2 MB at a few hundred thousand rows) and
    // no fsync per commit (a crash mid-seed loses seeded rows only; WAL keeps the file sound).
    let options = SqliteConnectOptions::new()
        .filename(database_path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Off)
        .busy_timeout(std::time::Duration::from_secs(30))
        .pragma("cache_size", "-524288")
        .pragma("temp_store", "MEMORY");
    let pool = &SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|source| EmulatorError::Open {
            path: database_path.to_path_buf(),
            source,
        })?;
    // A second run appends other rows (other ids) rather than colliding with the first.
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transactions")
        .fetch_one(pool)
        .await?;
    let mut generator = Generator {
        rng: StdRng::seed_from_u64(
            spec.seed
                ^ u64::try_from(existing)
                    .unwrap_or(0)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ),
        entity_id: spec.entity_id.clone(),
        start: spec.until - Duration::days(i64::from(spec.days)),
        until: spec.until,
        span_secs: i64::from(spec.days) * 86_400,
        total: spec.transactions,
        emitted: 0,
        payments: 0,
        order_base: u64::try_from(existing).unwrap_or(0),
    };
    let mut buffer: Vec<Tx> = Vec::with_capacity(ROWS_PER_TRANSACTION + 8);
    while generator.emitted < generator.total {
        generator.payment(&mut buffer);
        if buffer.len() >= ROWS_PER_TRANSACTION {
            write(pool, &buffer).await?;
            buffer.clear();
        }
    }
    write(pool, &buffer).await?;
    pool.close().await;
    Ok(BulkSeedSummary {
        payments: generator.payments,
        transactions: generator.emitted,
    })
}

async fn write(pool: &sqlx::SqlitePool, rows: &[Tx]) -> Result<(), EmulatorError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut db_tx = pool.begin().await?;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "INSERT INTO transactions ({}) ",
            crate::store::COLUMNS
        ));
        q.push_values(chunk, |mut b, tx| {
            let card = tx.card.as_ref();
            b.push_bind(tx.id.clone())
                .push_bind(tx.entity_id.clone())
                .push_bind(tx.root_id.clone())
                .push_bind(tx.referenced_id.clone())
                .push_bind(tx.payment_type.code())
                .push_bind(tx.payment_brand.clone())
                .push_bind(tx.amount.minor_units())
                .push_bind(tx.amount.currency().code())
                .push_bind(tx.descriptor.clone())
                .push_bind(tx.merchant_transaction_id.clone())
                .push_bind(tx.succeeded)
                .push_bind(tx.result_code.clone())
                .push_bind(tx.result_description.clone())
                .push_bind(tx.result_reason.clone())
                .push_bind(card.map(|c| c.bin.clone()))
                .push_bind(card.map(|c| c.last4.clone()))
                .push_bind(card.and_then(|c| c.holder.clone()))
                .push_bind(card.map(|c| c.expiry_month.clone()))
                .push_bind(card.map(|c| c.expiry_year.clone()))
                .push_bind(tx.connector_tx_id.clone())
                .push_bind(tx.ndc.clone())
                .push_bind(tx.created_at.format(DB_TIME_FORMAT).to_string())
                .push_bind(Option::<String>::None);
        });
        q.build().execute(&mut *db_tx).await?;
    }
    db_tx.commit().await?;
    Ok(())
}

/// The emulator's test cards: (brand, BIN, last four) of approved cards, as `POST
/// /v1/payments` stores them (`card.rs`).
const CARDS: [(&str, &str, &str); 4] = [
    ("VISA", "420000", "0000"),
    ("MASTER", "545454", "5454"),
    ("VISA", "411111", "1111"),
    ("AMEX", "378282", "0005"),
];

/// Currencies and weights (percent), with the major-unit scale of a typical amount.
const CURRENCIES: [(Currency, u32, f64); 6] = [
    (Currency::EUR, 55, 1.0),
    (Currency::USD, 20, 1.0),
    (Currency::GBP, 12, 1.0),
    (Currency::BRL, 5, 5.0),
    (Currency::JPY, 5, 150.0),
    (Currency::KWD, 3, 0.3),
];

const HOLDERS: [&str; 6] = [
    "Ana Silva",
    "John Smith",
    "Maria Garcia",
    "Li Wei",
    "Sarah Johnson",
    "Demo Shopper",
];

struct Generator {
    rng: StdRng,
    entity_id: String,
    start: NaiveDateTime,
    until: NaiveDateTime,
    span_secs: i64,
    total: u64,
    emitted: u64,
    payments: u64,
    order_base: u64,
}

impl Generator {
    fn hex(&mut self) -> String {
        format!(
            "{:016x}{:016x}",
            self.rng.gen::<u64>(),
            self.rng.gen::<u64>()
        )
    }

    fn pick<T: Copy>(&mut self, items: &[(T, u32)]) -> T {
        let total: u32 = items.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.gen_range(0..total.max(1));
        for (item, weight) in items {
            if roll < *weight {
                return *item;
            }
            roll -= weight;
        }
        items[0].0
    }

    fn base(&mut self, payment_type: PaymentType, amount: Money, at: NaiveDateTime) -> Tx {
        let id = self.hex();
        let trace = self.hex();
        let ndc = format!("{}_{trace}", self.entity_id);
        let descriptor = format!(
            "{:04}.{:04}.{:04} PAYWARDEN_SANDBOX",
            self.rng.gen_range(0..10_000),
            self.rng.gen_range(0..10_000),
            self.rng.gen_range(0..10_000)
        );
        let connector_tx_id = format!("PWSBX{:016X}", self.rng.gen::<u64>());
        let (code, description) = codes::TEST_MODE_SUCCESS;
        Tx {
            root_id: id.clone(),
            id,
            entity_id: self.entity_id.clone(),
            referenced_id: None,
            payment_type,
            payment_brand: String::new(),
            amount,
            descriptor,
            merchant_transaction_id: None,
            succeeded: true,
            result_code: code.to_string(),
            result_description: description.to_string(),
            result_reason: None,
            card: None,
            connector_tx_id,
            ndc,
            created_at: at,
            custom_parameters: Vec::new(),
        }
    }

    /// A back-office operation on `target` of `amount`, some time after `after`.
    fn operation(
        &mut self,
        target: &Tx,
        payment_type: PaymentType,
        minor: i64,
        after: NaiveDateTime,
        max_delay_secs: i64,
    ) -> Option<Tx> {
        let at = (after + Duration::seconds(self.rng.gen_range(60..max_delay_secs.max(61))))
            .min(self.until);
        let amount = Money::from_minor(minor, target.amount.currency()).ok()?;
        let mut tx = self.base(payment_type, amount, at);
        tx.root_id = target.root_id.clone();
        tx.referenced_id = Some(target.id.clone());
        tx.payment_brand = target.payment_brand.clone();
        Some(tx)
    }

    /// One payment: the initial PA or DB and, for some, back-office operations; never more
    /// rows than are still to be written.
    fn payment(&mut self, out: &mut Vec<Tx>) {
        // Spread over the range in the order rows are written, with a little jitter.
        let progress = self.emitted as f64 / self.total as f64;
        let jitter = self.rng.gen_range(0..600);
        let offset = ((progress * self.span_secs as f64) as i64 + jitter).min(self.span_secs);
        let at = self.start + Duration::seconds(offset);

        let currency = {
            let roll = self.rng.gen_range(0..100);
            let mut acc = 0;
            let mut chosen = CURRENCIES[0];
            for c in CURRENCIES {
                acc += c.1;
                if roll < acc {
                    chosen = c;
                    break;
                }
            }
            chosen
        };
        // Log-uniform between 1 and 2,500 major units, times the currency's scale.
        let major = (self.rng.gen_range(0.0f64..2_500f64.ln()).exp() * currency.2).max(1.0);
        let minor = (major * 10f64.powi(i32::from(currency.0.exponent()))).round() as i64;
        let Ok(amount) = Money::from_minor(minor.max(1), currency.0) else {
            return;
        };
        let payment_type = if self.rng.gen_bool(0.6) {
            PaymentType::Debit
        } else {
            PaymentType::Preauthorization
        };
        let mut root = self.base(payment_type, amount, at);
        self.payments += 1;
        let card = self.pick(&[(0usize, 45), (1, 35), (2, 12), (3, 8)]);
        let (brand, mut bin, mut last4) = CARDS[card];
        root.payment_brand = brand.to_string();
        if self.rng.gen_bool(0.9) {
            root.merchant_transaction_id =
                Some(format!("order-{:08}", self.order_base + self.payments));
        }
        let roll = self.rng.gen_range(0..1000);
        let outcome = if roll < 60 {
            Some(codes::DECLINED_INVALID_CARD)
        } else if roll < 100 {
            Some(codes::DECLINED_INSUFFICIENT_FUNDS)
        } else if roll < 115 {
            Some(codes::INVALID_CARD_NUMBER)
        } else {
            None
        };
        if let Some((code, description)) = outcome {
            root.succeeded = false;
            root.result_code = code.to_string();
            root.result_description = description.to_string();
            root.payment_brand = "VISA".into();
            (bin, last4) = match code {
                "800.100.151" => ("400000", "0002"),
                "800.100.155" => ("400000", "0051"),
                _ => ("420000", "0001"),
            };
        }
        root.card = Some(CardSummary {
            bin: bin.to_string(),
            last4: last4.to_string(),
            holder: Some(HOLDERS[self.rng.gen_range(0..HOLDERS.len())].to_string()),
            expiry_month: format!("{:02}", self.rng.gen_range(1..=12)),
            expiry_year: format!("{}", self.rng.gen_range(2027..=2034)),
        });
        let mut rows = vec![root.clone()];
        if root.succeeded {
            let full = root.amount.minor_units();
            match payment_type {
                PaymentType::Preauthorization => {
                    let roll = self.rng.gen_range(0..100);
                    if roll < 80 {
                        // Captured (mostly in full), some later refunded.
                        let captured = if self.rng.gen_bool(0.85) {
                            full
                        } else {
                            (full * self.rng.gen_range(30..100) / 100).max(1)
                        };
                        if let Some(cp) =
                            self.operation(&root, PaymentType::Capture, captured, at, 3 * 86_400)
                        {
                            if self.rng.gen_bool(0.06) {
                                if let Some(rf) = self.operation(
                                    &cp,
                                    PaymentType::Refund,
                                    captured,
                                    cp.created_at,
                                    30 * 86_400,
                                ) {
                                    rows.push(cp);
                                    rows.push(rf);
                                } else {
                                    rows.push(cp);
                                }
                            } else {
                                rows.push(cp);
                            }
                        }
                    } else if roll < 88 {
                        if let Some(rv) =
                            self.operation(&root, PaymentType::Reversal, full, at, 86_400)
                        {
                            rows.push(rv);
                        }
                    }
                }
                _ => {
                    let roll = self.rng.gen_range(0..1000);
                    if roll < 80 {
                        let refunded = if self.rng.gen_bool(0.7) {
                            full
                        } else {
                            (full * self.rng.gen_range(10..100) / 100).max(1)
                        };
                        if let Some(rf) =
                            self.operation(&root, PaymentType::Refund, refunded, at, 45 * 86_400)
                        {
                            rows.push(rf);
                        }
                    } else if roll < 86 {
                        if let Some(cb) =
                            self.operation(&root, PaymentType::Chargeback, full, at, 60 * 86_400)
                        {
                            if self.rng.gen_bool(0.2) {
                                if let Some(cr) = self.operation(
                                    &cb,
                                    PaymentType::ChargebackReversal,
                                    full,
                                    cb.created_at,
                                    30 * 86_400,
                                ) {
                                    rows.push(cb);
                                    rows.push(cr);
                                } else {
                                    rows.push(cb);
                                }
                            } else {
                                rows.push(cb);
                            }
                        }
                    } else if roll < 90 {
                        if let Some(rb) =
                            self.operation(&root, PaymentType::Rebill, full, at, 20 * 86_400)
                        {
                            rows.push(rb);
                        }
                    }
                }
            }
        }
        let room = usize::try_from(self.total - self.emitted).unwrap_or(usize::MAX);
        rows.truncate(room);
        self.emitted += rows.len() as u64;
        out.extend(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn seeds_exactly_and_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let until = NaiveDateTime::parse_from_str("2026-11-30 12:00:00", DB_TIME_FORMAT).unwrap();
        let spec = BulkSeed {
            entity_id: crate::DEMO_ENTITY_ID.into(),
            transactions: 1_234,
            days: 30,
            until,
            seed: 7,
        };
        let a = dir.path().join("a.db");
        let b = dir.path().join("b.db");
        let sa = bulk_seed(&a, &spec).await.unwrap();
        let sb = bulk_seed(&b, &spec).await.unwrap();
        assert_eq!(sa, sb);
        assert_eq!(sa.transactions, 1_234);
        let ids = |path: std::path::PathBuf| async move {
            let store = Store::open(&path).await.unwrap();
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT id, created_at FROM transactions ORDER BY seq")
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            rows
        };
        let (ra, rb) = (ids(a.clone()).await, ids(b).await);
        assert_eq!(ra, rb);
        assert!(ra.iter().all(
            |(_, t)| t.as_str() <= "2026-11-30 12:00:00" && t.as_str() >= "2026-10-31 12:00:00"
        ));
        // The per-day and per-hour counts follow the rows.
        let store = Store::open(&a).await.unwrap();
        let counted: i64 = sqlx::query_scalar("SELECT SUM(n) FROM transaction_day_counts")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(counted, 1_234);
        let counted: i64 = sqlx::query_scalar("SELECT SUM(n) FROM transaction_hour_counts")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(counted, 1_234);
        // A second run appends other rows.
        bulk_seed(&a, &spec).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transactions")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, 2_468);
        assert!(bulk_seed(
            &a,
            &BulkSeed {
                transactions: 0,
                ..spec.clone()
            }
        )
        .await
        .is_err());
    }

    /// A store at `path` with `transactions` of the demo entity over the `days` before
    /// `until` (random seed `seed`) and, with `second = Some((n, seed))`, `n` of the second
    /// entity over the same days.
    async fn seeded_store(
        path: &Path,
        transactions: u64,
        days: u32,
        until: NaiveDateTime,
        seed: u64,
        second: Option<(u64, u64)>,
    ) -> Store {
        let spec = BulkSeed {
            entity_id: crate::DEMO_ENTITY_ID.into(),
            transactions,
            days,
            until,
            seed,
        };
        bulk_seed(path, &spec).await.unwrap();
        if let Some((transactions, seed)) = second {
            let spec = BulkSeed {
                entity_id: crate::SECOND_ENTITY_ID.into(),
                transactions,
                seed,
                ..spec
            };
            bulk_seed(path, &spec).await.unwrap();
        }
        Store::open(path).await.unwrap()
    }

    /// Random ranges (on, near and off hour and day boundaries, one second, `from == to`,
    /// across a month's and a year's end), type filters, limits and pages (first, last, one
    /// past, offsets on and next to hour boundaries), each page against the plain path's
    /// `ORDER BY created_at, seq` and `COUNT(*)`, with inserts through `Store::insert` and
    /// deletes between rounds; at the end the hour counts equal the rows. Written by an
    /// adversarial review of the hour counts (it ran 148,000 paged queries; here 200 cases,
    /// `PAYWARDEN_REPORT_CASES` for more). Adding 1 to a single hour count fails it.
    #[tokio::test]
    async fn random_report_pages_match_the_plain_scan() {
        use crate::store::{Filter, Page};
        use chrono::Timelike;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let until = NaiveDateTime::parse_from_str("2026-01-01 12:00:00", DB_TIME_FORMAT).unwrap();
        let store = seeded_store(&path, 3_000, 3, until, 11, Some((300, 12))).await;
        let start = until - Duration::days(3);
        let mut rng = StdRng::seed_from_u64(1);
        let cases: usize = std::env::var("PAYWARDEN_REPORT_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let all_types = PaymentType::ALL;
        let fmt = |t: NaiveDateTime| t.format(DB_TIME_FORMAT).to_string();
        let mut queries = 0u64;
        let mut next_id = 0u64;
        for case in 0..cases {
            // Mutations between rounds: inserts through the store (clones of stored rows at
            // boundary and random times, both entities) and deletes.
            if case % 100 == 50 {
                let ids: Vec<(String, String)> = sqlx::query_as(
                    "SELECT entity_id, id FROM transactions ORDER BY random() LIMIT 30",
                )
                .fetch_all(store.pool())
                .await
                .unwrap();
                for (e, id) in &ids[..20] {
                    let mut tx = store.find(e, id).await.unwrap().unwrap();
                    next_id += 1;
                    tx.id = format!("{:032x}", 0xfeed_0000_0000u64 + next_id);
                    let h = start
                        + Duration::hours(rng.gen_range(-2..76))
                        + Duration::seconds([0, 3599, 3598, 1, 1800][rng.gen_range(0..5)]);
                    tx.created_at = h;
                    tx.payment_type = all_types[rng.gen_range(0..all_types.len())];
                    store.insert(&tx).await.unwrap();
                }
                for (_, id) in &ids[20..] {
                    sqlx::query("DELETE FROM transactions WHERE id = ?")
                        .bind(id)
                        .execute(store.pool())
                        .await
                        .unwrap();
                }
            }
            let times: Vec<String> =
                sqlx::query_scalar("SELECT created_at FROM transactions ORDER BY random() LIMIT 1")
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            let tx_time = NaiveDateTime::parse_from_str(&times[0], DB_TIME_FORMAT).unwrap();
            let point = |rng: &mut StdRng| -> NaiveDateTime {
                let d = Duration::seconds(rng.gen_range(-1..=1));
                match rng.gen_range(0..5) {
                    0 => {
                        start - Duration::hours(6)
                            + Duration::seconds(rng.gen_range(0..(84 * 3600)))
                    }
                    1 => {
                        start.date().and_hms_opt(0, 0, 0).unwrap()
                            + Duration::hours(rng.gen_range(0..100))
                            + d
                    }
                    2 => {
                        start.date().and_hms_opt(0, 0, 0).unwrap()
                            + Duration::days(rng.gen_range(0..5))
                            + d
                    }
                    3 => tx_time + d,
                    _ => {
                        start.date().and_hms_opt(0, 0, 0).unwrap()
                            + Duration::hours(rng.gen_range(0..100))
                            + Duration::minutes(rng.gen_range(0..60))
                    }
                }
            };
            let a = point(&mut rng);
            let (from, to) = match rng.gen_range(0..6) {
                0 => (a, a),
                1 => (a, a + Duration::seconds(1)),
                2 => (
                    a,
                    a + Duration::seconds(
                        [59, 3599, 3600, 3601, 86_399, 86_400][rng.gen_range(0..6)],
                    ),
                ),
                _ => {
                    let b = point(&mut rng);
                    (a.min(b), a.max(b))
                }
            };
            let types = if rng.gen_bool(0.4) {
                None
            } else {
                let mut v: Vec<PaymentType> = all_types
                    .iter()
                    .copied()
                    .filter(|_| rng.gen_bool(0.3))
                    .collect();
                if v.is_empty() {
                    v.push(all_types[rng.gen_range(0..all_types.len())]);
                }
                Some(v)
            };
            let filter = Filter {
                from: Some(from),
                to: Some(to),
                payment_types: types.clone(),
                methods_match: true,
                ..Filter::default()
            };
            // The plain path (no page): every match, ORDER BY created_at, seq, COUNT(*).
            let (all, plain_total) = store
                .search(crate::DEMO_ENTITY_ID, &filter, None)
                .await
                .unwrap();
            let expected: Vec<String> = all.iter().map(|t| t.id.clone()).collect();
            assert_eq!(plain_total, expected.len() as u64);
            let n = expected.len() as u64;
            // Cumulative counts at every hour boundary inside the range.
            let mut cums = vec![0u64];
            let mut h = from.date().and_hms_opt(from.hour(), 0, 0).unwrap() + Duration::hours(1);
            while h <= to {
                let hs = fmt(h);
                cums.push(all.iter().filter(|t| fmt(t.created_at) < hs).count() as u64);
                h += Duration::hours(1);
            }
            let mut probes: Vec<(u32, u32)> = Vec::new();
            let limit = [1u32, 2, 3, 7, 37, 100, rng.gen_range(1..=250)][rng.gen_range(0..7)];
            let last = u32::try_from(n.div_ceil(u64::from(limit))).unwrap();
            for p in [
                1,
                last.max(1),
                last + 1,
                last + 2,
                rng.gen_range(1..=last + 1),
            ] {
                probes.push((limit, p));
            }
            for _ in 0..3 {
                let c = cums[rng.gen_range(0..cums.len())];
                for c in [c.saturating_sub(1), c, c + 1] {
                    probes.push((1, u32::try_from(c).unwrap() + 1));
                    if c > 0 {
                        // limit c: page 2 starts exactly at c; a divisor too.
                        let l = u32::try_from(c).unwrap();
                        probes.push((l, 2));
                        let dvs: Vec<u32> = (1..=l).filter(|x| l % x == 0).collect();
                        let dv = dvs[rng.gen_range(0..dvs.len())];
                        probes.push((dv, l / dv + 1));
                    }
                }
            }
            for (limit, page_no) in probes {
                let (txs, total) = store
                    .search(
                        crate::DEMO_ENTITY_ID,
                        &filter,
                        Some(Page { limit, page_no }),
                    )
                    .await
                    .unwrap();
                queries += 1;
                let off = (u64::from(page_no) - 1) * u64::from(limit);
                let want: Vec<String> = expected
                    .iter()
                    .skip(usize::try_from(off).unwrap())
                    .take(limit as usize)
                    .cloned()
                    .collect();
                let got: Vec<String> = txs.into_iter().map(|t| t.id).collect();
                assert_eq!(
                    (total, &got),
                    (n, &want),
                    "case {case}: {}..{} {types:?} limit {limit} page {page_no}",
                    fmt(from),
                    fmt(to)
                );
            }
            // Sometimes the whole walk.
            if case % 20 == 0 {
                let limit = [1u32, 13, 100][rng.gen_range(0..3)];
                let mut got = Vec::new();
                let mut page_no = 1;
                loop {
                    let (txs, total) = store
                        .search(
                            crate::DEMO_ENTITY_ID,
                            &filter,
                            Some(Page { limit, page_no }),
                        )
                        .await
                        .unwrap();
                    queries += 1;
                    assert_eq!(total, n);
                    if txs.is_empty() {
                        break;
                    }
                    got.extend(txs.into_iter().map(|t| t.id));
                    page_no += 1;
                }
                assert_eq!(got, expected, "walk case {case}");
            }
        }
        // The counts still equal the rows after the mutations.
        let bad: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT entity_id, substr(created_at,1,13) h, payment_type, COUNT(*) c \
             FROM transactions GROUP BY 1,2,3) t FULL JOIN transaction_hour_counts x \
             ON x.entity_id = t.entity_id AND x.hour = t.h AND x.payment_type = t.payment_type \
             WHERE COALESCE(x.n,0) <> COALESCE(t.c,0)",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(bad, 0);
        assert!(queries > cases as u64 * 5, "{queries} paged queries");
    }

    /// A range ending after the year 9999 (chrono parses and writes it signed,
    /// "+10000-01-01 00:30:00", which sorts before every 4-digit year as text) is counted as
    /// the plain scan counts it: before the fallback in `report_pieces`, the whole days up to
    /// 9999-12-31 were counted from the day counts (300 against 0).
    #[tokio::test]
    async fn a_report_to_after_the_year_9999_counts_what_the_plain_scan_counts() {
        use crate::store::{Filter, Page};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let until = NaiveDateTime::parse_from_str("2026-01-01 12:00:00", DB_TIME_FORMAT).unwrap();
        let store = seeded_store(&path, 300, 3, until, 11, None).await;
        let t = |s: &str| NaiveDateTime::parse_from_str(s, DB_TIME_FORMAT).unwrap();
        for (from, to) in [
            ("2025-01-01 00:00:00", "+10000-01-01 00:30:00"),
            ("2025-12-30 13:30:00", "+10000-01-01 00:00:00"),
        ] {
            let filter = Filter {
                from: Some(t(from)),
                to: Some(t(to)),
                methods_match: true,
                ..Filter::default()
            };
            let (plain, plain_total) = store
                .search(crate::DEMO_ENTITY_ID, &filter, None)
                .await
                .unwrap();
            let (page, total) = store
                .search(
                    crate::DEMO_ENTITY_ID,
                    &filter,
                    Some(Page {
                        limit: 100,
                        page_no: 1,
                    }),
                )
                .await
                .unwrap();
            assert_eq!(
                (total, page.len()),
                (plain_total, plain.len().min(100)),
                "{from}..{to}"
            );
        }
    }

    /// Paged date-range searches (the hour- and day-count seek) return exactly what a plain
    /// `ORDER BY created_at, seq LIMIT/OFFSET` over the range returns, with the same count, for
    /// ranges that cut through days, single days, empty ranges and type filters.
    #[tokio::test]
    async fn report_pages_match_a_plain_offset_scan() {
        use crate::store::{Filter, Page};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let until = NaiveDateTime::parse_from_str("2026-11-30 12:00:00", DB_TIME_FORMAT).unwrap();
        let store = seeded_store(&path, 4_000, 20, until, 3, Some((500, 3))).await;
        let t = |s: &str| NaiveDateTime::parse_from_str(s, DB_TIME_FORMAT).unwrap();
        let ranges = [
            ("2026-11-10 00:00:00", "2026-11-30 12:00:00"),
            ("2026-11-12 13:17:05", "2026-11-20 08:00:00"),
            ("2026-11-15 06:00:00", "2026-11-15 18:00:00"),
            ("2026-11-15 23:59:59", "2026-11-16 00:00:00"),
            ("2026-11-17 00:00:00", "2026-11-17 23:59:59"),
            ("2025-01-01 00:00:00", "2025-02-01 00:00:00"),
            // The hour pieces (migration 0008): one hour, two adjacent hours, whole hours
            // inside one day, a midnight without whole days, whole days without whole hours
            // at the ends, and ends on hour boundaries.
            ("2026-11-15 13:00:00", "2026-11-15 13:59:59"),
            ("2026-11-15 13:59:59", "2026-11-15 14:00:00"),
            ("2026-11-15 13:20:00", "2026-11-15 17:10:00"),
            ("2026-11-14 22:30:00", "2026-11-15 01:15:00"),
            ("2026-11-14 23:10:00", "2026-11-16 00:05:00"),
            ("2026-11-14 00:00:00", "2026-11-16 23:59:59"),
            ("2026-11-13 07:00:00", "2026-11-19 07:00:00"),
        ];
        let type_sets: [Option<Vec<PaymentType>>; 3] = [
            None,
            Some(vec![PaymentType::Debit, PaymentType::Refund]),
            Some(vec![PaymentType::Chargeback]),
        ];
        for (from, to) in ranges {
            for types in &type_sets {
                let filter = Filter {
                    from: Some(t(from)),
                    to: Some(t(to)),
                    payment_types: types.clone(),
                    methods_match: true,
                    ..Filter::default()
                };
                let codes: Vec<&str> = types.iter().flatten().map(|p| p.code()).collect();
                let typed: Vec<(String, String)> = sqlx::query_as(
                    "SELECT id, payment_type FROM transactions WHERE entity_id = ? \
                     AND created_at >= ? AND created_at <= ? ORDER BY created_at, seq",
                )
                .bind(crate::DEMO_ENTITY_ID)
                .bind(from)
                .bind(to)
                .fetch_all(store.pool())
                .await
                .unwrap();
                let expected: Vec<String> = typed
                    .into_iter()
                    .filter(|(_, p)| codes.is_empty() || codes.contains(&p.as_str()))
                    .map(|(id, _)| id)
                    .collect();
                for limit in [100u32, 37] {
                    let mut got = Vec::new();
                    let mut page_no = 1;
                    loop {
                        let (txs, total) = store
                            .search(
                                crate::DEMO_ENTITY_ID,
                                &filter,
                                Some(Page { limit, page_no }),
                            )
                            .await
                            .unwrap();
                        assert_eq!(total, expected.len() as u64, "{from}..{to} {types:?}");
                        if txs.is_empty() {
                            break;
                        }
                        got.extend(txs.into_iter().map(|tx| tx.id));
                        page_no += 1;
                    }
                    assert_eq!(got, expected, "{from}..{to} {types:?} limit {limit}");
                }
            }
        }
    }
}
