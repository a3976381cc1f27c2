//! The console's templates (minijinja, HTML auto-escaping, embedded in the binary) and the
//! formatting the pages share: times, and amounts in their currency's own format.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use minijinja::{AutoEscape, Environment};
use paywarden_domain::{Currency, Money};
use serde::Serialize;
use serde_json::Value;

/// Every template, by name, as shipped in `crates/paywarden/templates/`.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("message.html", include_str!("../../templates/message.html")),
    (
        "approvals.html",
        include_str!("../../templates/approvals.html"),
    ),
    (
        "approval.html",
        include_str!("../../templates/approval.html"),
    ),
    (
        "activity.html",
        include_str!("../../templates/activity.html"),
    ),
    (
        "timeline.html",
        include_str!("../../templates/timeline.html"),
    ),
    ("policy.html", include_str!("../../templates/policy.html")),
    (
        "entities.html",
        include_str!("../../templates/entities.html"),
    ),
    (
        "receipts.html",
        include_str!("../../templates/receipts.html"),
    ),
    ("receipt.html", include_str!("../../templates/receipt.html")),
];

/// The console's sections, in navigation order: (key, label, link).
pub(crate) const NAV: &[(&str, &str, &str)] = &[
    ("approvals", "Approvals", "/console/approvals"),
    ("activity", "Activity", "/console/activity"),
    ("timeline", "Timeline", "/console/timeline"),
    ("policy", "Policy", "/console/policy"),
    ("entities", "Entities", "/console/entities"),
    ("receipts", "Receipts", "/console/receipts"),
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Every template is HTML: escape every value unless it is marked safe.
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.add_filter("label", |key: String| label(&key));
        for (name, source) in TEMPLATES {
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(template = name, %error, "a console template does not compile");
            }
        }
        env
    })
}

/// Renders template `name` with `context`, plus the page frame's `operator`, `nav` and
/// `section` (the highlighted navigation entry) and `title`.
///
/// # Errors
/// [`minijinja::Error`] when the template fails (a bug: every template is tested).
pub(crate) fn render(
    name: &str,
    operator: Option<&str>,
    section: &str,
    title: &str,
    context: impl Serialize,
) -> Result<String, minijinja::Error> {
    let nav: Vec<Value> = NAV
        .iter()
        .map(|(key, label, href)| serde_json::json!({"key": key, "label": label, "href": href}))
        .collect();
    let mut merged = match serde_json::to_value(context) {
        Ok(Value::Object(map)) => map,
        Ok(_) => serde_json::Map::new(),
        Err(e) => {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::BadSerialization,
                e.to_string(),
            ))
        }
    };
    merged.insert("operator".into(), serde_json::json!(operator));
    merged.insert("nav".into(), Value::Array(nav));
    merged.insert("section".into(), serde_json::json!(section));
    merged.insert("title".into(), serde_json::json!(title));
    environment()
        .get_template(name)?
        .render(minijinja::Value::from(minijinja::value::Serde(
            Value::Object(merged),
        )))
}

