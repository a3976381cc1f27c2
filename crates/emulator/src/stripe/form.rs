//! Stripe's form encoding (`application/x-www-form-urlencoded`, for POST bodies and GET query
//! strings) with its bracket nesting: `metadata[order_id]=42`, `line_items[0][price]=price_...`,
//! `expand[]=latest_charge`.
//!
//! The pairs are decoded with `serde_urlencoded`; the few nested shapes the emulator supports
//! (metadata maps and `line_items` arrays) are read from the bracketed names here.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::error::ApiError;

/// Stripe's metadata limits: at most 50 keys, keys up to 40 characters, values up to 500.
const METADATA_MAX_KEYS: usize = 50;
const METADATA_MAX_KEY_CHARS: usize = 40;
const METADATA_MAX_VALUE_CHARS: usize = 500;

/// The decoded parameters of one request, in the order they were sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

/// A list's `created` filter (unix seconds; every bound optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CreatedRange {
    pub gt: Option<i64>,
    pub gte: Option<i64>,
    pub lt: Option<i64>,
    pub lte: Option<i64>,
}

/// One `line_items[i]` entry as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineItemParam {
    /// The `i` of `line_items[i]`.
    pub index: u32,
    pub price: Option<String>,
    pub quantity: Option<String>,
}

