//! The OPP transaction state machine: which back-office operation a transaction allows, for how
//! much, and the balances of a transaction.
//!
//! Shared by the emulator (which enforces it) and the server (which pre-checks requests with it
//! before calling OPP). Pure functions over a slice of [`TxRecord`]s: no storage, no clock.
//!
//! A *payment* is a tree: an initial PA or DB and the transactions that reference it, directly or
//! through each other (a CP references its PA, an RF references a DB/CP/RB, a CR references a
//! CB, ...). The *children* of a transaction are the records of the tree whose `referenced_id`
//! is its `id`; only `succeeded` children count. Amounts of children are taken to be in their
//! parent's currency, which [`evaluate`] guarantees for everything it allows.
//!
//! Rules (rejections carry the [`codes`] constant named here; source:
//! OPP's back-office operations and result codes). First, for every operation:
//! 1. a requested amount in another currency than the target → `REFERENCE_CURRENCY_MISMATCH`;
//! 2. a target that did not succeed → `REFERENCE_REJECTED`;
//! 3. a requested amount of zero → `NO_AMOUNT`.
//!
//! Then per operation:
//! - **Capture** (CP): the target must be a PA (`CAPTURE_NEEDS_PA`), not reversed
//!   (`CANNOT_CAPTURE`); capturable = PA amount − successful captures; default = capturable;
//!   nothing capturable or more requested → `CANNOT_CAPTURE`. Partial captures may repeat.
//! - **Reversal** (RV): the target must be a PA (`REFERENCE_INAPPROPRIATE_TYPE`) without a
//!   successful reversal or any successful capture (`CANNOT_REVERSE`); the amount is the PA
//!   amount, another requested amount → `NON_MATCHING_REFERENCE_AMOUNT`.
//! - **Refund** (RF): the target must be a DB, CP or RB (`REFUND_NEEDS_DEBIT`) without an
//!   un-reversed chargeback (`REFERENCE_CHARGEBACKED`); refundable = amount − successful
//!   refunds; default = refundable; nothing refundable or more requested → `CANNOT_REFUND`.
//! - **Rebill** (RB): the target must be a DB (`REFERENCE_INAPPROPRIATE_TYPE`); an amount is
//!   required (`NO_AMOUNT`).
//! - **Chargeback** (CB): the target must be a DB, CP or RB (`CHARGEBACK_NEEDS_DEBIT`), never
//!   charged back before (one chargeback per payment, `CANNOT_CHARGEBACK`); default = amount −
//!   refunds; nothing left → `CANNOT_CHARGEBACK`; more requested → `INVALID_AMOUNT_TOO_LARGE`.
//! - **Chargeback reversal** (CR): the target must be a CB (`NO_CHARGEBACK_TO_REVERSE`), not
//!   reversed yet (`CHARGEBACK_ALREADY_REVERSED`); the amount is the CB amount, another requested
//!   amount → `NON_MATCHING_REFERENCE_AMOUNT`.

use serde::{Deserialize, Serialize};

use crate::currency::Currency;
use crate::money::Money;
use crate::payment::PaymentType;
use crate::result_code::{codes, ResultCategory, ResultFamily};

/// One transaction of a payment, as the state machine sees it.
///
/// `id` and `referenced_id` are OPP transaction ids (plain strings here so that stores can pass
/// their rows without re-validating). `amount` is the transaction's amount in its currency.
/// `succeeded` is whether OPP's result for it was a success; failed records are kept for the
/// history but never count. Serialized (serde) with these field names; `amount` is
/// `{"amount": "10.00", "currency": "EUR"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// The transaction's OPP id.
    pub id: String,
    /// The transaction's payment type.
    pub payment_type: PaymentType,
    /// The transaction's amount.
    pub amount: Money,
    /// The id of the transaction it references (`None` for an initial PA or DB).
    pub referenced_id: Option<String>,
    /// Whether the transaction succeeded.
    pub succeeded: bool,
}

/// A back-office operation on an earlier transaction (OPP's referencing payment types).
///
/// Serialized (serde) in snake_case, e.g. `"chargeback_reversal"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// CP: capture (part of) a preauthorization.
    Capture,
    /// RV: reverse a preauthorization in full.
    Reversal,
    /// RF: refund (part of) a debit, capture or rebill.
    Refund,
    /// RB: charge again on the strength of a debit.
    Rebill,
    /// CB: record a chargeback on a debit, capture or rebill.
    Chargeback,
    /// CR: reverse a chargeback.
    ChargebackReversal,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 6] = [
        Operation::Capture,
        Operation::Reversal,
        Operation::Refund,
        Operation::Rebill,
        Operation::Chargeback,
        Operation::ChargebackReversal,
    ];

    /// The payment type of the transaction the operation creates (CP, RV, RF, RB, CB, CR).
    pub fn payment_type(&self) -> PaymentType {
        match self {
            Operation::Capture => PaymentType::Capture,
            Operation::Reversal => PaymentType::Reversal,
            Operation::Refund => PaymentType::Refund,
            Operation::Rebill => PaymentType::Rebill,
            Operation::Chargeback => PaymentType::Chargeback,
            Operation::ChargebackReversal => PaymentType::ChargebackReversal,
        }
    }

    /// The operation that creates transactions of `payment_type`; `None` for the initial types
    /// PA and DB.
    pub fn from_payment_type(payment_type: PaymentType) -> Option<Operation> {
        Operation::ALL
            .into_iter()
            .find(|op| op.payment_type() == payment_type)
    }

    /// OPP's lower-case name of the operation's payment type, e.g. `"chargeback reversal"`.
    pub fn description(&self) -> &'static str {
        self.payment_type().description()
    }
}

/// Why [`evaluate`] refused an operation, as OPP would answer it.
///
/// `code` and `description` are one of the [`codes`] constants, verbatim; `reason` is a sentence
/// for humans with the amounts involved, e.g. `"capture of 60.00 EUR exceeds the authorised
/// remainder of 50.00 EUR (authorised 100.00, captured 50.00)"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (OPP {code}: {description})")]
pub struct Rejection {
    /// OPP's result code, e.g. `"700.400.100"`.
    pub code: &'static str,
    /// OPP's description of the code.
    pub description: &'static str,
    /// What exactly was wrong, with numbers, and what to do instead.
    pub reason: String,
}

impl Rejection {
    fn new((code, description): (&'static str, &'static str), reason: String) -> Rejection {
        Rejection {
            code,
            description,
            reason,
        }
    }

    /// The OPP result-code family of `code`.
    pub fn family(&self) -> ResultFamily {
        ResultFamily::classify(self.code)
    }

