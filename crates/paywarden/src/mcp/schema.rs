//! Tool schemas as paywarden publishes them, on every endpoint (`/mcp`, `/agentic/v1/mcp`,
//! `/mcp/payments/` in both its modes, stdio): plain, portable JSON Schema. schemars writes
//! an `Option<T>` as a `type` array with `"null"` (`["string", "null"]`) and integers with
//! OpenAPI formats (`uint32`, `int64`); clients that map tool schemas onto a single-`type`
//! dialect (Gemini's function declarations, the MCP Inspector's `--strict` portability lint)
//! reject or warn about both. [`portable_tool`] rewrites a tool's schemas once, where the tool
//! routers are built:
//!
//! - **Inputs**: optional means absent, not null. A nullable parameter gets its plain type
//!   (`"string"`, `"integer"`, or its `$ref`); it stays out of `required`. To match, an explicit
//!   `null` argument is taken as absent ([`drop_null_arguments`]), so `{"limit": null}` is `{}`.
//! - **Outputs**: a value that can be `null` (the ifthenpay seed's `expiry_date` is
//!   "string|null") is written `{"anyOf": [{"type": "string"}, {"type": "null"}]}`: one plain
//!   type per branch, the data unchanged.
//! - **Formats**: a `format` JSON Schema 2020-12 does not define is dropped (the bounds schemars
//!   writes beside it, such as `"minimum": 0`, stay).

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool};
use serde_json::Value;

/// The `format` values JSON Schema 2020-12 defines (Validation, section 7.3).
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Keywords whose value maps names to subschemas.
const SUBSCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
/// Keywords whose value is an array of subschemas.
const SUBSCHEMA_ARRAYS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value is one subschema (`items` may also be an array of them).
const SUBSCHEMAS: &[&str] = &[
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "additionalItems",
    "unevaluatedItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
];
/// Keywords that describe rather than constrain: they stay on the outer schema when a
/// nullable output is split into `anyOf` branches.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$comment",
];

/// Which side of a tool a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `inputSchema`: what the tool accepts.
    Input,
    /// `outputSchema`: what `structuredContent` holds.
    Output,
}

/// The tool with portable input and output schemas (see the module documentation).
pub(crate) fn portable_tool(mut tool: Tool) -> Tool {
    tool.input_schema = Arc::new(portable(&tool.input_schema, Side::Input));
    tool.output_schema = tool
        .output_schema
        .map(|schema| Arc::new(portable(&schema, Side::Output)));
    tool
}

/// Removes every argument whose value is `null`: an explicit `null` means the argument is
/// absent, as the published input schemas (plain types, not required) say.
pub(crate) fn drop_null_arguments(arguments: &mut JsonObject) {
    arguments.retain(|_, value| !value.is_null());
}

fn portable(schema: &JsonObject, side: Side) -> JsonObject {
    let mut root = Value::Object(schema.clone());
    rewrite(&mut root, side);
    match root {
        Value::Object(map) => map,
        _ => schema.clone(),
    }
}

/// Rewrites `node` and every subschema below it.
fn rewrite(node: &mut Value, side: Side) {
    let Value::Object(map) = node else {
        return;
    };
    for keyword in SUBSCHEMA_MAPS {
        if let Some(Value::Object(children)) = map.get_mut(*keyword) {
            children.values_mut().for_each(|c| rewrite(c, side));
        }
    }
    for keyword in SUBSCHEMA_ARRAYS {
        if let Some(Value::Array(children)) = map.get_mut(*keyword) {
            children.iter_mut().for_each(|c| rewrite(c, side));
        }
    }
    for keyword in SUBSCHEMAS {
        match map.get_mut(*keyword) {
            Some(Value::Array(children)) => children.iter_mut().for_each(|c| rewrite(c, side)),
            Some(child) => rewrite(child, side),
            None => {}
        }
    }
    if map
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !STANDARD_FORMATS.contains(&f))
    {
        map.remove("format");
    }
    match side {
        Side::Input => drop_null_branches(map),
        Side::Output => split_nullable_type(map),
    }
    split_type_union(map);
}

fn is_null_type(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

/// Input side: a nullable schema becomes its non-null part.
fn drop_null_branches(map: &mut JsonObject) {
    if let Some(Value::Array(types)) = map.get_mut("type") {
        if types.len() > 1 && types.iter().any(|t| t == "null") {
            types.retain(|t| t != "null");
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
        }
        if let Some(Value::Array(types)) = map.get("type") {
            if let [single] = types.as_slice() {
                let single = single.clone();
                map.insert("type".into(), single);
            }
        }
    }
    // `Option<Struct>`: {"anyOf": [{"$ref": ...}, {"type": "null"}]}.
    for keyword in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = map.get_mut(keyword) else {
            continue;
        };
        if !branches.iter().any(is_null_type) {
            continue;
        }
        branches.retain(|b| !is_null_type(b));
        let only = match branches.as_slice() {
            [Value::Object(only)] => only.clone(),
            _ => continue,
        };
        if only.keys().all(|k| !map.contains_key(k)) {
            map.remove(keyword);
            map.extend(only);
        }
    }
}

