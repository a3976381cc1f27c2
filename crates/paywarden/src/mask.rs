//! The one masking mechanism for everything paywarden says or records about a call: error
//! messages sent to clients and every audit row. Results are never masked (a caller asking for
//! its customer's e-mail gets it); what is masked is what paywarden echoes back in an error or
//! keeps on the record.
//!
//! - **Secrets** (tokens, card numbers, CVVs, API keys, every ifthenpay key, PinPay `accounts`,
//!   `sub_entity`) are replaced whole by `[redacted]` wherever their *name* says so, whatever
//!   the JSON type of the value (a key sent as a number or an object is still a key):
//!   [`secrets`].
//! - **Personal data** (CPF, e-mail, phone, a customer's name and address) is masked by name in
//!   arguments ([`arguments`]), and by shape in free text ([`text`]): e-mail addresses, phone
//!   numbers (`+` and 8-15 digits, MB WAY's `351#912345678`), CPFs (`529.982.247-25`, or 11
//!   digits in a row). Percent-encoded text (a resource URI such as
//!   `customer://sarah%40example.com`) is decoded first, so encoding hides nothing.
//! - **Parse errors** never echo a value: [`deserialize`] names the field (via
//!   `serde_path_to_error`) and drops the literal serde would quote (`invalid type: integer
//!   `12345``, `invalid value: string "..."`), so a key sent with the wrong type is named, not
//!   repeated.
//!
//! Where it is applied: [`audit_entry`] runs in [`crate::store::Store::append_audit`], so no
//! audit row escapes it whoever writes it (tools, resources, completions, approvals, the
//! approval page); error texts go through [`text`] where they are rendered for the client
//! ([`crate::mcp`]'s `render`, the seed endpoint in [`crate::ifthenpay_http`]). Validation
//! messages do not quote personal values or keys in the first place.
//!
//! The patterns are regular expressions (the `regex` crate); masked forms keep just enough to
//! tell values apart in an investigation (`s***@e***.com`, `***21`) and nothing to recover
//! them.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};
use serde_json::Value;

/// What a secret becomes.
pub const REDACTED: &str = "[redacted]";

/// Argument names (ASCII letters and digits, lower-cased) whose values are secrets: a name
/// *ending* in one of these is redacted whole.
const SECRET_NAMES: &[&str] = &[
    "token",
    "xtoken",
    "secret",
    "password",
    "apikey",
    "authorization",
    "cardnumber",
    "number",
    "cvv",
    "pan",
    // ifthenpay keys (mb_key, mbway_key, payshop_key, ccard_key, gateway_key, cofidis_key,
    // pix_key, bo_key, sub_entity, the anti-phishing key) and PinPay `accounts`, which lists keys.
    "mbkey",
    "mbwaykey",
    "payshopkey",
    "ccardkey",
    "gatewaykey",
    "cofidiskey",
    "pixkey",
    "bokey",
    "subentity",
    "phishingkey",
    "accounts",
    "cpf",
];

/// Argument names (normalised as for [`SECRET_NAMES`]) whose values are personal data.
const PERSONAL_NAMES: &[&str] = &[
    "email",
    "phone",
    "mobile",
    "msisdn",
    "customername",
    "customeraddress",
    "customerzipcode",
];

fn normalised(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

fn is_secret_name(name: &str) -> bool {
    let n = normalised(name);
    SECRET_NAMES.iter().any(|s| n.ends_with(s))
}

fn is_personal_name(name: &str) -> bool {
    let n = normalised(name);
    PERSONAL_NAMES.iter().any(|s| n.ends_with(s))
}

/// `value` with every secret replaced by `[redacted]` (by argument name, at any depth, any
/// JSON type). Personal data stays: this is what an operator sees of a request on the approval
/// page.
pub fn secrets(value: &Value) -> Value {
    walk(value, false)
}

/// `value` as the audit log keeps it: secrets redacted as in [`secrets`], personal data masked
/// (by name, and by shape in every other string, see [`text`]).
pub fn arguments(value: &Value) -> Value {
    walk(value, true)
}

fn walk(value: &Value, personal: bool) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let masked = if is_secret_name(k) {
                        Value::String(REDACTED.into())
                    } else if personal && is_personal_name(k) {
                        personal_value(k, v)
                    } else {
                        walk(v, personal)
                    };
                    (k.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| walk(v, personal)).collect()),
        Value::String(s) if personal => Value::String(text(s)),
        other => other.clone(),
    }
}

/// The masked form of a value whose name says it is personal data.
fn personal_value(name: &str, value: &Value) -> Value {
    let Value::String(s) = value else {
        return Value::String(REDACTED.into());
    };
    let masked = if normalised(name).ends_with("email") {
        email(s)
    } else if normalised(name).ends_with("phone")
        || normalised(name).ends_with("mobile")
        || normalised(name).ends_with("msisdn")
    {
        digits_tail(s)
    } else {
        REDACTED.to_string()
    };
    Value::String(masked)
}

