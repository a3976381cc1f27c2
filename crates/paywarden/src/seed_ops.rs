//! The ops toolset's demo data, after the Payment Ops seed's `scripts/seed.py`: five customers
//! in both the orders database and Stripe (the emulator), two or three charges each, created
//! through the real Stripe connector. sarah@example.com has the seed's duplicate $49.99
//! charge; one order (bob@example.com's $99.99) is 120 days old, past the 90-day refund window.
//!
//! Back-dating uses the emulator-only `metadata[sandbox_created]` (unix seconds); paywarden
//! only seeds the emulator.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use indicatif::ProgressBar;
use paywarden_domain::{Currency, Money};

use crate::{
    connectors::stripe::{StripeClient, StripeError},
    store::{NewOrder, Store, StoreError},
};

/// Errors while seeding the ops demo data.
#[derive(Debug, thiserror::Error)]
pub enum SeedOpsError {
    /// Stripe (the emulator) refused or failed.
    #[error("ops demo seeding failed at Stripe: {0}")]
    Stripe(#[from] StripeError),
    /// paywarden's database failed.
    #[error("ops demo seeding failed in paywarden's database: {0}")]
    Store(#[from] StoreError),
    /// A demo amount is invalid (a bug).
    #[error("ops demo seeding: {0}")]
    Money(#[from] paywarden_domain::MoneyError),
}

/// One demo customer: e-mail, name, and charges as (cents, days ago).
pub type DemoCustomer = (&'static str, &'static str, &'static [(i64, i64)]);

/// The seed's customers.
pub const DEMO_CUSTOMERS: &[DemoCustomer] = &[
    // The seed's demo: a duplicate $49.99 charge, minutes apart.
    (
        "sarah@example.com",
        "Sarah Test",
        &[(4999, 3), (4999, 3), (2999, 20)],
    ),
    ("james@example.com", "James Demo", &[(9999, 12), (4999, 40)]),
    (
        "alice@example.com",
        "Alice Sample",
        &[(1999, 5), (4999, 33), (7999, 61)],
    ),
    // 120 days old: past the 90-day refund window.
    ("bob@example.com", "Bob Tester", &[(4999, 9), (9999, 120)]),
    (
        "carol@example.com",
        "Carol Mock",
        &[(2999, 2), (4999, 15), (4999, 75)],
    ),
];

/// When the `index`-th demo charge of a customer, made `days_ago` days before `now`, was made:
/// an hour before `now` that many days back, plus two minutes per earlier charge of the customer
/// (Sarah's duplicate is two minutes after the first). When those minutes would cross a UTC
/// midnight, the customer's charges move ten minutes earlier, so one customer's charges share a
/// UTC day whatever the time of day the seed runs (a `revenue_summary` groups by UTC day) and each
/// charge is `days_ago` whole days old (an order's `age_days`).
pub fn charge_time(now: DateTime<Utc>, days_ago: i64, index: usize) -> DateTime<Utc> {
    let base = now - Duration::days(days_ago) - Duration::hours(1);
    let late = NaiveTime::from_hms_opt(23, 50, 0).unwrap_or(NaiveTime::MIN);
    let base = if base.time() >= late {
        base - Duration::minutes(10)
    } else {
        base
    };
    base + Duration::minutes(2 * index as i64)
}

/// How many charges [`seed_ops_demo`] creates.
pub fn demo_charge_count() -> usize {
    DEMO_CUSTOMERS.iter().map(|(_, _, c)| c.len()).sum()
}

/// Whether `entity_id` already has the ops demo customers.
///
/// # Errors
/// [`StoreError`].
pub async fn is_seeded(store: &Store, entity_id: &str) -> Result<bool, StoreError> {
    Ok(store
        .customer_by_email(entity_id, DEMO_CUSTOMERS[0].0)
        .await?
        .is_some())
}

/// Creates the demo customers and charges for `entity_id` in Stripe and the orders database,
/// ticking `progress` once per charge. Idempotent per customer (Stripe idempotency keys and the
/// database's unique e-mail), so an interrupted run can be repeated.
///
/// # Errors
/// [`SeedOpsError`].
pub async fn seed_ops_demo(
    store: &Store,
    stripe: &StripeClient,
    entity_id: &str,
    progress: &ProgressBar,
) -> Result<usize, SeedOpsError> {
    let now = Utc::now();
    let mut created = 0;
    for (email, name, charges) in DEMO_CUSTOMERS {
        let key = |what: &str| format!("pw-demo-{entity_id}-{email}-{what}");
        let mut metadata = BTreeMap::new();
        metadata.insert("paywarden_demo".to_string(), "true".to_string());
        let stripe_customer = stripe
            .create_customer(email, Some(name), &metadata, Some(&key("customer")))
            .await?;
        let customer = store
            .ensure_customer(entity_id, email, name, Some(&stripe_customer.id))
            .await?;
        for (i, (cents, days_ago)) in charges.iter().enumerate() {
            let at = charge_time(now, *days_ago, i);
            let mut metadata = BTreeMap::new();
            metadata.insert("sandbox_created".to_string(), at.timestamp().to_string());
            let intent = stripe
                .create_payment_intent(
                    &stripe_customer.id,
                    Money::from_minor(*cents, Currency::USD)?,
                    &metadata,
                    Some(&key(&format!("charge-{i}"))),
                )
                .await?;
            if store
                .order_by_charge(entity_id, &intent.id)
                .await?
                .is_none()
            {
                store
                    .insert_order(&NewOrder {
                        entity_id,
                        customer_id: &customer.id,
                        stripe_charge_id: &intent.id,
                        amount_cents: *cents,
                        currency: "usd",
                        created_at: intent.created,
                    })
                    .await?;
            }
            created += 1;
            progress.inc(1);
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// Whatever the time of day the seed runs, each customer's charges share one UTC day and
    /// are `days_ago` whole days old (the `ops_revenue_summary` snapshot failed in CI when the
    /// seed ran at 00:59 UTC: Sarah's duplicate crossed midnight onto the day of Carol's charge).
    #[test]
    fn demo_charges_of_a_customer_share_a_utc_day_at_any_time_of_day() {
        for (h, m) in [
            (0, 0),
            (0, 59),
            (1, 0),
            (1, 3),
            (1, 9),
            (9, 59),
            (12, 0),
            (23, 59),
        ] {
            let now = Utc
                .with_ymd_and_hms(2026, 12, 4, h, m, 30)
                .single()
                .expect("time");
            for (email, _, charges) in DEMO_CUSTOMERS {
                let first = charge_time(now, charges[0].1, 0);
                for (i, (_, days_ago)) in charges.iter().enumerate() {
                    let at = charge_time(now, *days_ago, i);
                    assert_eq!(
                        (now - at).num_days(),
                        *days_ago,
                        "{email} {i} at {now}: {at}"
                    );
                    assert_eq!(
                        (first.date_naive() - at.date_naive()).num_days(),
                        *days_ago - charges[0].1,
                        "{email} charge {i} seeded at {now}: {at}, first {first}"
                    );
                }
            }
        }
    }
}