    /// The category of `code` (always [`ResultCategory::RejectedByValidation`] for the rules of
    /// this module).
    pub fn category(&self) -> ResultCategory {
        self.family().category()
    }
}

/// The money picture of one transaction, in the target's currency. See [`balances`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    /// The PA amount for a preauthorization; zero otherwise.
    pub authorized: Money,
    /// For a PA, the sum of its successful captures; for a DB, CP or RB, its own amount;
    /// zero otherwise.
    pub captured: Money,
    /// Successful refunds: of the target (DB, CP, RB), or of the PA's captures (PA).
    pub refunded: Money,
    /// Chargebacks that were not reversed: of the target (DB, CP, RB), of the PA's captures (PA),
    /// or the chargeback itself (CB).
    pub charged_back: Money,
    /// Whether a PA has a successful reversal.
    pub reversed: bool,
    /// What a capture of the target could still take (the default of [`evaluate`] for
    /// [`Operation::Capture`]); zero when a capture would be rejected.
    pub capturable: Money,
    /// What a refund of the target could still return (the default of [`evaluate`] for
    /// [`Operation::Refund`]); zero when a refund would be rejected.
    pub refundable: Money,
}

/// Checks whether `op` may be applied to `target` and returns the amount to execute.
///
/// `tree` is every transaction of the target's payment (root and descendants, target included;
/// extra unrelated records are ignored). `requested` is the caller's amount, or `None` for the
/// operation's default: capture = the authorised remainder, refund = the refundable remainder,
/// reversal = the PA amount, chargeback = the un-refunded amount, chargeback reversal = the CB
/// amount; a rebill has no default. When `requested` is given and allowed, it is returned
/// unchanged. The returned amount is always positive and in the target's currency.
///
/// # Errors
/// A [`Rejection`] with the OPP code of the first rule that fails (see the
/// [module docs](self) for the rules and their order).
pub fn evaluate(
    op: Operation,
    target: &TxRecord,
    tree: &[TxRecord],
    requested: Option<Money>,
) -> Result<Money, Rejection> {
    let currency = target.amount.currency();
    if let Some(requested) = requested {
        if requested.currency() != currency {
            return Err(Rejection::new(
                codes::REFERENCE_CURRENCY_MISMATCH,
                format!(
                    "the requested {} is in {} but transaction {} is in {currency}; send the \
                     amount in {currency}",
                    requested,
                    requested.currency(),
                    target.id
                ),
            ));
        }
    }
    if !target.succeeded {
        return Err(Rejection::new(
            codes::REFERENCE_REJECTED,
            format!(
                "transaction {} ({} {}) was not successful; only successful transactions can be \
                 referenced",
                target.id,
                target.payment_type.description(),
                target.payment_type.code()
            ),
        ));
    }
    if let Some(requested) = requested {
        if requested.is_zero() {
            return Err(Rejection::new(
                codes::NO_AMOUNT,
                format!(
                    "the requested amount is {requested}; send an amount greater than zero{}",
                    if op == Operation::Rebill {
                        ""
                    } else {
                        ", or omit it to use the default"
                    }
                ),
            ));
        }
    }
    let tx = Tx::new(target, tree);
    match op {
        Operation::Capture => capture(&tx, requested),
        Operation::Reversal => reversal(&tx, requested),
        Operation::Refund => refund(&tx, requested),
        Operation::Rebill => rebill(&tx, requested),
        Operation::Chargeback => chargeback(&tx, requested),
        Operation::ChargebackReversal => chargeback_reversal(&tx, requested),
    }
}

/// The balances of `target` within `tree` (same meaning of `tree` as for [`evaluate`]).
///
/// All amounts are in the target's currency. A target that did not succeed moved no money: all
/// amounts are zero and `reversed` is false. For a PA: `authorized` is its amount, `captured` the
/// sum of its successful CP children, `refunded`/`charged_back` are summed over those captures,
/// `capturable` is `authorized − captured` (zero once reversed) and `refundable` is zero (refunds
/// go against the captures). For a DB, CP or RB: `captured` is its own amount, `refunded` its
/// successful RF children, `charged_back` its un-reversed CB children, and `refundable` is
/// `amount − refunded` (zero while a chargeback stands). For a CB, `charged_back` is its amount
/// unless reversed. Everything else is zero. `capturable` and `refundable` equal what
/// [`evaluate`] would default to for a capture or a refund, or zero where it would reject.
pub fn balances(target: &TxRecord, tree: &[TxRecord]) -> Balances {
    let currency = target.amount.currency();
    let zero = Money::zero(currency);
    let mut b = Balances {
        authorized: zero,
        captured: zero,
        refunded: zero,
        charged_back: zero,
        reversed: false,
        capturable: zero,
        refundable: zero,
    };
    if !target.succeeded {
        return b;
    }
    let money = |minor: i64| Money::clamped(minor, currency);
    let tx = Tx::new(target, tree);
    match target.payment_type {
        PaymentType::Preauthorization => {
            let captures: Vec<Tx<'_>> = tx.children(PaymentType::Capture).collect();
            let captured = total(captures.iter().map(|c| c.record));
            b.authorized = target.amount;
            b.captured = money(captured);
            b.reversed = tx.has_child(PaymentType::Reversal);
            b.refunded = money(sum(captures.iter().map(|c| c.refunded())));
            b.charged_back = money(sum(captures.iter().map(|c| c.unreversed_chargebacks())));
            if !b.reversed {
                b.capturable = money(tx.amount().saturating_sub(captured));
            }
        }
        PaymentType::Debit | PaymentType::Capture | PaymentType::Rebill => {
            let refunded = tx.refunded();
            let charged_back = tx.unreversed_chargebacks();
            b.captured = target.amount;
            b.refunded = money(refunded);
            b.charged_back = money(charged_back);
            if !tx.has_unreversed_chargeback() {
                b.refundable = money(tx.amount().saturating_sub(refunded));
            }
        }
        PaymentType::Chargeback => {
            if !tx.has_child(PaymentType::ChargebackReversal) {
                b.charged_back = target.amount;
            }
        }
        PaymentType::Reversal | PaymentType::Refund | PaymentType::ChargebackReversal => {}
    }
    b
}

/// A record together with its tree, for walking children.
#[derive(Clone, Copy)]
struct Tx<'a> {
    record: &'a TxRecord,
    tree: &'a [TxRecord],
}

