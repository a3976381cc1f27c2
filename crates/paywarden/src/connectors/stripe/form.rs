//! Stripe's form encoding: `application/x-www-form-urlencoded` with bracket nesting for
//! dictionaries and arrays (`metadata[order_id]=42`, `line_items[0][price]=price_1`,
//! `line_items[0][quantity]=2`). The pairs are handed to reqwest's `.form()` / `.query()`,
//! which percent-encodes them (`[` becomes `%5B`; Stripe decodes it).

use std::collections::BTreeMap;

/// An ordered list of form pairs, built with Stripe's nesting rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

/// `root[a][b]...` for `path = [root, a, b, ...]`.
pub(crate) fn nested_key(path: &[&str]) -> String {
    let mut key = String::new();
    for (i, part) in path.iter().enumerate() {
        if i == 0 {
            key.push_str(part);
        } else {
            key.push('[');
            key.push_str(part);
            key.push(']');
        }
    }
    key
}

impl Form {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A plain `key=value` pair.
    pub(crate) fn push(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.pairs.push((key.to_string(), value.into()));
        self
    }

    /// A nested pair: `path[0][path[1]]...=value`.
    pub(crate) fn push_nested(&mut self, path: &[&str], value: impl Into<String>) -> &mut Self {
        self.pairs.push((nested_key(path), value.into()));
        self
    }

    /// A dictionary: `name[k]=v` per entry, in key order.
    pub(crate) fn push_map(&mut self, name: &str, map: &BTreeMap<String, String>) -> &mut Self {
        for (k, v) in map {
            self.push_nested(&[name, k], v.clone());
        }
        self
    }

    /// An array of dictionaries: `name[i][field]=value` per entry and field.
    pub(crate) fn push_array_of_maps(
        &mut self,
        name: &str,
        items: &[Vec<(&str, String)>],
    ) -> &mut Self {
        for (i, fields) in items.iter().enumerate() {
            let index = i.to_string();
            for (field, value) in fields {
                self.push_nested(&[name, &index, field], value.clone());
            }
        }
        self
    }

    /// The pairs, in insertion order.
    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The body as it goes on the wire (percent-encoded), for tests and diagnostics.
    #[cfg(test)]
    pub(crate) fn encode(&self) -> String {
        serde_urlencoded::to_string(&self.pairs).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_use_brackets() {
        assert_eq!(nested_key(&["amount"]), "amount");
        assert_eq!(nested_key(&["metadata", "order"]), "metadata[order]");
        assert_eq!(
            nested_key(&["line_items", "0", "price"]),
            "line_items[0][price]"
        );
    }

    #[test]
    fn metadata_and_line_items_encode_like_stripe() {
        let mut metadata = BTreeMap::new();
        metadata.insert("order_id".to_string(), "42".to_string());
        metadata.insert("a b".to_string(), "x&y=z".to_string());
        let mut form = Form::new();
        form.push("amount", "500")
            .push_map("metadata", &metadata)
            .push_array_of_maps(
                "line_items",
                &[
                    vec![("price", "price_1".into()), ("quantity", "2".into())],
                    vec![("price", "price_2".into()), ("quantity", "1".into())],
                ],
            );
        assert_eq!(
            form.pairs(),
            &[
                ("amount".to_string(), "500".to_string()),
                ("metadata[a b]".to_string(), "x&y=z".to_string()),
                ("metadata[order_id]".to_string(), "42".to_string()),
                ("line_items[0][price]".to_string(), "price_1".to_string()),
                ("line_items[0][quantity]".to_string(), "2".to_string()),
                ("line_items[1][price]".to_string(), "price_2".to_string()),
                ("line_items[1][quantity]".to_string(), "1".to_string()),
            ]
        );
        assert_eq!(
            form.encode(),
            "amount=500&metadata%5Ba+b%5D=x%26y%3Dz&metadata%5Border_id%5D=42\
             &line_items%5B0%5D%5Bprice%5D=price_1&line_items%5B0%5D%5Bquantity%5D=2\
             &line_items%5B1%5D%5Bprice%5D=price_2&line_items%5B1%5D%5Bquantity%5D=1"
        );
    }

    #[test]
    fn empty_form_is_empty() {
        assert_eq!(Form::new().encode(), "");
    }
}