/// Output side: `{"type": ["string", "null"], ...}` becomes `{"anyOf": [{"type": "string",
/// ...}, {"type": "null"}]}`, its annotations kept outside.
fn split_nullable_type(map: &mut JsonObject) {
    let Some(Value::Array(types)) = map.get("type") else {
        return;
    };
    if types.len() < 2 || !types.iter().any(|t| t == "null") {
        return;
    }
    let non_null: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
    let mut branch = JsonObject::new();
    for (key, value) in std::mem::take(map) {
        if ANNOTATIONS.contains(&key.as_str()) {
            map.insert(key, value);
        } else {
            branch.insert(key, value);
        }
    }
    branch.insert(
        "type".into(),
        match non_null.as_slice() {
            [single] => single.clone(),
            _ => Value::Array(non_null),
        },
    );
    if let Some(Value::Array(values)) = branch.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    split_type_union(&mut branch);
    map.insert(
        "anyOf".into(),
        Value::Array(vec![
            Value::Object(branch),
            serde_json::json!({"type": "null"}),
        ]),
    );
}

/// A `type` array of several plain types becomes `anyOf` one branch per type (the other
/// keywords stay beside it, where they apply to whichever type the value has).
fn split_type_union(map: &mut JsonObject) {
    let Some(Value::Array(types)) = map.get("type") else {
        return;
    };
    if types.len() < 2 || map.contains_key("anyOf") {
        return;
    }
    let branches = types
        .iter()
        .map(|t| serde_json::json!({ "type": t }))
        .collect();
    map.remove("type");
    map.insert("anyOf".into(), Value::Array(branches));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> JsonObject {
        match value {
            Value::Object(map) => map,
            _ => JsonObject::new(),
        }
    }

    #[test]
    fn inputs_get_plain_types_and_standard_formats() {
        let schema = object(json!({
            "type": "object",
            "properties": {
                "limit": {"type": ["integer", "null"], "format": "uint32", "minimum": 0},
                "when": {"type": ["string", "null"], "format": "date-time"},
                "kind": {"type": ["string", "null"], "enum": ["a", "b", null]},
                "card": {"anyOf": [{"$ref": "#/$defs/Card"}, {"type": "null"}], "description": "d"},
                "tags": {"type": "array", "items": {"type": ["string", "null"]}}
            },
            "$defs": {"Card": {"type": "object", "properties": {"n": {"type": ["integer", "null"], "format": "int64"}}}}
        }));
        let out = Value::Object(portable(&schema, Side::Input));
        assert_eq!(
            out["properties"]["limit"],
            json!({"type": "integer", "minimum": 0})
        );
        assert_eq!(
            out["properties"]["when"],
            json!({"type": "string", "format": "date-time"})
        );
        assert_eq!(
            out["properties"]["kind"],
            json!({"type": "string", "enum": ["a", "b"]})
        );
        assert_eq!(
            out["properties"]["card"],
            json!({"$ref": "#/$defs/Card", "description": "d"})
        );
        assert_eq!(
            out["properties"]["tags"]["items"],
            json!({"type": "string"})
        );
        assert_eq!(
            out["$defs"]["Card"]["properties"]["n"],
            json!({"type": "integer"})
        );
    }

    #[test]
    fn nullable_outputs_become_any_of_with_a_null_branch() {
        let schema = object(json!({
            "type": "object",
            "properties": {
                "expiry_date": {"type": ["string", "null"], "description": "YYYYMMDD or null"},
                "count": {"type": ["integer", "null"], "format": "uint64", "minimum": 0},
                "card": {"anyOf": [{"$ref": "#/$defs/Card"}, {"type": "null"}]}
            }
        }));
        let out = Value::Object(portable(&schema, Side::Output));
        assert_eq!(
            out["properties"]["expiry_date"],
            json!({"description": "YYYYMMDD or null", "anyOf": [{"type": "string"}, {"type": "null"}]})
        );
        assert_eq!(
            out["properties"]["count"],
            json!({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]})
        );
        assert_eq!(
            out["properties"]["card"],
            json!({"anyOf": [{"$ref": "#/$defs/Card"}, {"type": "null"}]})
        );
    }

    #[test]
    fn a_property_named_like_a_keyword_is_a_schema_not_a_keyword() {
        let schema = object(json!({
            "type": "object",
            "properties": {"format": {"type": "string"}, "type": {"type": ["string", "null"]}}
        }));
        let out = Value::Object(portable(&schema, Side::Input));
        assert_eq!(out["properties"]["format"], json!({"type": "string"}));
        assert_eq!(out["properties"]["type"], json!({"type": "string"}));
    }

    #[test]
    fn null_arguments_are_absent() {
        let mut arguments = object(json!({"a": null, "b": 1, "c": [null]}));
        drop_null_arguments(&mut arguments);
        assert_eq!(Value::Object(arguments), json!({"b": 1, "c": [null]}));
    }
}
