//! The ops toolset's orders database (the Payment Ops seed's `customers`, `orders` and
//! `refund_log`, plus `review_flags` for `flag_for_review`), scoped by entity.
//!
//! Amounts are integer minor units (`amount_cents` keeps the seed's name), currencies lower-case
//! ISO 4217 codes as on Stripe's wire, times UTC. A refund's database effects (the order's
//! refunded total and status, and its `refund_log` row) are written in one transaction.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{any::AnyRow, Row};

use super::{Store, StoreError, WriteStatement};

/// An order's payment status (the seed's `paid / refunded / partially_refunded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Paid, nothing refunded.
    Paid,
    /// Refunded in full.
    Refunded,
    /// Part of the amount refunded.
    PartiallyRefunded,
}

impl OrderStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Refunded => "refunded",
            Self::PartiallyRefunded => "partially_refunded",
        }
    }

    /// The status of an order of `amount` minor units of which `refunded` are refunded.
    pub fn for_amounts(amount: i64, refunded: i64) -> Self {
        if refunded <= 0 {
            Self::Paid
        } else if refunded >= amount {
            Self::Refunded
        } else {
            Self::PartiallyRefunded
        }
    }

    fn parse(raw: &str) -> Result<Self, StoreError> {
        match raw {
            "paid" => Ok(Self::Paid),
            "refunded" => Ok(Self::Refunded),
            "partially_refunded" => Ok(Self::PartiallyRefunded),
            other => Err(StoreError::Json(serde::de::Error::custom(format!(
                "unknown order status {other:?}"
            )))),
        }
    }
}

/// A customer of the merchant (seed table `customers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRecord {
    /// uuid.
    pub id: String,
    /// Owning entity.
    pub entity_id: String,
    /// E-mail, unique per entity.
    pub email: String,
    /// Name.
    pub name: String,
    /// Stripe customer id (`cus_...`), the join key to Stripe.
    pub stripe_customer_id: Option<String>,
    /// When created (UTC).
    pub created_at: DateTime<Utc>,
}

/// An order (seed table `orders`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    /// uuid.
    pub id: String,
    /// Owning entity.
    pub entity_id: String,
    /// The customer's id.
    pub customer_id: String,
    /// Stripe PaymentIntent id (`pi_...`; the seed's `stripe_charge_id`).
    pub stripe_charge_id: Option<String>,
    /// Amount in minor units.
    pub amount_cents: i64,
    /// Refunded so far, minor units.
    pub refunded_cents: i64,
    /// Lower-case ISO 4217 code (`usd`).
    pub currency: String,
    /// Payment status.
    pub status: OrderStatus,
    /// When the order was paid (UTC).
    pub created_at: DateTime<Utc>,
}

impl OrderRecord {
    /// What can still be refunded, minor units.
    pub fn refundable_cents(&self) -> i64 {
        (self.amount_cents - self.refunded_cents).max(0)
    }
}

/// A `refund_log` row: a refund (or, with no refund id and amount 0, a review flag in the
/// seed's own use of the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundLogRecord {
    /// uuid.
    pub id: String,
    /// The order refunded.
    pub order_id: String,
    /// Stripe refund id (`re_...`).
    pub stripe_refund_id: Option<String>,
    /// Refunded amount, minor units.
    pub amount_cents: i64,
    /// Why.
    pub reason: String,
    /// Which agent or client asked (e.g. `claude-ai via paywarden`).
    pub refunded_by: String,
    /// When (UTC).
    pub created_at: DateTime<Utc>,
    /// Stripe's refund status as paywarden last saw it: `succeeded`, `pending` (not done yet;
    /// polled), `failed` or `canceled` (undone: see [`Store::settle_refund`]).
    pub status: String,
}

/// A charge flagged for a person to review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewFlag {
    /// uuid.
    pub id: String,
    /// The order.
    pub order_id: String,
    /// Its Stripe PaymentIntent id.
    pub stripe_charge_id: String,
    /// What to look at.
    pub note: String,
    /// Who flagged it.
    pub flagged_by: String,
    /// `open` or `resolved`.
    pub status: String,
    /// When (UTC).
    pub created_at: DateTime<Utc>,
}

/// One line of a revenue summary: orders paid on `day` in `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevenueLine {
    /// The UTC day the orders were paid.
    pub day: NaiveDate,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// How many orders.
    pub orders: i64,
    /// Sum of their amounts, minor units.
    pub gross_cents: i64,
    /// Sum refunded of them, minor units.
    pub refunded_cents: i64,
}