impl Form {
    /// Decodes a form-encoded body or query string.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Form, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).map_err(|e| {
            ApiError::invalid(
                None,
                format!(
                    "Invalid request: the parameters are not valid application/x-www-form-urlencoded ({e})"
                ),
                None,
            )
        })?;
        Ok(Form { pairs })
    }

    /// Refuses any parameter whose top-level name (before the first `[`) is not in `allowed`
    /// (Stripe's `parameter_unknown`). `expand` is always accepted (every operation documents
    /// it; see `super::expand`).
    pub(crate) fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        for (name, _) in &self.pairs {
            let root = name.split('[').next().unwrap_or(name);
            if root != "expand" && !allowed.contains(&root) {
                return Err(ApiError::unknown_param(name));
            }
        }
        Ok(())
    }

    /// Every decoded `(name, value)` pair, in the order sent.
    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The last value sent for `name`; an empty value counts as not sent (Stripe reads an empty
    /// string as "unset").
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Whether `name` was sent at all (even with an empty value, which unsets a field on an
    /// update).
    pub(crate) fn sent(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    /// A filter parameter that cannot be unset: `None` when not sent, Stripe's 400
    /// `parameter_invalid_empty` when sent empty (`email=`), so an empty filter can never widen
    /// a list to every object.
    pub(crate) fn filter(&self, name: &str) -> Result<Option<&str>, ApiError> {
        if self.get(name).is_none() && self.sent(name) {
            return Err(ApiError::invalid(
                Some("parameter_invalid_empty"),
                format!(
                    "You passed an empty string for '{name}'. We assume empty values are an attempt to unset a parameter; however '{name}' cannot be unset. You should remove '{name}' from your request or supply a non-empty value."
                ),
                Some(name),
            ));
        }
        Ok(self.get(name))
    }

    /// A required parameter.
    pub(crate) fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::missing(name))
    }

    /// An optional free-text parameter of at most `max` characters.
    pub(crate) fn text(&self, name: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.chars().count() > max => Err(ApiError::invalid(
                None,
                format!("Invalid string: {name} must be at most {max} characters long."),
                Some(name),
            )),
            Some(v) => Ok(Some(v.to_string())),
        }
    }

    /// An optional integer parameter.
    pub(crate) fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name).map(|v| parse_integer(name, v)).transpose()
    }

    /// An optional boolean parameter (`true` / `false`).
    pub(crate) fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::invalid(
                None,
                format!("Invalid boolean: {other}"),
                Some(name),
            )),
        }
    }

    /// Stripe `metadata`: every `metadata[KEY]=VALUE` pair (an empty value unsets the key).
    /// Limits as Stripe's: 50 keys, 40-character keys, 500-character values.
    pub(crate) fn metadata(&self) -> Result<Map<String, Value>, ApiError> {
        self.metadata_at("metadata")
    }

    /// A metadata map sent under `root` (`metadata`, or `product_data[metadata]` for the
    /// product a price creates inline): every `root[KEY]=VALUE` pair.
    pub(crate) fn metadata_at(&self, root: &str) -> Result<Map<String, Value>, ApiError> {
        let mut map = BTreeMap::new();
        let prefix = format!("{root}[");
        for (name, value) in &self.pairs {
            if name == root {
                if value.is_empty() {
                    continue;
                }
                return Err(ApiError::invalid(
                    None,
                    format!("Invalid object: {root} must be sent as {root}[KEY]=VALUE pairs"),
                    Some(root),
                ));
            }
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let key = rest.strip_suffix(']').unwrap_or("");
            if key.is_empty() || key.contains(['[', ']']) {
                return Err(ApiError::invalid(
                    None,
                    "Invalid metadata: keys must be non-empty strings without brackets, sent as metadata[KEY]=VALUE",
                    Some(name),
                ));
            }
            if key.chars().count() > METADATA_MAX_KEY_CHARS {
                return Err(ApiError::invalid(
                    None,
                    format!(
                        "Metadata keys must be at most {METADATA_MAX_KEY_CHARS} characters long."
                    ),
                    Some(name),
                ));
            }
            if value.chars().count() > METADATA_MAX_VALUE_CHARS {
                return Err(ApiError::invalid(
                    None,
                    format!(
                        "Metadata values must be at most {METADATA_MAX_VALUE_CHARS} characters long."
                    ),
                    Some(name),
                ));
            }
            if value.is_empty() {
                map.remove(key);
            } else {
                map.insert(key.to_string(), json!(value));
            }
        }
        if map.len() > METADATA_MAX_KEYS {
            return Err(ApiError::invalid(
                None,
                format!("Invalid metadata: at most {METADATA_MAX_KEYS} keys are allowed."),
                Some(root),
            ));
        }
        Ok(map.into_iter().collect())
    }

    /// The `expand` paths (`expand[]=a`, `expand[0]=a`, as Stripe's SDKs send them), in order.
    pub(crate) fn expand(&self) -> Result<Vec<&str>, ApiError> {
        let mut paths = Vec::new();
        for (name, value) in &self.pairs {
            let Some(rest) = name.strip_prefix("expand") else {
                continue;
            };
            if !rest.is_empty() && !rest.starts_with('[') {
                continue; // another parameter (`expandable=...`): `only` judges it
            }
            let index = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
            match index {
                Some(i) if i.is_empty() || i.bytes().all(|b| b.is_ascii_digit()) => {}
                _ => {
                    return Err(ApiError::invalid(
                        None,
                        "Invalid array: send expand as expand[]=field or expand[0]=field",
                        Some(name),
                    ))
                }
            }
            if !value.is_empty() {
                paths.push(value.as_str());
            }
        }
        Ok(paths)
    }

    /// The `created` filter of a list: `created=<unix seconds>` (exactly), or any of
    /// `created[gt]`, `created[gte]`, `created[lt]`, `created[lte]` (Stripe's
    /// `range_query_specs`); other `created[...]` keys are `parameter_unknown`.
    pub(crate) fn created_range(&self) -> Result<CreatedRange, ApiError> {
        let mut range = CreatedRange::default();
        if let Some(exact) = self.integer("created")? {
            range.gte = Some(exact);
            range.lte = Some(exact);
        }
        for (name, _) in &self.pairs {
            let Some(op) = name
                .strip_prefix("created[")
                .and_then(|r| r.strip_suffix(']'))
            else {
                continue;
            };
            let value = self.integer(name)?;
            match op {
                "gt" => range.gt = value,
                "gte" => range.gte = value,
                "lt" => range.lt = value,
                "lte" => range.lte = value,
                _ => return Err(ApiError::unknown_param(name)),
            }
        }
        Ok(range)
    }

    /// Every `line_items[i][price]` / `line_items[i][quantity]`, ordered by `i`. Any other
    /// field of a line item is `parameter_unknown`.
    pub(crate) fn line_items(&self) -> Result<Vec<LineItemParam>, ApiError> {
        let mut items: BTreeMap<u32, LineItemParam> = BTreeMap::new();
        for (name, value) in &self.pairs {
            let Some(rest) = name.strip_prefix("line_items") else {
                continue;
            };
            let parsed = rest
                .strip_prefix('[')
                .and_then(|r| r.split_once("]["))
                .and_then(|(index, field)| {
                    Some((index.parse::<u32>().ok()?, field.strip_suffix(']')?))
                });
            let Some((index, field)) = parsed else {
                return Err(ApiError::invalid(
                    None,
                    "Invalid array: send line items as line_items[0][price]=...&line_items[0][quantity]=...",
                    Some(name),
                ));
            };
            let item = items.entry(index).or_insert_with(|| LineItemParam {
                index,
                price: None,
                quantity: None,
            });
            let value = Some(value.clone()).filter(|v| !v.is_empty());
            match field {
                "price" => item.price = value,
                "quantity" => item.quantity = value,
                _ => return Err(ApiError::unknown_param(name)),
            }
        }
        Ok(items.into_values().collect())
    }

    /// A canonical rendering of the request (method, path and sorted parameters), compared on
    /// an idempotent replay: the same key with other parameters is an `idempotency_error`.
    pub(crate) fn fingerprint(&self, method: &str, path: &str) -> String {
        let mut pairs = self.pairs.clone();
        pairs.sort();
        json!([method, path, pairs]).to_string()
    }
}