/// `s***@e***.com`: the first character of the local part and of the domain, and the top-level
/// domain. Anything that is not an address becomes `[redacted]`.
pub fn email(address: &str) -> String {
    let Some((local, domain)) = address.trim().rsplit_once('@') else {
        return REDACTED.into();
    };
    let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
    let tld = domain
        .rsplit_once('.')
        .map(|(_, t)| format!(".{t}"))
        .unwrap_or_default();
    format!("{}***@{}***{tld}", first(local), first(domain))
}

/// `***21`: the last two digits (none when there are fewer than six).
fn digits_tail(value: &str) -> String {
    let digits: Vec<char> = value.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 {
        return "***".into();
    }
    format!(
        "***{}",
        digits[digits.len() - 2..].iter().collect::<String>()
    )
}

/// How a match is masked.
type Masker = fn(&str) -> String;

/// A shape of personal data in free text, and how it is masked.
struct Rule {
    pattern: Regex,
    mask: Masker,
}

/// The shapes [`text`] masks, in order: e-mail addresses, formatted CPFs, phone numbers (`+CC...`
/// or MB WAY's `CC#NUMBER`), then any other run of exactly 11 digits (a CPF, or a Brazilian
/// mobile number without its `+55`).
const RULE_PATTERNS: [(&str, Masker); 4] = [
    (
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*",
        email,
    ),
    (r"\d{3}\.\d{3}\.\d{3}-\d{2}", digits_tail),
    (r"\+\d[\d \-]{6,18}\d|\b\d{1,3}#\d{6,15}\b", digits_tail),
    (r"\b\d{11}\b", digits_tail),
];

/// [`RULE_PATTERNS`] compiled. Constant patterns: the unit tests check all compile.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    RULE_PATTERNS
        .into_iter()
        .filter_map(|(pattern, mask)| {
            Regex::new(pattern)
                .ok()
                .map(|pattern| Rule { pattern, mask })
        })
        .collect()
});

/// [`RULE_PATTERNS`] as one set: whether any of them matches anywhere, in one pass over the
/// text. Most text (dates, ids, amounts) matches none, and then [`text`] has nothing to mask.
static ANY_RULE: LazyLock<Option<RegexSet>> =
    LazyLock::new(|| RegexSet::new(RULE_PATTERNS.iter().map(|(pattern, _)| *pattern)).ok());

/// The ifthenpay seed's published example values, which paywarden's messages quote to show the
/// format expected: kept as they are.
const EXAMPLES: &[&str] = &[
    "351#912345678",
    "+351256245560",
    "+5585912345678",
    "74026594025",
];

/// Free text with personal data masked: e-mail addresses (`s***@e***.com`), phone numbers and
/// CPFs (`***21`), but not the seed's documented example values. Percent-encoded text is
/// decoded first.
pub fn text(input: &str) -> String {
    let out = if input.contains('%') {
        percent_encoding::percent_decode_str(input)
            .decode_utf8()
            .map(|d| d.into_owned())
            .unwrap_or_else(|_| input.to_string())
    } else {
        input.to_string()
    };
    // Text that no rule matches is what every rule would leave as it is. (Without the set,
    // which the unit tests check compiles, every rule runs.)
    if ANY_RULE.as_ref().is_some_and(|set| !set.is_match(&out)) {
        return out;
    }
    apply_rules(out)
}

/// Each of [`RULES`] in turn over `text`, its matches masked (the seed's examples kept).
fn apply_rules(mut out: String) -> String {
    for rule in RULES.iter() {
        out = rule
            .pattern
            .replace_all(&out, |c: &regex::Captures<'_>| {
                if EXAMPLES.contains(&&c[0]) {
                    c[0].to_string()
                } else {
                    (rule.mask)(&c[0])
                }
            })
            .into_owned();
    }
    out
}

static QUOTED_VALUE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"(invalid (?:type|value): [a-z0-9 ]+?) (?:`[^`]*`|"(?:[^"\\]|\\.)*"|'[^']*')"#)
        .ok()
});
static UNKNOWN_VARIANT: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"unknown variant `[^`]*`").ok());

/// Deserialises tool arguments into `T`. The error names the field that did not fit and what
/// was expected (`mb_key: invalid type: integer, expected a string`), never the value sent.
///
/// # Errors
/// The message, without any value from `value`.
pub fn deserialize<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let message = match QUOTED_VALUE.as_ref() {
            Some(re) => re.replace_all(&message, "$1").into_owned(),
            None => "invalid value".into(),
        };
        let message = match UNKNOWN_VARIANT.as_ref() {
            Some(re) => re.replace_all(&message, "unknown variant").into_owned(),
            None => message,
        };
        let message = text(&message);
        if path == "." {
            message
        } else {
            format!("{path}: {message}")
        }
    })
}

