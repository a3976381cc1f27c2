//! paywarden's records of ifthenpay payment requests and the callbacks received about them
//! (tables `ifthenpay_requests` and `ifthenpay_callbacks`, `migrations/*/0005_ifthenpay.sql`;
//! entity-scoped indexes in `0006_ifthenpay_tenants.sql`). Every request belongs to the entity
//! that created it; the lookups a caller can trigger take that entity.

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, WriteStatement};

/// A payment request paywarden created at ifthenpay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IfthenpayRequest {
    /// Row id.
    pub id: i64,
    /// The entity that created it.
    pub entity_id: String,
    /// The tool that created it.
    pub tool: String,
    /// `MB`, `MBWAY`, `PAYSHOP`, `CCARD`, `PINPAY`, `COFIDIS` or `PIX`.
    pub method: String,
    /// SHA-256 prefix of the method key used (never the key).
    pub key_id: String,
    /// The merchant's order id.
    pub order_id: String,
    /// ifthenpay's request id (none for PinPay links).
    pub request_id: Option<String>,
    /// Multibanco entity.
    pub mb_entity: Option<String>,
    /// Multibanco or Payshop reference (the PIN for PinPay).
    pub reference: Option<String>,
    /// Amount in minor units of `currency`.
    pub amount_minor: i64,
    /// ISO 4217 (EUR, BRL).
    pub currency: String,
    /// `pending`, `paid`, `rejected`, `expired`, `declined`.
    pub status: String,
    /// UTC RFC 3339.
    pub created_at: String,
    /// UTC RFC 3339, once a valid callback arrived.
    pub paid_at: Option<String>,
    /// What ifthenpay reported refunded by callback (`DEVOLVIDO`), in minor units.
    pub refunded_minor: i64,
}

/// What to record for a new request (`id`, `status`, times are set by the store).
#[derive(Debug, Clone)]
pub struct NewIfthenpayRequest {
    /// The entity.
    pub entity_id: String,
    /// The tool.
    pub tool: String,
    /// The method code.
    pub method: String,
    /// SHA-256 prefix of the key.
    pub key_id: String,
    /// Order id.
    pub order_id: String,
    /// ifthenpay request id.
    pub request_id: Option<String>,
    /// Multibanco entity.
    pub mb_entity: Option<String>,
    /// Reference.
    pub reference: Option<String>,
    /// Minor units.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
}

/// One callback as received and judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IfthenpayCallback {
    /// The request it matched.
    pub request_row: Option<i64>,
    /// Its entity, when a request matched.
    pub entity_id: Option<String>,
    /// `orderId` (or `id`) as sent.
    pub order_id: Option<String>,
    /// `requestId` as sent.
    pub request_id: Option<String>,
    /// `reference` as sent.
    pub reference: Option<String>,
    /// `payment_method` as sent.
    pub payment_method: Option<String>,
    /// `amount` as sent.
    pub amount_text: Option<String>,
    /// The amount parsed, in minor units.
    pub amount_minor: Option<i64>,
    /// Whether the payment was recorded.
    pub accepted: bool,
    /// Why not.
    pub reason: Option<String>,
    /// `payment` (status `PAGO`, or none: methods without a status) or `refund` (`DEVOLVIDO`).
    pub kind: String,
    /// UTC RFC 3339 (set by the store on insert).
    pub received_at: String,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn request_of(row: &sqlx::any::AnyRow) -> Result<IfthenpayRequest, sqlx::Error> {
    Ok(IfthenpayRequest {
        id: row.try_get("id")?,
        entity_id: row.try_get("entity_id")?,
        tool: row.try_get("tool")?,
        method: row.try_get("method")?,
        key_id: row.try_get("key_id")?,
        order_id: row.try_get("order_id")?,
        request_id: row.try_get("request_id")?,
        mb_entity: row.try_get("mb_entity")?,
        reference: row.try_get("reference")?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
        paid_at: row.try_get("paid_at")?,
        refunded_minor: row.try_get("refunded_minor")?,
    })
}