impl<'a> Tx<'a> {
    fn new(record: &'a TxRecord, tree: &'a [TxRecord]) -> Tx<'a> {
        Tx { record, tree }
    }

    fn amount(&self) -> i64 {
        self.record.amount.minor_units()
    }

    fn currency(&self) -> Currency {
        self.record.amount.currency()
    }

    fn money(&self, minor: i64) -> Money {
        Money::clamped(minor, self.currency())
    }

    /// Successful children of type `kind`.
    fn children(&self, kind: PaymentType) -> impl Iterator<Item = Tx<'a>> + 'a {
        let parent = self.record;
        let tree = self.tree;
        tree.iter()
            .filter(move |r| {
                r.succeeded
                    && r.payment_type == kind
                    && r.id != parent.id
                    && r.referenced_id.as_deref() == Some(parent.id.as_str())
            })
            .map(move |record| Tx { record, tree })
    }

    fn has_child(&self, kind: PaymentType) -> bool {
        self.children(kind).next().is_some()
    }

    fn children_total(&self, kind: PaymentType) -> i64 {
        total(self.children(kind).map(|c| c.record))
    }

    fn refunded(&self) -> i64 {
        self.children_total(PaymentType::Refund)
    }

    /// Chargebacks without a successful chargeback reversal.
    fn unreversed(&self) -> impl Iterator<Item = Tx<'a>> + 'a {
        self.children(PaymentType::Chargeback)
            .filter(|cb| !cb.has_child(PaymentType::ChargebackReversal))
    }

    fn has_unreversed_chargeback(&self) -> bool {
        self.unreversed().next().is_some()
    }

    fn unreversed_chargebacks(&self) -> i64 {
        total(self.unreversed().map(|c| c.record))
    }

    fn describe(&self) -> String {
        let t = self.record.payment_type;
        format!(
            "transaction {} is a {} ({})",
            self.record.id,
            t.description(),
            t.code()
        )
    }
}

fn total<'r>(records: impl Iterator<Item = &'r TxRecord>) -> i64 {
    sum(records.map(|r| r.amount.minor_units()))
}

fn sum(values: impl Iterator<Item = i64>) -> i64 {
    values.fold(0_i64, i64::saturating_add)
}

/// "debited", "captured" or "rebilled": what the money of a DB/CP/RB was.
fn paid_verb(payment_type: PaymentType) -> &'static str {
    match payment_type {
        PaymentType::Capture => "captured",
        PaymentType::Rebill => "rebilled",
        _ => "debited",
    }
}

fn is_debit_like(payment_type: PaymentType) -> bool {
    matches!(
        payment_type,
        PaymentType::Debit | PaymentType::Capture | PaymentType::Rebill
    )
}

fn capture(tx: &Tx<'_>, requested: Option<Money>) -> Result<Money, Rejection> {
    let id = &tx.record.id;
    if tx.record.payment_type != PaymentType::Preauthorization {
        return Err(Rejection::new(
            codes::CAPTURE_NEEDS_PA,
            format!(
                "{}; a capture must reference a successful preauthorization (PA)",
                tx.describe()
            ),
        ));
    }
    if tx.has_child(PaymentType::Reversal) {
        return Err(Rejection::new(
            codes::CANNOT_CAPTURE,
            format!("preauthorization {id} was reversed; nothing is left to capture"),
        ));
    }
    let captured = tx.children_total(PaymentType::Capture);
    let capturable = tx.amount().saturating_sub(captured).max(0);
    let authorised = tx.record.amount;
    if capturable == 0 {
        return Err(Rejection::new(
            codes::CANNOT_CAPTURE,
            format!(
                "preauthorization {id} is fully captured (authorised {authorised}, captured {}); \
                 nothing is left to capture",
                tx.money(captured)
            ),
        ));
    }
    match requested {
        None => Ok(tx.money(capturable)),
        Some(r) if r.minor_units() > capturable => Err(Rejection::new(
            codes::CANNOT_CAPTURE,
            format!(
                "capture of {r} exceeds the authorised remainder of {} (authorised {}, captured \
                 {})",
                tx.money(capturable),
                authorised.to_decimal_string(),
                tx.money(captured).to_decimal_string()
            ),
        )),
        Some(r) => Ok(r),
    }
}

fn reversal(tx: &Tx<'_>, requested: Option<Money>) -> Result<Money, Rejection> {
    let id = &tx.record.id;
    if tx.record.payment_type != PaymentType::Preauthorization {
        return Err(Rejection::new(
            codes::REFERENCE_INAPPROPRIATE_TYPE,
            format!(
                "{}; only a preauthorization (PA) can be reversed, refund a debit, capture or \
                 rebill instead",
                tx.describe()
            ),
        ));
    }
    if tx.has_child(PaymentType::Reversal) {
        return Err(Rejection::new(
            codes::CANNOT_REVERSE,
            format!("preauthorization {id} is already reversed"),
        ));
    }
    let captured = tx.children_total(PaymentType::Capture);
    if tx.has_child(PaymentType::Capture) {
        return Err(Rejection::new(
            codes::CANNOT_REVERSE,
            format!(
                "preauthorization {id} already has captures (captured {} of {}); refund the \
                 captures instead of reversing",
                tx.money(captured),
                tx.record.amount
            ),
        ));
    }
    let amount = tx.record.amount;
    match requested {
        Some(r) if r != amount => Err(Rejection::new(
            codes::NON_MATCHING_REFERENCE_AMOUNT,
            format!(
                "reversal of {r} does not match the authorised {amount}; a reversal releases the \
                 whole preauthorization, so omit the amount or send {}",
                amount.to_decimal_string()
            ),
        )),
        _ => Ok(amount),
    }
}

fn refund(tx: &Tx<'_>, requested: Option<Money>) -> Result<Money, Rejection> {
    let id = &tx.record.id;
    let payment_type = tx.record.payment_type;
    if !is_debit_like(payment_type) {
        let hint = if payment_type == PaymentType::Preauthorization {
            "; capture the preauthorization first, or reverse it to release it"
        } else {
            ""
        };
        return Err(Rejection::new(
            codes::REFUND_NEEDS_DEBIT,
            format!(
                "{}; a refund must reference a successful debit (DB), capture (CP) or rebill \
                 (RB){hint}",
                tx.describe()
            ),
        ));
    }
    if tx.has_unreversed_chargeback() {
        return Err(Rejection::new(
            codes::REFERENCE_CHARGEBACKED,
            format!(
                "transaction {id} was charged back ({} not reversed); it cannot be refunded",
                tx.money(tx.unreversed_chargebacks())
            ),
        ));
    }
    let refunded = tx.refunded();
    let refundable = tx.amount().saturating_sub(refunded).max(0);
    let verb = paid_verb(payment_type);
    if refundable == 0 {
        return Err(Rejection::new(
            codes::CANNOT_REFUND,
            format!(
                "transaction {id} is fully refunded ({verb} {}, refunded {}); nothing is left to \
                 refund",
                tx.record.amount,
                tx.money(refunded)
            ),
        ));
    }
    match requested {
        None => Ok(tx.money(refundable)),
        Some(r) if r.minor_units() > refundable => Err(Rejection::new(
            codes::CANNOT_REFUND,
            format!(
                "refund of {r} exceeds the refundable remainder of {} ({verb} {}, refunded {})",
                tx.money(refundable),
                tx.record.amount.to_decimal_string(),
                tx.money(refunded).to_decimal_string()
            ),
        )),
        Some(r) => Ok(r),
    }
}