/// Stripe's integer parameter: optional sign and decimal digits only.
pub(crate) fn parse_integer(name: &str, value: &str) -> Result<i64, ApiError> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid_integer(
            name,
            format!("Invalid integer: {value}"),
        ));
    }
    value
        .parse::<i64>()
        .map_err(|_| ApiError::invalid_integer(name, format!("Invalid integer: {value}")))
}

/// `value >= min`, else Stripe's "This value must be greater than or equal to {min}."
pub(crate) fn at_least(name: &str, value: i64, min: i64) -> Result<i64, ApiError> {
    if value < min {
        return Err(ApiError::invalid_integer(
            name,
            format!("This value must be greater than or equal to {min}."),
        ));
    }
    Ok(value)
}

/// `value <= max`, else Stripe's "This value must be less than or equal to {max}."
pub(crate) fn at_most(name: &str, value: i64, max: i64) -> Result<i64, ApiError> {
    if value > max {
        return Err(ApiError::invalid_integer(
            name,
            format!("This value must be less than or equal to {max}."),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets() {
        let form = Form::decode(
            b"metadata%5Border_id%5D=42&metadata[x]=&line_items[1][price]=price_b&line_items[0][price]=price_a&line_items[0][quantity]=2&expand[]=latest_charge",
        )
        .unwrap();
        let metadata = form.metadata().unwrap();
        assert_eq!(metadata.get("order_id"), Some(&json!("42")));
        assert!(!metadata.contains_key("x"));
        let items = form.line_items().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].price.as_deref(), Some("price_a"));
        assert_eq!(items[0].quantity.as_deref(), Some("2"));
        assert_eq!(items[1].index, 1);
        assert!(form.only(&["metadata", "line_items"]).is_ok());
        assert!(form.only(&["metadata"]).is_err());
    }

    #[test]
    fn expand_and_created() {
        let form = Form::decode(
            b"expand[]=latest_charge&expand%5B1%5D=customer&created[gte]=10&created[lt]=20",
        )
        .unwrap();
        assert_eq!(form.expand().unwrap(), vec!["latest_charge", "customer"]);
        let range = form.created_range().unwrap();
        assert_eq!(
            (range.gte, range.lt, range.gt, range.lte),
            (Some(10), Some(20), None, None)
        );
        let exact = Form::decode(b"created=7").unwrap().created_range().unwrap();
        assert_eq!((exact.gte, exact.lte), (Some(7), Some(7)));
        assert!(Form::decode(b"created[eq]=1")
            .unwrap()
            .created_range()
            .is_err());
        assert!(Form::decode(b"created[gt]=x")
            .unwrap()
            .created_range()
            .is_err());
        assert!(Form::decode(b"expand[a]=x").unwrap().expand().is_err());
        assert!(Form::decode(b"expandable=x")
            .unwrap()
            .expand()
            .unwrap()
            .is_empty());
        let nested = Form::decode(b"product_data[metadata][k]=v&metadata[o]=1").unwrap();
        assert_eq!(
            nested.metadata_at("product_data[metadata]").unwrap().len(),
            1
        );
        assert_eq!(nested.metadata().unwrap().len(), 1);
    }

    #[test]
    fn integers() {
        assert_eq!(parse_integer("a", "-12").unwrap(), -12);
        assert!(parse_integer("a", "1.5").is_err());
        assert!(parse_integer("a", "").is_err());
        assert!(parse_integer("a", "99999999999999999999").is_err());
    }

    #[test]
    fn fingerprint_ignores_order() {
        let a = Form::decode(b"a=1&b=2").unwrap();
        let b = Form::decode(b"b=2&a=1").unwrap();
        assert_eq!(a.fingerprint("POST", "/x"), b.fingerprint("POST", "/x"));
        assert_ne!(a.fingerprint("POST", "/x"), b.fingerprint("POST", "/y"));
    }
}
