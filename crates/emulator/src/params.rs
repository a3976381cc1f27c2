//! Request parameters: form bodies and query strings as OPP sends them (flat `name=value`
//! pairs with dotted and bracketed names such as `card.number` and
//! `customParameters[SANDBOX_TIMESTAMP]`), and the `parameterErrors` OPP answers with.

use serde::Serialize;

/// One entry of OPP's `result.parameterErrors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ParamError {
    /// The parameter name as sent, e.g. `amount` or `card.expiryMonth`.
    pub name: String,
    /// The value as sent (masked for `card.number` and `card.cvv`), `""` when missing.
    pub value: String,
    /// What is wrong and what to send instead.
    pub message: String,
}

impl ParamError {
    pub(crate) fn new(name: &str, value: &str, message: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            value: mask_sensitive(name, value),
            message: message.into(),
        }
    }

    pub(crate) fn missing(name: &str, expected: &str) -> Self {
        Self::new(name, "", format!("{name} is required: {expected}"))
    }
}

fn mask_sensitive(name: &str, value: &str) -> String {
    match name {
        "card.number" => crate::card::mask(value),
        "card.cvv" => "*".repeat(value.chars().count()),
        _ => value.to_string(),
    }
}

/// Decoded `name=value` pairs, in the order sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes `application/x-www-form-urlencoded` bytes (a form body or a query string).
    pub(crate) fn decode(raw: &[u8]) -> Result<Params, ParamError> {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw)
            .map(|pairs| Params { pairs })
            .map_err(|e| {
                ParamError::new(
                    "body",
                    "",
                    format!(
                        "the parameters are not valid application/x-www-form-urlencoded UTF-8 ({e}); \
                         send name=value pairs joined by '&', percent-encoded"
                    ),
                )
            })
    }

    /// The value of `name`; `None` when absent or empty (an empty value counts as not sent).
    /// A parameter sent more than once is an error.
    pub(crate) fn get(&self, name: &str) -> Result<Option<&str>, ParamError> {
        let mut found: Option<&str> = None;
        for (k, v) in &self.pairs {
            if k == name {
                if found.is_some() {
                    return Err(ParamError::new(
                        name,
                        v,
                        format!("{name} was sent more than once; send it once"),
                    ));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found.filter(|v| !v.is_empty()))
    }

    /// Every `customParameters[NAME]=VALUE` sent, as (NAME, VALUE), except the names in `skip`
    /// (the emulator's own `SANDBOX_TIMESTAMP`). OPP allows names of 3 to 64 letters, digits,
    /// `_` and `.`, and values of up to 2048 characters; others are parameter errors.
    pub(crate) fn custom_parameters(
        &self,
        skip: &[&str],
    ) -> Result<Vec<(String, String)>, ParamError> {
        let mut custom: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.pairs {
            let Some(name) = k
                .strip_prefix("customParameters[")
                .and_then(|rest| rest.strip_suffix(']'))
            else {
                continue;
            };
            if skip.contains(&k.as_str()) {
                continue;
            }
            let valid_name = (3..=64).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !valid_name || v.chars().count() > 2048 {
                return Err(ParamError::new(
                    k,
                    v,
                    "custom parameter names are 3 to 64 letters, digits, '_' or '.', values at most 2048 characters",
                ));
            }
            if custom.iter().any(|(n, _)| n == name) {
                return Err(ParamError::new(
                    k,
                    v,
                    format!("{k} was sent more than once; send it once"),
                ));
            }
            custom.push((name.to_string(), v.clone()));
        }
        Ok(custom)
    }
}

/// Collects parameter errors while reading fields, so one response lists all of them.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    pub errors: Vec<ParamError>,
}

impl Collector {
    /// `params.get(name)`, recording a duplicate as an error (and returning `None`).
    pub(crate) fn get<'p>(&mut self, params: &'p Params, name: &str) -> Option<&'p str> {
        match params.get(name) {
            Ok(v) => v,
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    /// Like [`Collector::get`] but a missing value is an error saying what is `expected`.
    pub(crate) fn require<'p>(
        &mut self,
        params: &'p Params,
        name: &str,
        expected: &str,
    ) -> Option<&'p str> {
        match params.get(name) {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                self.errors.push(ParamError::missing(name, expected));
                None
            }
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    pub(crate) fn push(&mut self, error: ParamError) {
        self.errors.push(error);
    }

    /// Records the error of a failed check and returns its value.
    pub(crate) fn check<T>(&mut self, result: Result<T, ParamError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_opp_names() {
        let p = Params::decode(
            b"entityId=e&card.number=4200000000000000&customParameters%5BSANDBOX_TIMESTAMP%5D=2026-01-01T00%3A00%3A00Z&date.from=2026-01-01+00%3A00%3A00&x=",
        )
        .unwrap();
        assert_eq!(p.get("card.number").unwrap(), Some("4200000000000000"));
        assert_eq!(
            p.get("customParameters[SANDBOX_TIMESTAMP]").unwrap(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(p.get("date.from").unwrap(), Some("2026-01-01 00:00:00"));
        assert_eq!(p.get("x").unwrap(), None);
        assert_eq!(p.get("missing").unwrap(), None);
    }

    #[test]
    fn duplicates_are_errors() {
        let p = Params::decode(b"amount=1.00&amount=2.00").unwrap();
        assert_eq!(p.get("amount").unwrap_err().name, "amount");
    }

    #[test]
    fn card_values_are_masked() {
        let e = ParamError::new("card.number", "4200000000000000x", "bad");
        assert_eq!(e.value, "*************000x");
        let e = ParamError::new("card.cvv", "12345", "bad");
        assert_eq!(e.value, "*****");
    }
}