fn rebill(tx: &Tx<'_>, requested: Option<Money>) -> Result<Money, Rejection> {
    if tx.record.payment_type != PaymentType::Debit {
        return Err(Rejection::new(
            codes::REFERENCE_INAPPROPRIATE_TYPE,
            format!(
                "{}; a rebill must reference a successful debit (DB)",
                tx.describe()
            ),
        ));
    }
    requested.ok_or_else(|| {
        Rejection::new(
            codes::NO_AMOUNT,
            format!(
                "a rebill has no default amount; send the amount to charge again in {}, e.g. {}",
                tx.currency(),
                tx.record.amount.to_decimal_string()
            ),
        )
    })
}

fn chargeback(tx: &Tx<'_>, requested: Option<Money>) -> Result<Money, Rejection> {
    let id = &tx.record.id;
    let payment_type = tx.record.payment_type;
    if !is_debit_like(payment_type) {
        return Err(Rejection::new(
            codes::CHARGEBACK_NEEDS_DEBIT,
            format!(
                "{}; a chargeback must reference a successful debit (DB), capture (CP) or rebill \
                 (RB)",
                tx.describe()
            ),
        ));
    }
    if tx.has_child(PaymentType::Chargeback) {
        return Err(Rejection::new(
            codes::CANNOT_CHARGEBACK,
            format!(
                "transaction {id} was already charged back ({}); only one chargeback per payment \
                 is possible",
                tx.money(tx.children_total(PaymentType::Chargeback))
            ),
        ));
    }
    let refunded = tx.refunded();
    let chargeable = tx.amount().saturating_sub(refunded).max(0);
    let verb = paid_verb(payment_type);
    if chargeable == 0 {
        return Err(Rejection::new(
            codes::CANNOT_CHARGEBACK,
            format!(
                "transaction {id} is fully refunded ({verb} {}, refunded {}); nothing is left to \
                 charge back",
                tx.record.amount,
                tx.money(refunded)
            ),
        ));
    }
    match requested {
        None => Ok(tx.money(chargeable)),
        Some(r) if r.minor_units() > chargeable => Err(Rejection::new(
            codes::INVALID_AMOUNT_TOO_LARGE,
            format!(
                "chargeback of {r} exceeds the un-refunded {} ({verb} {}, refunded {})",
                tx.money(chargeable),
                tx.record.amount.to_decimal_string(),
                tx.money(refunded).to_decimal_string()
            ),
        )),
        Some(r) => Ok(r),
    }
}