impl Store {
    /// Records a created request (status `pending`); returns its row id.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn record_ifthenpay_request(
        &self,
        new: &NewIfthenpayRequest,
    ) -> Result<i64, StoreError> {
        let insert = sqlx::query_scalar(
            "INSERT INTO ifthenpay_requests (entity_id, tool, method, key_id, order_id, request_id, \
             mb_entity, reference, amount_minor, currency, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11) RETURNING id",
        )
        .bind(&new.entity_id)
        .bind(&new.tool)
        .bind(&new.method)
        .bind(&new.key_id)
        .bind(&new.order_id)
        .bind(&new.request_id)
        .bind(&new.mb_entity)
        .bind(&new.reference)
        .bind(new.amount_minor)
        .bind(&new.currency)
        .bind(now());
        let mut conn = self.write_conn().await?;
        let id: i64 = insert.fetch_one(&mut *conn).await?;
        conn.written().await?;
        Ok(id)
    }

    /// The request a callback is about, whichever entity created it: by request id when given
    /// (ifthenpay's ids are unique), else by reference (Multibanco, Payshop; with the
    /// Multibanco entity when the callback names one), else by order id. A reference or order
    /// id that matches requests of more than one entity matches none: order ids are unique
    /// per entity only, and a callback must never be credited to the wrong tenant.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn find_ifthenpay_request(
        &self,
        request_id: Option<&str>,
        reference: Option<&str>,
        mb_entity: Option<&str>,
        order_id: Option<&str>,
        method: Option<&str>,
    ) -> Result<Option<IfthenpayRequest>, StoreError> {
        let present = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_string);
        if let Some(id) = present(request_id) {
            let row = sqlx::query(
                "SELECT * FROM ifthenpay_requests WHERE request_id = $1 ORDER BY id DESC LIMIT 1",
            )
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
            if let Some(row) = row {
                return Ok(Some(request_of(&row)?));
            }
        }
        let by = |column: &'static str, value: String| async move {
            let rows = sqlx::query(&format!(
                "SELECT * FROM ifthenpay_requests WHERE {column} = $1 ORDER BY id DESC"
            ))
            .bind(value)
            .fetch_all(self.pool())
            .await?;
            rows.iter()
                .map(request_of)
                .collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::from)
        };
        let unambiguous = |found: Vec<IfthenpayRequest>| {
            let first = found.first()?;
            found
                .iter()
                .all(|r| r.entity_id == first.entity_id)
                .then(|| first.clone())
        };
        if let Some(reference) = present(reference) {
            let mut found = by("reference", reference).await?;
            if let Some(entity) = present(mb_entity) {
                found.retain(|r| r.mb_entity.as_deref().is_none_or(|e| e == entity));
            }
            if !found.is_empty() {
                return Ok(unambiguous(found));
            }
        }
        if let Some(order) = present(order_id) {
            let mut found = by("order_id", order).await?;
            // The callback's method (`pm` of paywarden's template): card and PinPay callbacks
            // name the order only (`[ID]`), and order ids are unique per entity and tool only.
            if let Some(m) = present(method) {
                found.retain(|r| r.method.eq_ignore_ascii_case(&m));
            }
            return Ok(unambiguous(found));
        }
        Ok(None)
    }

    /// `entity_id`'s request with ifthenpay request id `request_id` of `method` (`MBWAY`, ...),
    /// if that entity created one.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn ifthenpay_request_of(
        &self,
        entity_id: &str,
        method: &str,
        request_id: &str,
    ) -> Result<Option<IfthenpayRequest>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM ifthenpay_requests WHERE entity_id = $1 AND method = $2 AND request_id = $3 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(entity_id)
        .bind(method)
        .bind(request_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(request_of).transpose()?)
    }

    /// Whether `entity_id` already has a request made by `tool` for `order_id`.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn ifthenpay_order_used(
        &self,
        entity_id: &str,
        tool: &str,
        order_id: &str,
    ) -> Result<bool, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ifthenpay_requests WHERE entity_id = $1 AND tool = $2 AND order_id = $3",
        )
        .bind(entity_id)
        .bind(tool)
        .bind(order_id)
        .fetch_one(self.pool())
        .await?;
        Ok(count > 0)
    }

    /// The requests of one entity, newest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn ifthenpay_requests(
        &self,
        entity_id: &str,
    ) -> Result<Vec<IfthenpayRequest>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM ifthenpay_requests WHERE entity_id = $1 ORDER BY id DESC")
                .bind(entity_id)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.iter().map(request_of).collect::<Result<_, _>>()?)
    }

    /// Marks a request paid (once; a repeated callback changes nothing).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn mark_ifthenpay_paid(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ifthenpay_requests SET status = 'paid', paid_at = COALESCE(paid_at, $1) WHERE id = $2",
        )
        .bind(now())
        .bind(id)
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Books a refund ifthenpay reported by callback on paid request `id`: adds `amount_minor`
    /// to its refunded sum, in one statement, only while the request is paid and the sum stays
    /// within its amount. Returns whether it was booked.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn refund_ifthenpay_request(
        &self,
        id: i64,
        amount_minor: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE ifthenpay_requests SET refunded_minor = refunded_minor + $1 \
             WHERE id = $2 AND status = 'paid' AND $3 > 0 AND refunded_minor + $4 <= amount_minor",
        )
        .bind(amount_minor)
        .bind(id)
        .bind(amount_minor)
        .bind(amount_minor)
        .write_on(self)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Updates a pending request's status from a status read (`rejected`, `expired`,
    /// `declined`; `paid` sets `paid_at` too). Scoped by entity.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn set_ifthenpay_status(
        &self,
        entity_id: &str,
        request_id: &str,
        status: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ifthenpay_requests SET status = $1, \
             paid_at = CASE WHEN $2 = 'paid' THEN COALESCE(paid_at, $3) ELSE paid_at END \
             WHERE entity_id = $4 AND request_id = $5 AND status = 'pending'",
        )
        .bind(status)
        .bind(status)
        .bind(now())
        .bind(entity_id)
        .bind(request_id)
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Records a callback, accepted or refused.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn record_ifthenpay_callback(
        &self,
        callback: &IfthenpayCallback,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ifthenpay_callbacks (request_row, entity_id, order_id, request_id, reference, \
             payment_method, amount_text, amount_minor, accepted, reason, kind, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(callback.request_row)
        .bind(&callback.entity_id)
        .bind(&callback.order_id)
        .bind(&callback.request_id)
        .bind(&callback.reference)
        .bind(&callback.payment_method)
        .bind(&callback.amount_text)
        .bind(callback.amount_minor)
        .bind(callback.accepted)
        .bind(&callback.reason)
        .bind(&callback.kind)
        .bind(now())
        .write_on(self)
        .await?;
        Ok(())
    }

    /// Every callback received, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn ifthenpay_callbacks(&self) -> Result<Vec<IfthenpayCallback>, StoreError> {
        let rows = sqlx::query("SELECT * FROM ifthenpay_callbacks ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(IfthenpayCallback {
                    request_row: row.try_get("request_row")?,
                    entity_id: row.try_get("entity_id")?,
                    order_id: row.try_get("order_id")?,
                    request_id: row.try_get("request_id")?,
                    reference: row.try_get("reference")?,
                    payment_method: row.try_get("payment_method")?,
                    amount_text: row.try_get("amount_text")?,
                    amount_minor: row.try_get("amount_minor")?,
                    accepted: super::get_bool(row, "accepted")?.unwrap_or(false),
                    reason: row.try_get("reason")?,
                    kind: row.try_get("kind")?,
                    received_at: row.try_get("received_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