/// A new order, for seeding and imports.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    /// Owning entity.
    pub entity_id: &'a str,
    /// The customer's id.
    pub customer_id: &'a str,
    /// Stripe PaymentIntent id.
    pub stripe_charge_id: &'a str,
    /// Amount in minor units (> 0).
    pub amount_cents: i64,
    /// Lower-case ISO 4217 code.
    pub currency: &'a str,
    /// When paid (UTC).
    pub created_at: DateTime<Utc>,
}

/// Now, at the microsecond precision stored.
fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn time(row: &AnyRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    let raw: String = row.try_get(column)?;
    DateTime::parse_from_rfc3339(&raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            StoreError::Json(serde::de::Error::custom(format!(
                "{column} {raw:?} is not RFC 3339: {e}"
            )))
        })
}

fn customer_row(row: &AnyRow) -> Result<CustomerRecord, StoreError> {
    Ok(CustomerRecord {
        id: row.try_get("id")?,
        entity_id: row.try_get("entity_id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        stripe_customer_id: row.try_get("stripe_customer_id")?,
        created_at: time(row, "created_at")?,
    })
}

fn order_row(row: &AnyRow) -> Result<OrderRecord, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(OrderRecord {
        id: row.try_get("id")?,
        entity_id: row.try_get("entity_id")?,
        customer_id: row.try_get("customer_id")?,
        stripe_charge_id: row.try_get("stripe_charge_id")?,
        amount_cents: row.try_get("amount_cents")?,
        refunded_cents: row.try_get("refunded_cents")?,
        currency: row.try_get("currency")?,
        status: OrderStatus::parse(&status)?,
        created_at: time(row, "created_at")?,
    })
}

pub(super) fn refund_row(row: &AnyRow) -> Result<RefundLogRecord, StoreError> {
    Ok(RefundLogRecord {
        id: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        stripe_refund_id: row.try_get("stripe_refund_id")?,
        amount_cents: row.try_get("amount_cents")?,
        reason: row.try_get("reason")?,
        refunded_by: row.try_get("refunded_by")?,
        created_at: time(row, "created_at")?,
        status: row.try_get("status")?,
    })
}

const ORDER_COLUMNS: &str = "id, entity_id, customer_id, stripe_charge_id, amount_cents, \
                             refunded_cents, currency, status, created_at";