fn chargeback_reversal(tx: &Tx<'_>, requested: Option<Money>) -> Result<Money, Rejection> {
    let id = &tx.record.id;
    if tx.record.payment_type != PaymentType::Chargeback {
        return Err(Rejection::new(
            codes::NO_CHARGEBACK_TO_REVERSE,
            format!(
                "{}; a chargeback reversal must reference a successful chargeback (CB)",
                tx.describe()
            ),
        ));
    }
    if tx.has_child(PaymentType::ChargebackReversal) {
        return Err(Rejection::new(
            codes::CHARGEBACK_ALREADY_REVERSED,
            format!("chargeback {id} is already reversed"),
        ));
    }
    let amount = tx.record.amount;
    match requested {
        Some(r) if r != amount => Err(Rejection::new(
            codes::NON_MATCHING_REFERENCE_AMOUNT,
            format!(
                "chargeback reversal of {r} does not match the charged-back {amount}; omit the \
                 amount or send {}",
                amount.to_decimal_string()
            ),
        )),
        _ => Ok(amount),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::MoneyError;
    use proptest::prelude::*;

    fn eur(minor: i64) -> Money {
        Money::from_minor(minor, Currency::EUR).unwrap_or_else(|e| panic!("{e}"))
    }

    fn rec(id: &str, t: PaymentType, minor: i64, parent: Option<&str>, ok: bool) -> TxRecord {
        TxRecord {
            id: id.into(),
            payment_type: t,
            amount: eur(minor),
            referenced_id: parent.map(Into::into),
            succeeded: ok,
        }
    }

    use PaymentType::{
        Capture as CP, Chargeback as CB, ChargebackReversal as CR, Debit as DB,
        Preauthorization as PA, Rebill as RB, Refund as RF, Reversal as RV,
    };

    /// Evaluates `op` on the record `target` of `tree`.
    fn eval(
        op: Operation,
        tree: &[TxRecord],
        target: &str,
        req: Option<i64>,
    ) -> Result<i64, Rejection> {
        let t = tree
            .iter()
            .find(|r| r.id == target)
            .unwrap_or_else(|| panic!("no {target}"));
        evaluate(op, t, tree, req.map(eur)).map(|m| {
            assert_eq!(m.currency(), Currency::EUR);
            m.minor_units()
        })
    }

    fn code(result: Result<i64, Rejection>) -> &'static str {
        match result {
            Ok(m) => panic!("allowed: {m}"),
            Err(r) => {
                assert!(!r.reason.is_empty());
                assert_eq!(codes::description(r.code), Some(r.description));
                r.code
            }
        }
    }

    fn reason(result: Result<i64, Rejection>) -> String {
        match result {
            Ok(m) => panic!("allowed: {m}"),
            Err(r) => r.reason,
        }
    }

    fn pa(amount: i64) -> Vec<TxRecord> {
        vec![rec("pa", PA, amount, None, true)]
    }

    fn db(amount: i64) -> Vec<TxRecord> {
        vec![rec("db", DB, amount, None, true)]
    }

    use Operation::*;

    // ---- common rules ----

    #[test]
    fn currency_mismatch_comes_first() {
        let tree = vec![rec("pa", PA, 1000, None, false)];
        let usd = Money::from_minor(100, Currency::USD).ok();
        for op in Operation::ALL {
            let result = evaluate(op, &tree[0], &tree, usd);
            let err = result.err().unwrap_or_else(|| panic!("{op:?} allowed"));
            assert_eq!(
                (err.code, err.description),
                codes::REFERENCE_CURRENCY_MISMATCH
            );
            assert!(
                err.reason.contains("USD") && err.reason.contains("EUR"),
                "{}",
                err.reason
            );
        }
    }

    #[test]
    fn failed_target_is_rejected() {
        for (t, op) in [
            (PA, Capture),
            (PA, Reversal),
            (DB, Refund),
            (DB, Rebill),
            (DB, Chargeback),
            (CB, ChargebackReversal),
        ] {
            let tree = vec![rec("x", t, 1000, None, false)];
            assert_eq!(
                code(eval(op, &tree, "x", None)),
                codes::REFERENCE_REJECTED.0
            );
            assert_eq!(
                code(eval(op, &tree, "x", Some(10))),
                codes::REFERENCE_REJECTED.0
            );
        }
    }

    #[test]
    fn zero_amount_is_rejected() {
        for (t, op) in [
            (PA, Capture),
            (PA, Reversal),
            (DB, Refund),
            (DB, Rebill),
            (DB, Chargeback),
            (CB, ChargebackReversal),
        ] {
            let tree = vec![rec("x", t, 1000, None, true)];
            assert_eq!(
                code(eval(op, &tree, "x", Some(0))),
                codes::NO_AMOUNT.0,
                "{op:?}"
            );
        }
    }

    // ---- capture ----

    #[test]
    fn capture_defaults_to_the_authorised_remainder() {
        let mut tree = pa(10_000);
        assert_eq!(eval(Capture, &tree, "pa", None), Ok(10_000));
        tree.push(rec("cp1", CP, 3000, Some("pa"), true));
        assert_eq!(eval(Capture, &tree, "pa", None), Ok(7000));
    }

    #[test]
    fn partial_captures_repeat_until_exhausted() {
        let mut tree = pa(10_000);
        assert_eq!(eval(Capture, &tree, "pa", Some(2500)), Ok(2500));
        tree.push(rec("cp1", CP, 2500, Some("pa"), true));
        assert_eq!(eval(Capture, &tree, "pa", Some(2500)), Ok(2500));
        tree.push(rec("cp2", CP, 2500, Some("pa"), true));
        assert_eq!(eval(Capture, &tree, "pa", Some(5000)), Ok(5000));
        tree.push(rec("cp3", CP, 5000, Some("pa"), true));
        let r = eval(Capture, &tree, "pa", None);
        assert!(reason(r.clone()).contains("fully captured"));
        assert_eq!(code(r), codes::CANNOT_CAPTURE.0);
        assert_eq!(
            code(eval(Capture, &tree, "pa", Some(1))),
            codes::CANNOT_CAPTURE.0
        );
    }

    #[test]
    fn capture_over_the_remainder_is_rejected_with_numbers() {
        let mut tree = pa(10_000);
        tree.push(rec("cp1", CP, 5000, Some("pa"), true));
        let r = eval(Capture, &tree, "pa", Some(6000));
        assert_eq!(
            reason(r.clone()),
            "capture of 60.00 EUR exceeds the authorised remainder of 50.00 EUR (authorised \
             100.00, captured 50.00)"
        );
        assert_eq!(code(r), codes::CANNOT_CAPTURE.0);
        assert_eq!(eval(Capture, &tree, "pa", Some(5000)), Ok(5000));
    }

    #[test]
    fn failed_captures_do_not_count() {
        let mut tree = pa(10_000);
        tree.push(rec("cp1", CP, 10_000, Some("pa"), false));
        assert_eq!(eval(Capture, &tree, "pa", None), Ok(10_000));
    }

    #[test]
    fn capture_needs_a_pa() {
        for t in [DB, CP, RV, RF, RB, CB, CR] {
            let tree = vec![rec("x", t, 1000, None, true)];
            assert_eq!(
                code(eval(Capture, &tree, "x", None)),
                codes::CAPTURE_NEEDS_PA.0
            );
        }
    }

    #[test]
    fn reversed_pa_cannot_be_captured() {
        let mut tree = pa(10_000);
        tree.push(rec("rv", RV, 10_000, Some("pa"), true));
        let r = eval(Capture, &tree, "pa", Some(100));
        assert!(reason(r.clone()).contains("reversed"));
        assert_eq!(code(r), codes::CANNOT_CAPTURE.0);
        // A failed reversal does not block.
        let mut tree = pa(10_000);
        tree.push(rec("rv", RV, 10_000, Some("pa"), false));
        assert_eq!(eval(Capture, &tree, "pa", None), Ok(10_000));
    }

    #[test]
    fn children_of_other_transactions_do_not_count() {
        let tree = vec![
            rec("pa", PA, 10_000, None, true),
            rec("pa2", PA, 10_000, None, true),
            rec("cp", CP, 10_000, Some("pa2"), true),
            rec("rv", RV, 10_000, Some("pa2x"), true),
        ];
        assert_eq!(eval(Capture, &tree, "pa", None), Ok(10_000));
    }

    // ---- reversal ----

    #[test]
    fn reversal_releases_the_whole_pa() {
        let tree = pa(10_000);
        assert_eq!(eval(Reversal, &tree, "pa", None), Ok(10_000));
        assert_eq!(eval(Reversal, &tree, "pa", Some(10_000)), Ok(10_000));
        let r = eval(Reversal, &tree, "pa", Some(4000));
        assert!(reason(r.clone())
            .contains("reversal of 40.00 EUR does not match the authorised 100.00 EUR"));
        assert_eq!(code(r), codes::NON_MATCHING_REFERENCE_AMOUNT.0);
    }

    #[test]
    fn reversal_needs_a_pa() {
        for t in [DB, CP, RV, RF, RB, CB, CR] {
            let tree = vec![rec("x", t, 1000, None, true)];
            assert_eq!(
                code(eval(Reversal, &tree, "x", None)),
                codes::REFERENCE_INAPPROPRIATE_TYPE.0
            );
        }
    }

    #[test]
    fn reversal_after_reversal_or_capture_is_rejected() {
        let mut tree = pa(10_000);
        tree.push(rec("rv", RV, 10_000, Some("pa"), true));
        assert_eq!(
            code(eval(Reversal, &tree, "pa", None)),
            codes::CANNOT_REVERSE.0
        );

        let mut tree = pa(10_000);
        tree.push(rec("cp", CP, 100, Some("pa"), true));
        let r = eval(Reversal, &tree, "pa", None);
        assert!(reason(r.clone()).contains("captured 1.00 EUR of 100.00 EUR"));
        assert_eq!(code(r), codes::CANNOT_REVERSE.0);

        let mut tree = pa(10_000);
        tree.push(rec("cp", CP, 100, Some("pa"), false));
        tree.push(rec("rv", RV, 10_000, Some("pa"), false));
        assert_eq!(eval(Reversal, &tree, "pa", None), Ok(10_000));
    }

    // ---- refund ----

    #[test]
    fn refund_defaults_to_the_refundable_remainder() {
        for t in [DB, CP, RB] {
            let mut tree = vec![rec("x", t, 10_000, None, true)];
            assert_eq!(eval(Refund, &tree, "x", None), Ok(10_000));
            tree.push(rec("rf1", RF, 4000, Some("x"), true));
            assert_eq!(eval(Refund, &tree, "x", None), Ok(6000));
            tree.push(rec("rf2", RF, 6000, Some("x"), true));
            let r = eval(Refund, &tree, "x", None);
            assert!(reason(r.clone()).contains("fully refunded"));
            assert_eq!(code(r), codes::CANNOT_REFUND.0);
        }
    }

    #[test]
    fn refund_over_the_remainder_is_rejected_with_numbers() {
        let mut tree = db(10_000);
        tree.push(rec("rf1", RF, 5000, Some("db"), true));
        let r = eval(Refund, &tree, "db", Some(6000));
        assert_eq!(
            reason(r.clone()),
            "refund of 60.00 EUR exceeds the refundable remainder of 50.00 EUR (debited 100.00, \
             refunded 50.00)"
        );
        assert_eq!(code(r), codes::CANNOT_REFUND.0);
        assert_eq!(eval(Refund, &tree, "db", Some(5000)), Ok(5000));
        tree.push(rec("rf2", RF, 5000, Some("db"), false));
        assert_eq!(eval(Refund, &tree, "db", Some(5000)), Ok(5000));
    }

    #[test]
    fn refund_needs_a_debit_capture_or_rebill() {
        for t in [PA, RV, RF, CB, CR] {
            let tree = vec![rec("x", t, 1000, None, true)];
            let r = eval(Refund, &tree, "x", None);
            if t == PA {
                assert!(reason(r.clone()).contains("capture the preauthorization first"));
            }
            assert_eq!(code(r), codes::REFUND_NEEDS_DEBIT.0);
        }
    }

    #[test]
    fn refund_of_a_capture_counts_only_that_capture() {
        let tree = vec![
            rec("pa", PA, 10_000, None, true),
            rec("cp1", CP, 3000, Some("pa"), true),
            rec("cp2", CP, 7000, Some("pa"), true),
            rec("rf1", RF, 3000, Some("cp1"), true),
        ];
        assert_eq!(
            code(eval(Refund, &tree, "cp1", None)),
            codes::CANNOT_REFUND.0
        );
        assert_eq!(eval(Refund, &tree, "cp2", None), Ok(7000));
    }

    #[test]
    fn refund_after_chargeback_until_reversed() {
        let mut tree = db(10_000);
        tree.push(rec("cb", CB, 10_000, Some("db"), true));
        let r = eval(Refund, &tree, "db", Some(100));
        assert!(reason(r.clone()).contains("charged back (100.00 EUR not reversed)"));
        assert_eq!(code(r), codes::REFERENCE_CHARGEBACKED.0);
        tree.push(rec("cr", CR, 10_000, Some("cb"), false));
        assert_eq!(
            code(eval(Refund, &tree, "db", None)),
            codes::REFERENCE_CHARGEBACKED.0
        );
        tree.push(rec("cr2", CR, 10_000, Some("cb"), true));
        assert_eq!(eval(Refund, &tree, "db", None), Ok(10_000));
        // A failed chargeback never blocked anything.
        let mut tree = db(10_000);
        tree.push(rec("cb", CB, 10_000, Some("db"), false));
        assert_eq!(eval(Refund, &tree, "db", None), Ok(10_000));
    }

    // ---- rebill ----

    #[test]
    fn rebill_needs_a_debit_and_an_amount() {
        let tree = db(10_000);
        assert_eq!(eval(Rebill, &tree, "db", Some(2500)), Ok(2500));
        // No upper bound: a rebill is a new charge.
        assert_eq!(eval(Rebill, &tree, "db", Some(50_000)), Ok(50_000));
        let r = eval(Rebill, &tree, "db", None);
        assert!(reason(r.clone()).contains("no default amount"));
        assert_eq!(code(r), codes::NO_AMOUNT.0);
        for t in [PA, CP, RV, RF, RB, CB, CR] {
            let tree = vec![rec("x", t, 1000, None, true)];
            assert_eq!(
                code(eval(Rebill, &tree, "x", Some(10))),
                codes::REFERENCE_INAPPROPRIATE_TYPE.0
            );
        }
    }

    #[test]
    fn rebills_can_be_refunded_and_charged_back() {
        let tree = vec![
            rec("db", DB, 10_000, None, true),
            rec("rb", RB, 2000, Some("db"), true),
        ];
        assert_eq!(eval(Refund, &tree, "rb", None), Ok(2000));
        assert_eq!(eval(Chargeback, &tree, "rb", None), Ok(2000));
        // The rebill is not a refund of the debit.
        assert_eq!(eval(Refund, &tree, "db", None), Ok(10_000));
    }

    // ---- chargeback ----

    #[test]
    fn chargeback_defaults_to_the_unrefunded_amount() {
        for t in [DB, CP, RB] {
            let mut tree = vec![rec("x", t, 10_000, None, true)];
            assert_eq!(eval(Chargeback, &tree, "x", None), Ok(10_000));
            tree.push(rec("rf", RF, 2500, Some("x"), true));
            assert_eq!(eval(Chargeback, &tree, "x", None), Ok(7500));
            assert_eq!(eval(Chargeback, &tree, "x", Some(7500)), Ok(7500));
            let r = eval(Chargeback, &tree, "x", Some(7501));
            assert!(reason(r.clone())
                .contains("chargeback of 75.01 EUR exceeds the un-refunded 75.00 EUR"));
            assert_eq!(code(r), codes::INVALID_AMOUNT_TOO_LARGE.0);
        }
    }

    #[test]
    fn one_chargeback_per_payment() {
        let mut tree = db(10_000);
        tree.push(rec("cb", CB, 5000, Some("db"), true));
        assert_eq!(
            code(eval(Chargeback, &tree, "db", None)),
            codes::CANNOT_CHARGEBACK.0
        );
        // Even once reversed.
        tree.push(rec("cr", CR, 5000, Some("cb"), true));
        assert_eq!(
            code(eval(Chargeback, &tree, "db", Some(100))),
            codes::CANNOT_CHARGEBACK.0
        );
        // A failed chargeback does not count.
        let mut tree = db(10_000);
        tree.push(rec("cb", CB, 5000, Some("db"), false));
        assert_eq!(eval(Chargeback, &tree, "db", None), Ok(10_000));
    }

    #[test]
    fn fully_refunded_cannot_be_charged_back() {
        let mut tree = db(10_000);
        tree.push(rec("rf", RF, 10_000, Some("db"), true));
        assert_eq!(
            code(eval(Chargeback, &tree, "db", None)),
            codes::CANNOT_CHARGEBACK.0
        );
        assert_eq!(
            code(eval(Chargeback, &tree, "db", Some(1))),
            codes::CANNOT_CHARGEBACK.0
        );
    }

    #[test]
    fn chargeback_needs_a_debit_capture_or_rebill() {
        for t in [PA, RV, RF, CB, CR] {
            let tree = vec![rec("x", t, 1000, None, true)];
            assert_eq!(
                code(eval(Chargeback, &tree, "x", None)),
                codes::CHARGEBACK_NEEDS_DEBIT.0
            );
        }
    }

    // ---- chargeback reversal ----

    #[test]
    fn chargeback_reversal_takes_the_cb_amount() {
        let mut tree = db(10_000);
        tree.push(rec("cb", CB, 6000, Some("db"), true));
        assert_eq!(eval(ChargebackReversal, &tree, "cb", None), Ok(6000));
        assert_eq!(eval(ChargebackReversal, &tree, "cb", Some(6000)), Ok(6000));
        let r = eval(ChargebackReversal, &tree, "cb", Some(5000));
        assert!(reason(r.clone()).contains("does not match the charged-back 60.00 EUR"));
        assert_eq!(code(r), codes::NON_MATCHING_REFERENCE_AMOUNT.0);
        tree.push(rec("cr", CR, 6000, Some("cb"), true));
        assert_eq!(
            code(eval(ChargebackReversal, &tree, "cb", None)),
            codes::CHARGEBACK_ALREADY_REVERSED.0
        );
    }

    #[test]
    fn failed_chargeback_reversal_does_not_count() {
        let mut tree = db(10_000);
        tree.push(rec("cb", CB, 6000, Some("db"), true));
        tree.push(rec("cr", CR, 6000, Some("cb"), false));
        assert_eq!(eval(ChargebackReversal, &tree, "cb", None), Ok(6000));
    }

    #[test]
    fn chargeback_reversal_needs_a_chargeback() {
        for t in [PA, DB, CP, RV, RF, RB, CR] {
            let tree = vec![rec("x", t, 1000, None, true)];
            assert_eq!(
                code(eval(ChargebackReversal, &tree, "x", None)),
                codes::NO_CHARGEBACK_TO_REVERSE.0
            );
        }
    }

    // ---- operations, rejections ----

    #[test]
    fn operation_payment_types() {
        for op in Operation::ALL {
            assert_eq!(Operation::from_payment_type(op.payment_type()), Some(op));
            assert_eq!(op.description(), op.payment_type().description());
        }
        assert_eq!(Operation::from_payment_type(PA), None);
        assert_eq!(Operation::from_payment_type(DB), None);
        assert_eq!(Capture.payment_type(), CP);
        assert_eq!(ChargebackReversal.payment_type(), CR);
        assert_eq!(
            serde_json::to_string(&ChargebackReversal).ok().as_deref(),
            Some("\"chargeback_reversal\"")
        );
    }

    #[test]
    fn rejection_display_and_category() {
        let tree = pa(1000);
        let r = evaluate(Refund, &tree[0], &tree, None)
            .err()
            .unwrap_or_else(|| panic!("allowed"));
        assert_eq!(r.family(), ResultFamily::ReferenceValidation);
        assert_eq!(r.category(), ResultCategory::RejectedByValidation);
        let text = r.to_string();
        assert!(text.ends_with(
            "(OPP 700.400.520: refund needs at least one successful transaction of type (CP or DB or RB or RC))"
        ), "{text}");
    }

    // ---- balances ----

    #[test]
    fn balances_of_a_preauthorization() {
        let tree = vec![
            rec("pa", PA, 10_000, None, true),
            rec("cp1", CP, 3000, Some("pa"), true),
            rec("cp2", CP, 2000, Some("pa"), true),
            rec("cpx", CP, 5000, Some("pa"), false),
            rec("rf1", RF, 1000, Some("cp1"), true),
            rec("cb2", CB, 2000, Some("cp2"), true),
        ];
        let b = balances(&tree[0], &tree);
        assert_eq!(
            b,
            Balances {
                authorized: eur(10_000),
                captured: eur(5000),
                refunded: eur(1000),
                charged_back: eur(2000),
                reversed: false,
                capturable: eur(5000),
                refundable: eur(0),
            }
        );
        let mut reversed = pa(10_000);
        reversed.push(rec("rv", RV, 10_000, Some("pa"), true));
        let b = balances(&reversed[0], &reversed);
        assert!(b.reversed);
        assert_eq!(b.capturable, eur(0));
        assert_eq!(b.authorized, eur(10_000));
    }

    #[test]
    fn balances_of_a_debit() {
        let mut tree = vec![
            rec("db", DB, 10_000, None, true),
            rec("rf1", RF, 1500, Some("db"), true),
            rec("rf2", RF, 500, Some("db"), false),
        ];
        let b = balances(&tree[0], &tree);
        assert_eq!(
            b,
            Balances {
                authorized: eur(0),
                captured: eur(10_000),
                refunded: eur(1500),
                charged_back: eur(0),
                reversed: false,
                capturable: eur(0),
                refundable: eur(8500),
            }
        );
        tree.push(rec("cb", CB, 8500, Some("db"), true));
        let b = balances(&tree[0], &tree);
        assert_eq!(b.charged_back, eur(8500));
        assert_eq!(b.refundable, eur(0));
        assert_eq!(balances(&tree[3], &tree).charged_back, eur(8500));
        tree.push(rec("cr", CR, 8500, Some("cb"), true));
        let b = balances(&tree[0], &tree);
        assert_eq!(b.charged_back, eur(0));
        assert_eq!(b.refundable, eur(8500));
        assert_eq!(balances(&tree[3], &tree).charged_back, eur(0));
    }

    #[test]
    fn balances_of_failed_and_other_transactions_are_zero() {
        let zero = Balances {
            authorized: eur(0),
            captured: eur(0),
            refunded: eur(0),
            charged_back: eur(0),
            reversed: false,
            capturable: eur(0),
            refundable: eur(0),
        };
        let failed = vec![rec("pa", PA, 1000, None, false)];
        assert_eq!(balances(&failed[0], &failed), zero);
        for t in [RV, RF, CR] {
            let tree = vec![rec("x", t, 1000, None, true)];
            assert_eq!(balances(&tree[0], &tree), zero);
        }
    }

    #[test]
    fn inconsistent_trees_do_not_panic() {
        // Over-captured and self-referencing records (never produced by evaluate).
        let tree = vec![
            TxRecord {
                referenced_id: Some("pa".into()),
                ..rec("pa", PA, 1000, None, true)
            },
            rec("cp1", CP, i64::MAX, Some("pa"), true),
            rec("cp2", CP, i64::MAX, Some("pa"), true),
        ];
        let b = balances(&tree[0], &tree);
        assert_eq!(b.captured.minor_units(), i64::MAX);
        assert_eq!(b.capturable, eur(0));
        assert_eq!(
            code(eval(Capture, &tree, "pa", None)),
            codes::CANNOT_CAPTURE.0
        );
    }

    // ---- property: random operation sequences keep OPP's invariants ----

    #[derive(Debug, Clone)]
    struct Step {
        op: Operation,
        target: usize,
        amount: Option<i64>,
        wrong_currency: bool,
        bank_declines: bool,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            prop::sample::select(Operation::ALL.to_vec()),
            any::<usize>(),
            prop::option::weighted(0.6, 0_i64..=12_000),
            prop::bool::weighted(0.05),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(op, target, amount, wrong_currency, bank_declines)| Step {
                op,
                target,
                amount,
                wrong_currency,
                bank_declines,
            })
    }

    fn successful_children<'a>(
        tree: &'a [TxRecord],
        parent: &'a TxRecord,
        kind: PaymentType,
    ) -> Vec<&'a TxRecord> {
        tree.iter()
            .filter(|r| {
                r.succeeded
                    && r.payment_type == kind
                    && r.referenced_id.as_deref() == Some(parent.id.as_str())
            })
            .collect()
    }

    fn check_invariants(tree: &[TxRecord]) -> Result<(), TestCaseError> {
        let sum = |v: &[&TxRecord]| v.iter().map(|r| r.amount.minor_units()).sum::<i64>();
        for t in tree.iter().filter(|r| r.succeeded) {
            prop_assert_eq!(t.amount.currency(), Currency::EUR);
            prop_assert!(t.amount.minor_units() > 0);
            let cps = successful_children(tree, t, CP);
            let rvs = successful_children(tree, t, RV);
            let rfs = successful_children(tree, t, RF);
            let cbs = successful_children(tree, t, CB);
            let crs = successful_children(tree, t, CR);
            let rbs = successful_children(tree, t, RB);
            let amount = t.amount.minor_units();
            prop_assert!(
                sum(&cps) <= amount,
                "captures exceed the authorisation of {}",
                t.id
            );
            prop_assert!(sum(&rfs) <= amount, "refunds exceed the amount of {}", t.id);
            prop_assert!(
                rvs.is_empty() || cps.is_empty(),
                "{} reversed and captured",
                t.id
            );
            prop_assert!(rvs.len() <= 1, "{} reversed twice", t.id);
            prop_assert!(cbs.len() <= 1, "{} charged back twice", t.id);
            prop_assert!(crs.len() <= 1, "{} reversed twice", t.id);
            let unreversed: i64 = cbs
                .iter()
                .filter(|cb| successful_children(tree, cb, CR).is_empty())
                .map(|cb| cb.amount.minor_units())
                .sum();
            prop_assert!(
                sum(&rfs) + unreversed <= amount,
                "refunds + chargeback exceed {}",
                t.id
            );
            if t.payment_type == CB {
                for cr in &crs {
                    prop_assert_eq!(cr.amount, t.amount);
                }
            }
            if t.payment_type == PA {
                for rv in &rvs {
                    prop_assert_eq!(rv.amount, t.amount);
                }
            }
            // Children only of the types OPP allows.
            let allowed: &[PaymentType] = match t.payment_type {
                PA => &[CP, RV],
                DB => &[RF, RB, CB],
                CP | RB => &[RF, CB],
                CB => &[CR],
                _ => &[],
            };
            for child in tree
                .iter()
                .filter(|r| r.succeeded && r.referenced_id.as_deref() == Some(t.id.as_str()))
            {
                prop_assert!(
                    allowed.contains(&child.payment_type),
                    "{:?} under {:?}",
                    child.payment_type,
                    t.payment_type
                );
            }
            let _ = rbs;
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn random_operation_sequences_keep_the_invariants(
            root_is_pa in any::<bool>(),
            root_succeeded in prop::bool::weighted(0.95),
            root_amount in 1_i64..=10_000,
            steps in prop::collection::vec(step(), 0..40),
        ) {
            let root_type = if root_is_pa { PA } else { DB };
            let mut tree = vec![rec("tx0", root_type, root_amount, None, root_succeeded)];
            for (n, step) in steps.into_iter().enumerate() {
                let target = tree[step.target % tree.len()].clone();
                let currency = if step.wrong_currency { Currency::USD } else { Currency::EUR };
                let requested = match step.amount.map(|a| Money::from_minor(a, currency)) {
                    Some(Ok(m)) => Some(m),
                    Some(Err(MoneyError::Negative { .. })) | None => None,
                    Some(Err(e)) => return Err(TestCaseError::fail(e.to_string())),
                };
                let before = balances(&target, &tree);
                match evaluate(step.op, &target, &tree, requested) {
                    Ok(amount) => {
                        prop_assert!(amount.minor_units() > 0);
                        prop_assert_eq!(amount.currency(), Currency::EUR);
                        if let Some(r) = requested {
                            prop_assert_eq!(amount, r);
                        }
                        if step.op == Capture {
                            prop_assert!(amount.minor_units() <= before.capturable.minor_units());
                        }
                        if step.op == Refund {
                            prop_assert!(amount.minor_units() <= before.refundable.minor_units());
                        }
                        tree.push(TxRecord {
                            id: format!("tx{}", n + 1),
                            payment_type: step.op.payment_type(),
                            amount,
                            referenced_id: Some(target.id.clone()),
                            succeeded: !step.bank_declines,
                        });
                    }
                    Err(rejection) => {
                        prop_assert_eq!(
                            codes::description(rejection.code),
                            Some(rejection.description)
                        );
                        prop_assert_eq!(rejection.category(), ResultCategory::RejectedByValidation);
                        prop_assert!(!rejection.reason.is_empty());
                        if step.wrong_currency && requested.is_some() {
                            prop_assert_eq!(rejection.code, codes::REFERENCE_CURRENCY_MISMATCH.0);
                        }
                    }
                }
                check_invariants(&tree)?;
                // The balances' remainders are exactly evaluate's defaults.
                for t in &tree {
                    let b = balances(t, &tree);
                    let default = |op| evaluate(op, t, &tree, None).map_or(0, |m| m.minor_units());
                    prop_assert_eq!(b.capturable.minor_units(), default(Capture));
                    prop_assert_eq!(b.refundable.minor_units(), default(Refund));
                }
            }
        }
    }
}