/// An audit entry as it may be stored: arguments through [`arguments`], every free-text field
/// through [`text`]; the tool name is also cut to 100 characters (an unknown tool's name is
/// whatever the client sent).
pub fn audit_entry(entry: &crate::store::AuditEntry) -> crate::store::AuditEntry {
    let opt = |v: &Option<String>| v.as_deref().map(text);
    crate::store::AuditEntry {
        entity_id: entry.entity_id.clone(),
        client_name: opt(&entry.client_name),
        toolset: entry.toolset.clone(),
        tool: text(&entry.tool).chars().take(100).collect(),
        arguments: arguments(&entry.arguments),
        outcome: entry.outcome.clone(),
        result_code: opt(&entry.result_code),
        provider_request_id: opt(&entry.provider_request_id),
        transaction_id: opt(&entry.transaction_id),
        message: opt(&entry.message),
        duration_ms: entry.duration_ms,
        sandbox: entry.sandbox,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_go_whole_whatever_their_type() {
        let v = json!({"mb_key": 987654321, "bo_key": {"k": "OBJ"}, "pix_key": ["ARR"],
                       "accounts": "CCARD|K", "X-Token": "t", "order_id": "1001"});
        let s = secrets(&v).to_string();
        for leaked in ["987654321", "OBJ", "ARR", "CCARD|K", "\"t\""] {
            assert!(!s.contains(leaked), "{leaked} in {s}");
        }
        assert!(s.contains("1001"));
    }

    #[test]
    fn personal_data_is_masked_by_name_and_by_shape() {
        let v = json!({
            "customer_email": "zelda@leak.example", "phone": "351#919876543",
            "customer_phone": "+5585987654321", "customer_name": "Zelda T",
            "customer_cpf": "52998224725", "email": {"nested": "x"},
            "description": "call +351 912 345 678 or mail ana@shop.pt, CPF 529.982.247-25 / 52998224725",
            "order_id": "912345678"
        });
        let masked = arguments(&v);
        let s = masked.to_string();
        for leaked in [
            "zelda",
            "leak",
            "919876543",
            "85987654321",
            "Zelda T",
            "52998224725",
            "nested",
            "912 345",
            "ana@",
            "529.982",
        ] {
            assert!(!s.contains(leaked), "{leaked} in {s}");
        }
        assert_eq!(masked["customer_email"], "z***@l***.example");
        assert_eq!(masked["phone"], "***43");
        assert_eq!(
            masked["order_id"], "912345678",
            "not personal by name or shape"
        );
        // The approval page's view keeps personal data, drops secrets.
        assert_eq!(secrets(&v)["customer_email"], "zelda@leak.example");
    }

    #[test]
    fn every_pattern_compiles() {
        assert_eq!(RULES.len(), 4);
        assert_eq!(ANY_RULE.as_ref().map(RegexSet::len), Some(4));
        assert!(QUOTED_VALUE.is_some() && UNKNOWN_VARIANT.is_some());
    }

    #[test]
    fn text_that_no_rule_matches_is_what_the_rules_would_give() {
        // Text with and without personal data, Unicode digits (`\d` matches them), the seed's
        // examples, and near misses of each rule: the shortcut agrees with running every rule.
        let samples = [
            "2026-01-01",
            "pi_3PqZ8x2eZvKYlo2C1a2b3c4d",
            "Revenue 2026-01-01 to 2026-12-31: 1,234.56 EUR over 13 orders",
            "",
            "refund of 10.00 EUR for order 1001",
            "zelda@leak.example asked",
            "CPF 123.456.789-09 and 12345678909",
            "123.456.789-09",
            "call +351 912 345 678 or 351#912345678",
            "+351256245560 and 74026594025 are the seed's examples",
            "\u{661}\u{662}\u{663}\u{664}\u{665}\u{666}\u{667}\u{668}\u{669}\u{660}\u{661}",
            "1234567890",
            "123456789012",
            "a@b",
            "@ alone and 123.456.789-0",
            "+12345 short",
        ];
        for sample in samples {
            assert_eq!(text(sample), apply_rules(sample.to_string()), "{sample:?}");
        }
        assert_eq!(text("2026-01-01"), "2026-01-01");
        assert_eq!(
            text("\u{661}\u{662}\u{663}\u{664}\u{665}\u{666}\u{667}\u{668}\u{669}\u{660}\u{661}"),
            "***",
            "eleven Unicode digits are masked"
        );
    }

    #[test]
    fn encoded_addresses_are_masked_too() {
        assert_eq!(
            text("customer://zelda.t%40leak-test.example"),
            "customer://z***@l***.example"
        );
        assert_eq!(text("100% sure"), "100% sure");
        assert_eq!(
            text("use 351#912345678, not 351#919876543"),
            "use 351#912345678, not ***43"
        );
    }

    #[test]
    fn parse_errors_name_the_field_never_the_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct P {
            mb_key: Option<String>,
            n: Option<u8>,
        }
        let e = deserialize::<P>(json!({"mb_key": 987654321})).unwrap_err();
        assert_eq!(e, "mb_key: invalid type: integer, expected a string");
        let e = deserialize::<P>(json!({"mb_key": {"k": "OBJKEY"}})).unwrap_err();
        assert!(e.starts_with("mb_key: invalid type: map"), "{e}");
        let e = deserialize::<P>(json!({"n": "SECRET-ish"})).unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
        let e = deserialize::<P>(json!({"n": 300})).unwrap_err();
        assert!(
            !e.contains("300") && e.starts_with("n: invalid value"),
            "{e}"
        );
    }
}
