//! Demo data: about fifty card payments over the last 120 days for the demo entity, created
//! through the real OPP connector against the emulator, covering every payment type:
//! uncaptured, partly and fully captured and reversed pre-authorizations; debits partly and
//! fully refunded, rebilled, charged back (and one chargeback reversed); a few declines.
//!
//! Back-dating uses OPP's generic `customParameters[...]` mechanism with the emulator's
//! `SANDBOX_TIMESTAMP` parameter; a real OPP ignores it, and paywarden refuses to seed a real
//! provider anyway.

use chrono::{DateTime, Duration, Utc};
use indicatif::ProgressBar;
use paywarden_domain::{Currency, Money, PaymentType};
use rand::{rngs::StdRng, Rng, SeedableRng};
use secrecy::SecretString;

use crate::connectors::opp::{
    BackofficeRequest, InitialPaymentRequest, OppClient, OppCredentials, OppError,
};

/// The merchant reference of the first demo payment; its presence means "already seeded".
pub const SEED_MARKER: &str = "pw-demo-0000";

/// What seeding created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedSummary {
    /// Initial payments (PA and DB) created.
    pub payments: usize,
    /// Transactions created in all, back-office operations included.
    pub transactions: usize,
}

/// Whether the demo data exists already for `credentials`' entity.
///
/// # Errors
/// [`OppError`] other than "not found".
pub async fn is_seeded(client: &OppClient, credentials: &OppCredentials) -> Result<bool, OppError> {
    match client
        .query_by_merchant_transaction_id(credentials, SEED_MARKER)
        .await
    {
        Ok(found) => Ok(!found.is_empty()),
        Err(OppError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

struct Seeder<'a> {
    client: &'a OppClient,
    credentials: &'a OppCredentials,
    now: DateTime<Utc>,
    created: usize,
}

impl Seeder<'_> {
    fn stamp(&self, at: DateTime<Utc>) -> Vec<(String, String)> {
        let at = at.min(self.now);
        vec![(
            "SANDBOX_TIMESTAMP".to_string(),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )]
    }

    async fn pay(
        &mut self,
        payment_type: PaymentType,
        amount: Money,
        card: &str,
        reference: String,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, OppError> {
        let request = InitialPaymentRequest {
            payment_type,
            amount,
            payment_brand: if card.starts_with('5') {
                "MASTER"
            } else {
                "VISA"
            }
            .into(),
            card_number: SecretString::from(card.to_string()),
            card_holder: "Demo Shopper".into(),
            expiry_month: "12".into(),
            expiry_year: "2034".into(),
            cvv: SecretString::from("123".to_string()),
            merchant_transaction_id: Some(reference),
            custom_parameters: self.stamp(at),
        };
        self.created += 1;
        match self.client.create_payment(self.credentials, &request).await {
            Ok(tx) => Ok(Some(tx.id)),
            // A declined demo payment is part of the demo.
            Err(OppError::Rejected { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn op(
        &mut self,
        reference_id: &str,
        payment_type: PaymentType,
        amount: Option<Money>,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, OppError> {
        let request = BackofficeRequest {
            payment_type,
            amount,
            merchant_transaction_id: None,
            custom_parameters: self.stamp(at),
        };
        self.created += 1;
        match self
            .client
            .backoffice(self.credentials, reference_id, &request)
            .await
        {
            Ok(tx) => Ok(Some(tx.id)),
            Err(OppError::Rejected { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn pick_currency(rng: &mut StdRng) -> Currency {
    match rng.gen_range(0..20) {
        0..=13 => Currency::EUR,
        14..=16 => Currency::USD,
        17..=18 => Currency::GBP,
        _ => Currency::JPY,
    }
}

fn pick_amount(rng: &mut StdRng, currency: Currency) -> Result<Money, OppError> {
    let minor = match currency.exponent() {
        0 => rng.gen_range(5..=500) * 100,
        _ => rng.gen_range(5..=500) * 100 + [0, 0, 50, 99][rng.gen_range(0..4)],
    };
    Money::from_minor(minor, currency).map_err(|e| OppError::UnexpectedResponse {
        status: 0,
        reason: e.to_string(),
    })
}

fn part(amount: Money, numerator: i64, denominator: i64) -> Option<Money> {
    let minor = amount.minor_units() * numerator / denominator;
    Money::from_minor(minor.max(1), amount.currency()).ok()
}

/// Creates `payments` demo payments (and their back-office history) for `credentials`' entity,
/// ticking `progress` once per payment. Deterministic: the same count gives the same data
/// (amounts, types, ages), apart from ids.
///
/// # Errors
/// [`OppError`] when the emulator cannot be reached or answers unexpectedly.
pub async fn seed_demo(
    client: &OppClient,
    credentials: &OppCredentials,
    payments: usize,
    progress: &ProgressBar,
) -> Result<SeedSummary, OppError> {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut seeder = Seeder {
        client,
        credentials,
        now: Utc::now(),
        created: 0,
    };
    progress.set_length(payments as u64);
    for i in 0..payments {
        let reference = format!("pw-demo-{i:04}");
        let currency = pick_currency(&mut rng);
        let amount = pick_amount(&mut rng, currency)?;
        let recent = Duration::hours(rng.gen_range(1..=24 * 6));
        let old = Duration::hours(rng.gen_range(24..=24 * 120));
        let later = Duration::hours(rng.gen_range(1..=48));
        let card = "4200000000000000";
        match i % 10 {
            // Uncaptured authorizations, recent (authorizations expire).
            0 | 1 => {
                let at = seeder.now - recent;
                seeder
                    .pay(PaymentType::Preauthorization, amount, card, reference, at)
                    .await?;
            }
            // Fully captured.
            2 => {
                let at = seeder.now - old;
                if let Some(pa) = seeder
                    .pay(PaymentType::Preauthorization, amount, card, reference, at)
                    .await?
                {
                    seeder
                        .op(&pa, PaymentType::Capture, Some(amount), at + later)
                        .await?;
                }
            }
            // Partly captured; sometimes the capture is then partly refunded.
            3 => {
                let at = seeder.now - old;
                if let Some(pa) = seeder
                    .pay(
                        PaymentType::Preauthorization,
                        amount,
                        "5454545454545454",
                        reference,
                        at,
                    )
                    .await?
                {
                    let captured = part(amount, 1, 2);
                    if let Some(cp) = seeder
                        .op(&pa, PaymentType::Capture, captured, at + later)
                        .await?
                    {
                        if i % 20 == 3 {
                            let refund = captured.and_then(|c| part(c, 1, 2));
                            seeder
                                .op(&cp, PaymentType::Refund, refund, at + later + later)
                                .await?;
                        }
                    }
                }
            }
            // Reversed authorizations.
            4 => {
                let at = seeder.now - old;
                if let Some(pa) = seeder
                    .pay(PaymentType::Preauthorization, amount, card, reference, at)
                    .await?
                {
                    seeder
                        .op(&pa, PaymentType::Reversal, None, at + later)
                        .await?;
                }
            }
            // Plain debits.
            5 | 6 => {
                let at = seeder.now - old;
                seeder
                    .pay(PaymentType::Debit, amount, card, reference, at)
                    .await?;
            }
            // Partly refunded debits.
            7 => {
                let at = seeder.now - old;
                if let Some(db) = seeder
                    .pay(PaymentType::Debit, amount, card, reference, at)
                    .await?
                {
                    seeder
                        .op(&db, PaymentType::Refund, part(amount, 1, 4), at + later)
                        .await?;
                }
            }
            // Fully refunded debits, or rebilled ones.
            8 => {
                let at = seeder.now - old;
                if let Some(db) = seeder
                    .pay(PaymentType::Debit, amount, card, reference, at)
                    .await?
                {
                    if i % 20 == 8 {
                        seeder
                            .op(&db, PaymentType::Refund, Some(amount), at + later)
                            .await?;
                    } else {
                        seeder
                            .op(&db, PaymentType::Rebill, part(amount, 1, 5), at + later)
                            .await?;
                    }
                }
            }
            // The rare ones: chargebacks (one reversed) and declines.
            _ => {
                let at = seeder.now - old;
                match (i / 10) % 3 {
                    0 => {
                        if let Some(db) = seeder
                            .pay(PaymentType::Debit, amount, card, reference, at)
                            .await?
                        {
                            seeder
                                .op(&db, PaymentType::Chargeback, Some(amount), at + later * 5)
                                .await?;
                        }
                    }
                    1 => {
                        if let Some(db) = seeder
                            .pay(PaymentType::Debit, amount, card, reference, at)
                            .await?
                        {
                            if let Some(cb) = seeder
                                .op(&db, PaymentType::Chargeback, Some(amount), at + later * 5)
                                .await?
                            {
                                seeder
                                    .op(
                                        &cb,
                                        PaymentType::ChargebackReversal,
                                        Some(amount),
                                        at + later * 10,
                                    )
                                    .await?;
                            }
                        }
                    }
                    _ => {
                        seeder
                            .pay(
                                PaymentType::Debit,
                                amount,
                                "4000000000000002",
                                reference,
                                at,
                            )
                            .await?;
                    }
                }
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(SeedSummary {
        payments,
        transactions: seeder.created,
    })
}
