//! Canonical JSON: object keys sorted (recursively), no insignificant white space. The same
//! value always gives the same bytes, whatever order its keys arrived in, so hashes over it
//! (idempotency request hashes, the audit chain) are stable.

/// Serialises `value` canonically: keys sorted, strings and numbers exactly as
/// `serde_json`'s compact form writes them.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = Vec::new();
    write(value, &mut out);
    // Only `serde_json`'s output and ASCII punctuation were written: valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Writes `value` into `out`, as [`canonical_json`] gives it. Keys and scalars go through
/// `serde_json`'s own writer, with no string allocated per key or scalar (the audit chain
/// hashes every row this way).
pub(crate) fn write(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                scalar(key.as_str(), out);
                out.push(b':');
                write(v, out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        other => scalar(other, out),
    }
}

/// A string, number, boolean or null as `serde_json` writes it. Writing these into a `Vec`
/// cannot fail; were it to, the error is logged and the hash over the bytes simply differs.
pub(crate) fn scalar<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    if let Err(e) = serde_json::to_writer(&mut *out, value) {
        tracing::error!(error = %e, "could not write a JSON scalar");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_does_not_matter() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"z":1,"y":2}],"c":"x"}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"c":"x","d":[1,{"y":2,"z":1}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"x","d":[1,{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn strings_and_numbers_are_written_as_serde_json_writes_them() {
        let value = serde_json::json!({
            "quote\"and\\slash": "tab\tnew\nline\u{1}control",
            "unicode": "\u{e9}\u{1F600}\u{2028}",
            "numbers": [0, -1, 1.5, 1e300, u64::MAX, i64::MIN, 0.1],
            "flags": [true, false, null],
            "": {}
        });
        // serde_json's own map is ordered by key unless its preserve_order feature is on.
        let expected = serde_json::to_string(&value).unwrap();
        assert_eq!(canonical_json(&value), expected);
        assert!(
            expected.contains(r#""quote\"and\\slash":"tab\tnew\nline\u0001control""#),
            "{expected}"
        );
    }
}