/// `amount_minor` / `amountMinor` → "Amount minor".
pub(crate) fn label(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c == '_' || c == '-' {
            out.push(' ');
        } else if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else if i == 0 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A time for a page: RFC 3339, "2026-12-03 14:39:02 UTC", "2026-12-03 14:39 UTC", and how
/// far it is from `now` ("in 23 h 59 min", "5 min ago").
#[derive(Debug, Serialize)]
pub(crate) struct TimeView {
    iso: String,
    text: String,
    short: String,
    relative: Option<String>,
}

impl TimeView {
    /// `t`, relative to `now` when given.
    pub(crate) fn new(t: DateTime<Utc>, now: Option<DateTime<Utc>>) -> Self {
        Self {
            iso: t.to_rfc3339(),
            text: format_time(t),
            short: t.format("%Y-%m-%d %H:%M UTC").to_string(),
            relative: now.map(|now| relative_time(t, now)),
        }
    }
}

/// "2026-12-03 14:39:02 UTC".
pub(crate) fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A stored RFC 3339 time as "2026-12-03 14:39:02 UTC" (unchanged when it does not parse).
pub(crate) fn format_stored_time(at: &str) -> String {
    DateTime::parse_from_rfc3339(at)
        .map(|t| format_time(t.with_timezone(&Utc)))
        .unwrap_or_else(|_| at.to_string())
}

/// How far `t` is from `now`: "in 23 h 59 min", "5 min ago".
pub(crate) fn relative_time(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let delta = t.signed_duration_since(now);
    let minutes = delta.num_minutes().abs();
    let span = if minutes < 1 {
        "under a minute".to_string()
    } else if minutes < 60 {
        format!("{minutes} min")
    } else if minutes < 48 * 60 {
        format!("{} h {} min", minutes / 60, minutes % 60)
    } else {
        format!("{} days", minutes / (24 * 60))
    };
    if delta.num_seconds() >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// The symbol written before amounts of `code`, for the currencies that have a well-known
/// one; others are written "1,234.50 CHF".
fn symbol(code: &str) -> Option<&'static str> {
    Some(match code {
        "EUR" => "€",
        "USD" => "$",
        "GBP" => "£",
        "JPY" => "¥",
        "INR" => "₹",
        "KRW" => "₩",
        "BRL" => "R$",
        _ => return None,
    })
}

/// `minor` units of `currency` in the currency's own format: "€12.50", "¥49,800",
/// "1,234.500 KWD", "-$3.00". The decimals come from the currency's ISO 4217 exponent
/// ([`Currency::exponent`]); never goes through floating point. An unknown code gives
/// "1234 (minor units of XYZ)".
pub fn format_money(minor: i64, currency: &str) -> String {
    let Ok(code) = Currency::from_code(currency) else {
        return format!("{minor} (minor units of {currency})");
    };
    let exponent = u32::from(code.exponent());
    let per_major = 10u128.pow(exponent);
    let magnitude = u128::from(minor.unsigned_abs());
    let major = (magnitude / per_major).to_string();
    let mut grouped = String::with_capacity(major.len() + major.len() / 3);
    for (i, digit) in major.chars().enumerate() {
        if i > 0 && (major.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if exponent > 0 {
        let fraction = magnitude % per_major;
        grouped.push('.');
        grouped.push_str(&format!("{fraction:0width$}", width = exponent as usize));
    }
    let sign = if minor < 0 { "-" } else { "" };
    match symbol(code.code()) {
        Some(symbol) => format!("{sign}{symbol}{grouped}"),
        None => format!("{sign}{grouped} {}", code.code()),
    }
}

/// The amount a tool call's arguments (or a preview) name, formatted: `amount` as a decimal
/// string with `currency` (OPP, ifthenpay), `amount` as an integer of minor units with
/// `currency` (Stripe), or `amount_minor` / `amountMinor` with `currency`.
pub(crate) fn amount_of(args: &Value) -> Option<String> {
    let currency = args
        .get("currency")
        .and_then(Value::as_str)
        .map(str::to_ascii_uppercase);
    if let Some(minor) = ["amount_minor", "amountMinor"]
        .iter()
        .find_map(|k| args.get(*k).and_then(Value::as_i64))
    {
        return currency.map(|c| format_money(minor, &c));
    }
    match (args.get("amount")?, currency) {
        (Value::String(decimal), Some(c)) => Some(
            Currency::from_code(&c)
                .and_then(|cur| Money::parse(decimal, cur))
                .map(|m| format_money(m.minor_units(), &c))
                .unwrap_or_else(|_| format!("{decimal} {c}")),
        ),
        (Value::Number(n), Some(c)) => n
            .as_i64()
            .map(|minor| format_money(minor, &c))
            .or_else(|| Some(format!("{n} {c}"))),
        (Value::Object(inner), _) => amount_of(&Value::Object(inner.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_written_in_its_currencys_format() {
        assert_eq!(format_money(4_980_000, "JPY"), "¥4,980,000");
        assert_eq!(format_money(49_800, "JPY"), "¥49,800");
        assert_eq!(format_money(1250, "EUR"), "€12.50");
        assert_eq!(format_money(5, "EUR"), "€0.05");
        assert_eq!(format_money(-300, "USD"), "-$3.00");
        assert_eq!(format_money(1_234_500, "KWD"), "1,234.500 KWD");
        assert_eq!(format_money(123_456_789, "GBP"), "£1,234,567.89");
        assert_eq!(format_money(7, "XYZ"), "7 (minor units of XYZ)");
    }

    #[test]
    fn amounts_are_read_from_arguments() {
        let opp = serde_json::json!({"amount": "750.00", "currency": "EUR"});
        assert_eq!(amount_of(&opp).as_deref(), Some("€750.00"));
        let stripe = serde_json::json!({"amount": 49800, "currency": "jpy"});
        assert_eq!(amount_of(&stripe).as_deref(), Some("¥49,800"));
        let preview = serde_json::json!({"amountMinor": 1250, "currency": "EUR"});
        assert_eq!(amount_of(&preview).as_deref(), Some("€12.50"));
        assert_eq!(amount_of(&serde_json::json!({"tool": "x"})), None);
    }

    #[test]
    fn every_template_compiles_and_escapes() {
        for (name, _) in TEMPLATES {
            assert!(environment().get_template(name).is_ok(), "{name}");
        }
        let html = render(
            "message.html",
            Some("<b>op</b>"),
            "approvals",
            "<script>t</script>",
            serde_json::json!({"paragraphs": ["<script>alert(1)</script>"]}),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)"), "{html}");
        assert!(html.contains("&lt;b&gt;op"), "{html}");
    }

    #[test]
    fn nested_values_render_recursively() {
        let html = render(
            "approval.html",
            Some("alice"),
            "approvals",
            "t",
            serde_json::json!({
                "a": {"id": "apr_1", "status": "pending", "created": null, "expires": null},
                "what": [{"label": "Card", "kind": "value", "value": {"holderName": "<i>J</i>", "brands": ["VISA", true]}}],
                "history": null,
            }),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            html.contains("<dt>Holder name</dt><dd>&lt;i&gt;J&lt;&#x2f;i&gt;</dd>"),
            "{html}"
        );
        assert!(html.contains("<li>VISA</li><li>yes</li>"), "{html}");
    }
}