impl Store {
    /// Creates the customer `email` of `entity_id`, or returns the existing one (its name and
    /// Stripe id are left as they are).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn ensure_customer(
        &self,
        entity_id: &str,
        email: &str,
        name: &str,
        stripe_customer_id: Option<&str>,
    ) -> Result<CustomerRecord, StoreError> {
        sqlx::query(
            "INSERT INTO customers (id, entity_id, email, name, stripe_customer_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (entity_id, email) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(entity_id)
        .bind(email)
        .bind(name)
        .bind(stripe_customer_id)
        .bind(stamp(now()))
        .write_on(self)
        .await?;
        self.customer_by_email(entity_id, email)
            .await?
            .ok_or_else(|| StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// The customer of `entity_id` with this e-mail (compared case-insensitively).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn customer_by_email(
        &self,
        entity_id: &str,
        email: &str,
    ) -> Result<Option<CustomerRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM customers WHERE entity_id = $1 AND lower(email) = lower($2) LIMIT 1",
        )
        .bind(entity_id)
        .bind(email)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(customer_row).transpose()
    }

    /// The customer of `entity_id` linked to this Stripe customer id (`cus_...`, the
    /// `stripe_customer_id` join key of the Payment Ops seed's schema).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn customer_by_stripe_id(
        &self,
        entity_id: &str,
        stripe_customer_id: &str,
    ) -> Result<Option<CustomerRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM customers WHERE entity_id = $1 AND stripe_customer_id = $2 LIMIT 1",
        )
        .bind(entity_id)
        .bind(stripe_customer_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(customer_row).transpose()
    }

    /// The customer with this id, if it belongs to `entity_id`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn customer(
        &self,
        entity_id: &str,
        id: &str,
    ) -> Result<Option<CustomerRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM customers WHERE entity_id = $1 AND id = $2")
            .bind(entity_id)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(customer_row).transpose()
    }

    /// Every customer of `entity_id`, by e-mail.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn customers(&self, entity_id: &str) -> Result<Vec<CustomerRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM customers WHERE entity_id = $1 ORDER BY email")
            .bind(entity_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(customer_row).collect()
    }

    /// Adds an order.
    ///
    /// # Errors
    /// [`StoreError::Database`] (also when the PaymentIntent already has an order).
    pub async fn insert_order(&self, new: &NewOrder<'_>) -> Result<OrderRecord, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO orders (id, entity_id, customer_id, stripe_charge_id, amount_cents, \
             refunded_cents, currency, status, created_at) VALUES ($1, $2, $3, $4, $5, 0, $6, 'paid', $7)",
        )
        .bind(&id)
        .bind(new.entity_id)
        .bind(new.customer_id)
        .bind(new.stripe_charge_id)
        .bind(new.amount_cents)
        .bind(new.currency)
        .bind(stamp(new.created_at))
        .write_on(self)
        .await?;
        Ok(OrderRecord {
            id,
            entity_id: new.entity_id.to_string(),
            customer_id: new.customer_id.to_string(),
            stripe_charge_id: Some(new.stripe_charge_id.to_string()),
            amount_cents: new.amount_cents,
            refunded_cents: 0,
            currency: new.currency.to_string(),
            status: OrderStatus::Paid,
            created_at: new.created_at,
        })
    }

    /// A customer's orders, newest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn orders_of(
        &self,
        entity_id: &str,
        customer_id: &str,
    ) -> Result<Vec<OrderRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE entity_id = $1 AND customer_id = $2 \
             ORDER BY created_at DESC, id"
        ))
        .bind(entity_id)
        .bind(customer_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(order_row).collect()
    }

    /// The order of `entity_id` paid by this Stripe PaymentIntent.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn order_by_charge(
        &self,
        entity_id: &str,
        stripe_charge_id: &str,
    ) -> Result<Option<OrderRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE entity_id = $1 AND stripe_charge_id = $2"
        ))
        .bind(entity_id)
        .bind(stripe_charge_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(order_row).transpose()
    }

    /// The order with this id, if it belongs to `entity_id`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn order(
        &self,
        entity_id: &str,
        id: &str,
    ) -> Result<Option<OrderRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE entity_id = $1 AND id = $2"
        ))
        .bind(entity_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(order_row).transpose()
    }

    /// A refund's database effects, atomically: the order's refunded total becomes
    /// `refunded_total_cents` (Stripe's `amount_refunded`, never less than what is recorded),
    /// its status follows, and a `refund_log` row is written. A refund id already logged is
    /// not logged twice (the existing row is returned).
    ///
    /// # Errors
    /// [`StoreError::Database`], including when the total would exceed the order's amount.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_refund(
        &self,
        entity_id: &str,
        order_id: &str,
        stripe_refund_id: &str,
        amount_cents: i64,
        refunded_total_cents: i64,
        reason: &str,
        refunded_by: &str,
        status: &str,
    ) -> Result<RefundLogRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        // The order's row lock (PostgreSQL) or the write transaction (SQLite): one refund's
        // effects at a time per order, across processes.
        sqlx::query(&format!(
            "SELECT id FROM orders WHERE entity_id = $1 AND id = $2{}",
            self.for_update()
        ))
        .bind(entity_id)
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = sqlx::query("SELECT * FROM refund_log WHERE stripe_refund_id = $1")
            .bind(stripe_refund_id)
            .fetch_optional(&mut *tx)
            .await?
        {
            return refund_row(&row);
        }
        sqlx::query(
            "UPDATE orders SET \
             refunded_cents = CASE WHEN refunded_cents > $1 THEN refunded_cents ELSE $1 END, \
             status = CASE WHEN (CASE WHEN refunded_cents > $1 THEN refunded_cents ELSE $1 END) >= amount_cents THEN 'refunded' \
                           WHEN (CASE WHEN refunded_cents > $1 THEN refunded_cents ELSE $1 END) > 0 THEN 'partially_refunded' ELSE 'paid' END \
             WHERE entity_id = $2 AND id = $3",
        )
        .bind(refunded_total_cents)
        .bind(entity_id)
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
        let record = RefundLogRecord {
            id: uuid::Uuid::new_v4().to_string(),
            order_id: order_id.to_string(),
            stripe_refund_id: Some(stripe_refund_id.to_string()),
            amount_cents,
            reason: reason.to_string(),
            refunded_by: refunded_by.to_string(),
            created_at: now(),
            status: status.to_string(),
        };
        sqlx::query(
            "INSERT INTO refund_log (id, entity_id, order_id, stripe_refund_id, amount_cents, \
             reason, refunded_by, created_at, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&record.id)
        .bind(entity_id)
        .bind(order_id)
        .bind(stripe_refund_id)
        .bind(amount_cents)
        .bind(reason)
        .bind(refunded_by)
        .bind(stamp(record.created_at))
        .bind(status)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    /// An order's refund log, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn refund_log(
        &self,
        entity_id: &str,
        order_id: &str,
    ) -> Result<Vec<RefundLogRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM refund_log WHERE entity_id = $1 AND order_id = $2 ORDER BY created_at, id",
        )
        .bind(entity_id)
        .bind(order_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(refund_row).collect()
    }

    /// Flags an order's charge for a person to review.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn flag_for_review(
        &self,
        entity_id: &str,
        order: &OrderRecord,
        note: &str,
        flagged_by: &str,
    ) -> Result<ReviewFlag, StoreError> {
        let flag = ReviewFlag {
            id: uuid::Uuid::new_v4().to_string(),
            order_id: order.id.clone(),
            stripe_charge_id: order.stripe_charge_id.clone().unwrap_or_default(),
            note: note.to_string(),
            flagged_by: flagged_by.to_string(),
            status: "open".into(),
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO review_flags (id, entity_id, order_id, stripe_charge_id, note, \
             flagged_by, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7)",
        )
        .bind(&flag.id)
        .bind(entity_id)
        .bind(&flag.order_id)
        .bind(&flag.stripe_charge_id)
        .bind(note)
        .bind(flagged_by)
        .bind(stamp(flag.created_at))
        .write_on(self)
        .await?;
        Ok(flag)
    }

    /// Open review flags of `entity_id`, newest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn review_flags(&self, entity_id: &str) -> Result<Vec<ReviewFlag>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM review_flags WHERE entity_id = $1 ORDER BY created_at DESC, id",
        )
        .bind(entity_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ReviewFlag {
                    id: row.try_get("id")?,
                    order_id: row.try_get("order_id")?,
                    stripe_charge_id: row.try_get("stripe_charge_id")?,
                    note: row.try_get("note")?,
                    flagged_by: row.try_get("flagged_by")?,
                    status: row.try_get("status")?,
                    created_at: time(row, "created_at")?,
                })
            })
            .collect()
    }

    /// Orders of `entity_id` paid on the UTC days from `first` to `last` (both included), per day and
    /// currency (ISO 4217 as stored), with their count and what they were paid and refunded in
    /// minor units; in order of day, then currency. A day and currency without orders has no
    /// line.
    ///
    /// Read from `order_days` (migration 0016), the daily totals that triggers keep in the same
    /// transaction as every write to `orders`, so the cost is one row per day and currency
    /// whatever the number of orders; the rows are exactly what grouping the orders by
    /// `substr(created_at, 1, 10)` and currency gives (test
    /// `ops_tools::revenue_days_are_the_orders_grouped_by_day_whatever_writes_them`).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn revenue(
        &self,
        entity_id: &str,
        first: NaiveDate,
        last: NaiveDate,
    ) -> Result<Vec<RevenueLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT day, currency, orders, gross_cents AS gross, refunded_cents AS refunded \
             FROM order_days WHERE entity_id = $1 AND day >= $2 AND day <= $3 \
             ORDER BY day, currency",
        )
        .bind(entity_id)
        // `YYYY-MM-DD`, as `day` holds it.
        .bind(first.to_string())
        .bind(last.to_string())
        .fetch_all(self.pool())
        .await?;
        // Columns by position (the SELECT's order above), not by name: a name is looked up
        // in the row's column map for every value of every row.
        rows.iter()
            .map(|row| {
                let day: String = row.try_get(0)?;
                Ok(RevenueLine {
                    // `YYYY-MM-DD` (the `substr` above): chrono's fixed ISO 8601 parser, not a
                    // format string read again for every row.
                    day: day.parse::<NaiveDate>().map_err(|e| {
                        StoreError::Json(serde::de::Error::custom(format!(
                            "order day {day:?}: {e}"
                        )))
                    })?,
                    currency: row.try_get(1)?,
                    orders: row.try_get(2)?,
                    gross_cents: row.try_get(3)?,
                    refunded_cents: row.try_get(4)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_refunded_amount() {
        assert_eq!(OrderStatus::for_amounts(4999, 0), OrderStatus::Paid);
        assert_eq!(
            OrderStatus::for_amounts(4999, 1),
            OrderStatus::PartiallyRefunded
        );
        assert_eq!(OrderStatus::for_amounts(4999, 4999), OrderStatus::Refunded);
        for s in [
            OrderStatus::Paid,
            OrderStatus::Refunded,
            OrderStatus::PartiallyRefunded,
        ] {
            assert_eq!(OrderStatus::parse(s.as_str()).unwrap(), s);
        }
        assert!(OrderStatus::parse("void").is_err());
    }

    #[tokio::test]
    async fn refunds_are_atomic_scoped_and_never_logged_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p.db")).await.unwrap();
        let c = store
            .ensure_customer("e1", "sarah@example.com", "Sarah", Some("cus_1"))
            .await
            .unwrap();
        let again = store
            .ensure_customer("e1", "SARAH@example.com", "Other", None)
            .await;
        // The unique key is exact; lookups are case-insensitive.
        assert!(again.is_ok());
        assert!(store
            .customer_by_email("e2", "sarah@example.com")
            .await
            .unwrap()
            .is_none());
        let o = store
            .insert_order(&NewOrder {
                entity_id: "e1",
                customer_id: &c.id,
                stripe_charge_id: "pi_1",
                amount_cents: 4999,
                currency: "usd",
                created_at: Utc::now(),
            })
            .await
            .unwrap();
        let r1 = store
            .record_refund(
                "e1",
                &o.id,
                "re_1",
                1000,
                1000,
                "duplicate",
                "agent",
                "succeeded",
            )
            .await
            .unwrap();
        let r1b = store
            .record_refund(
                "e1",
                &o.id,
                "re_1",
                1000,
                1000,
                "duplicate",
                "agent",
                "succeeded",
            )
            .await
            .unwrap();
        assert_eq!(r1, r1b);
        let order = store.order("e1", &o.id).await.unwrap().unwrap();
        assert_eq!(order.status, OrderStatus::PartiallyRefunded);
        assert_eq!(order.refundable_cents(), 3999);
        // Beyond the order: the database refuses, nothing is written.
        assert!(store
            .record_refund("e1", &o.id, "re_2", 5000, 6000, "x", "agent", "succeeded")
            .await
            .is_err());
        assert_eq!(store.refund_log("e1", &o.id).await.unwrap().len(), 1);
        store
            .record_refund("e1", &o.id, "re_3", 3999, 4999, "x", "agent", "succeeded")
            .await
            .unwrap();
        let order = store.order("e1", &o.id).await.unwrap().unwrap();
        assert_eq!(order.status, OrderStatus::Refunded);
        assert!(store.order("e2", &o.id).await.unwrap().is_none());
        let revenue = store
            .revenue(
                "e1",
                Utc::now().date_naive() - chrono::Duration::days(1),
                Utc::now().date_naive() + chrono::Duration::days(1),
            )
            .await
            .unwrap();
        assert_eq!(revenue.len(), 1);
        assert_eq!(revenue[0].gross_cents, 4999);
        assert_eq!(revenue[0].refunded_cents, 4999);
    }

    /// SQLite fires the delete triggers of a row that a `REPLACE` conflict resolution deletes
    /// only with `recursive_triggers` on ("The ON CONFLICT Clause"); without it, the daily totals
    /// would count a replaced order twice. Every connection of the store's pool has it on.
    #[tokio::test]
    async fn an_order_replaced_through_the_store_is_counted_once_in_the_daily_totals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p.db")).await.unwrap();
        let c = store
            .ensure_customer("e1", "sarah@example.com", "Sarah", Some("cus_1"))
            .await
            .unwrap();
        // Eight connections held at once: the statements below run on each of them.
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(store.pool().acquire().await.unwrap());
        }
        for (i, conn) in held.iter_mut().enumerate() {
            let amount = 1_000 + i64::try_from(i).unwrap();
            for _ in 0..2 {
                sqlx::query(
                    "INSERT OR REPLACE INTO orders (id, entity_id, customer_id, stripe_charge_id, \
                     amount_cents, refunded_cents, currency, status, created_at) \
                     VALUES ($1, 'e1', $2, $3, $4, 0, 'eur', 'paid', '2026-03-01T10:00:00.000000Z')",
                )
                .bind(format!("o{i}"))
                .bind(&c.id)
                .bind(format!("pi_{i}"))
                .bind(amount)
                .execute(&mut **conn)
                .await
                .unwrap();
            }
        }
        drop(held);
        let day = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let revenue = store.revenue("e1", day, day).await.unwrap();
        assert_eq!(revenue.len(), 1);
        assert_eq!(
            (revenue[0].orders, revenue[0].gross_cents),
            (8, 8 * 1_000 + 28),
            "each order once"
        );
    }
}
