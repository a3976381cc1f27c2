"""Stripe's own OpenAPI specification as a validator for what crosses the wire.

The pinned, trimmed copy of Stripe's published spec lives in
`tests/fixtures/providers/stripe/openapi/` (its README says which commit and API version).
This module turns it into checks with `jsonschema`:

- `check_request(method, path, query, body)`: the operation exists, and every form-encoded
  parameter (Stripe's bracket nesting: `metadata[k]=v`, `line_items[0][price]=...`,
  `expand[]=...`, `created[gte]=...`) is one the operation documents, with a value of the
  documented type (integers, booleans, enums, nested objects); required parameters are present.
- `check_response(method, path, status, body)`: a 200 answer is the operation's documented
  object (required keys, types, enums, nullability, and no key the spec does not document);
  any other status is Stripe's documented `error` object.

Stripe's spec is OpenAPI 3.0: `nullable: true` is rewritten as `anyOf [..., null]` for JSON
Schema, and `$ref`s resolve inside the spec itself.

The spec copy is of API version 2023-08-16 (the newest whole spec we could pin; see the README)
and paywarden pins `Stripe-Version: 2024-06-20`. The keys objects carry at 2024-06-20 come from
Stripe's own example objects at that version (`fixtures3.paywarden.json`, same repository):
a key an example carries that the 2023 schema lacks is admitted (its type unchecked), and a key
the 2023 schema requires that the example no longer carries is not required. Nothing else of
the spec is relaxed.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jsonschema

SPEC_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "providers" / "stripe" / "openapi"
SPEC_PATH = SPEC_DIR / "spec3.paywarden.json"
EXAMPLES_PATH = SPEC_DIR / "fixtures3.paywarden.json"
FORM = "application/x-www-form-urlencoded"


@functools.cache
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


def _single_ref(schema: Any) -> str | None:
    """The one schema a property refers to (directly, or as the object branch of Stripe's
    expandable `anyOf [id, $ref]`), if any."""
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    names = [o["$ref"].rsplit("/", 1)[1] for o in schema.get("anyOf", []) if "$ref" in o]
    return names[0] if len(names) == 1 else None


@functools.cache
def keys_at_pinned_version() -> dict[str, frozenset[str]]:
    """Schema name -> the keys Stripe's example object of it carries at 2024-06-20."""
    schemas = spec()["components"]["schemas"]
    found: dict[str, set[str]] = {}

    def walk(value: dict[str, Any], name: str) -> None:
        found.setdefault(name, set()).update(value)
        properties = schemas[name].get("properties", {})
        for key, item in value.items():
            inner = _single_ref(properties.get(key))
            if isinstance(item, dict) and inner:
                walk(item, inner)

    examples = json.loads(EXAMPLES_PATH.read_text(encoding="utf-8"))["resources"]
    for resource, example in examples.items():
        walk(example, resource)
    return {name: frozenset(keys) for name, keys in found.items()}


def _at_pinned_version(schemas: dict[str, Any]) -> dict[str, Any]:
    out = dict(schemas)
    for name, keys in keys_at_pinned_version().items():
        schema = dict(out[name])
        properties = dict(schema.get("properties", {}))
        for key in sorted(keys - set(properties)):
            properties[key] = {"description": "added by 2024-06-20 (Stripe's example object); type unchecked"}
        schema["properties"] = properties
        if "required" in schema:
            schema["required"] = [k for k in schema["required"] if k in keys]
        out[name] = schema
    return out


def _normalise(node: Any, *, closed: bool) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: `nullable` becomes `anyOf [..., null]`; with `closed`,
    an object schema listing `properties` and saying nothing of others admits no other keys
    (Stripe's response objects document every key they carry)."""
    if isinstance(node, list):
        return [_normalise(item, closed=closed) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _normalise(v, closed=closed) for k, v in node.items() if not k.startswith("x-")}
    if closed and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        out = {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _root(closed: bool) -> dict[str, Any]:
    schemas = spec()["components"]["schemas"]
    if closed:  # answers: the objects as they are at the connector's API version
        schemas = _at_pinned_version(schemas)
    return {"components": {"schemas": _normalise(schemas, closed=closed)}}


def _validator(schema: dict[str, Any], *, closed: bool) -> jsonschema.Draft202012Validator:
    root = dict(_root(closed))
    root.update(_normalise(schema, closed=closed))
    return jsonschema.Draft202012Validator(root)


def _deref(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


# --- operations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    definition: dict[str, Any]


def operation(method: str, path: str) -> Operation:
    """The documented operation for `method path`; literal path segments win over templates
    (`/v1/customers/search` before `/v1/customers/{customer}`)."""
    method = method.lower()
    candidates = []
    for template, ops in spec()["paths"].items():
        if method not in ops:
            continue
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            candidates.append((template.count("{"), template))
    if not candidates:
        raise AssertionError(f"{method.upper()} {path}: not an operation of Stripe's spec (or of its trimmed copy)")
    template = min(candidates)[1]
    return Operation(method, template, spec()["paths"][template][method])


# --- form decoding ----------------------------------------------------------------------------

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def decode_form(encoded: str) -> dict[str, Any]:
    """Stripe's form encoding into nested values (strings at the leaves): `a[b]=1` -> {"a":
    {"b": "1"}}, `a[]=x&a[]=y` and `a[0]=x&a[1]=y` -> {"a": ["x", "y"]}."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True, strict_parsing=False):
        match = _KEY.match(key)
        if not match:
            raise AssertionError(f"form key {key!r} is not Stripe's bracket notation")
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":
                if not isinstance(node, list):
                    raise AssertionError(f"form key {key!r}: [] on a non-list")
                if last:
                    node.append(value)
                else:
                    node.append({})
                    node = node[-1]
                continue
            nxt_is_list = not last and parts[i + 1] == ""
            if isinstance(node, list):
                raise AssertionError(f"form key {key!r}: mixes [] and [name]")
            if last:
                if part in node:
                    raise AssertionError(f"form key {key!r} sent twice")
                node[part] = value
            else:
                node = node.setdefault(part, [] if nxt_is_list else {})
    return _indexed_to_lists(root)


def _indexed_to_lists(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _indexed_to_lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            indices = sorted(node, key=int)
            if [int(k) for k in indices] != list(range(len(indices))):
                raise AssertionError(f"list indices {indices} are not 0..n-1")
            return [node[k] for k in indices]
        return node
    if isinstance(node, list):
        return [_indexed_to_lists(v) for v in node]
    return node


def _coerce(value: Any, schema: dict[str, Any]) -> Any:
    """A form value (strings at the leaves) typed as `schema` documents it, where it can be."""
    schema = _deref(schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            for option in schema[key]:
                typed = _coerce(value, option)
                if not list(_validator(option, closed=False).iter_errors(typed)):
                    return typed
            return value
    kind = schema.get("type")
    if isinstance(value, str):
        if kind == "integer" and re.fullmatch(r"-?\d+", value):
            return int(value)
        if kind == "number" and re.fullmatch(r"-?\d+(\.\d+)?", value):
            return float(value)
        if kind == "boolean" and value in ("true", "false"):
            return value == "true"
        return value
    if isinstance(value, dict) and kind in (None, "object"):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            k: _coerce(v, props[k]) if k in props else _coerce(v, extra) if isinstance(extra, dict) else v
            for k, v in value.items()
        }
    if isinstance(value, list) and kind in (None, "array"):
        items = schema.get("items", {})
        return [_coerce(v, items) for v in value]
    return value


def _errors(validator: jsonschema.Draft202012Validator, value: Any) -> list[str]:
    found = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        while error.context:  # anyOf: the reason of the closest branch (not the null one)
            branches = [e for e in error.context if not (e.validator == "type" and e.validator_value == "null")]
            error = jsonschema.exceptions.best_match(branches or error.context)
        where = "".join(f"[{p}]" for p in error.absolute_path) or "(top level)"
        found.append(f"{where}: {error.message[:300]}")
    return found


def request_schema(op: Operation) -> dict[str, Any]:
    """The operation's parameters as one object schema: the form body's schema for POST, the
    `in: query` parameters for GET."""
    if op.method == "post":
        body = op.definition.get("requestBody", {}).get("content", {}).get(FORM)
        if body is None:
            raise AssertionError(f"POST {op.template} documents no form body")
        return body["schema"]
    params = [p for p in op.definition.get("parameters", []) if p["in"] == "query"]
    return {
        "type": "object",
        "properties": {p["name"]: p["schema"] for p in params},
        "required": [p["name"] for p in params if p.get("required")],
        "additionalProperties": False,
    }


def check_request(method: str, path: str, query: str, body: str) -> list[str]:
    """What in this request Stripe's spec does not admit (empty: nothing)."""
    op = operation(method, path)
    encoded = body if op.method == "post" else query
    if op.method == "post" and query:
        return [f"POST {path}: parameters in the query string ({query!r}); Stripe reads the form body"]
    schema = request_schema(op)
    typed = _coerce(decode_form(encoded), schema)
    return [f"{method} {op.template}: {e}" for e in _errors(_validator(schema, closed=False), typed)]


def response_schema(op: Operation, status: int) -> dict[str, Any]:
    responses = op.definition["responses"]
    documented = responses.get(str(status)) or (responses.get("default") if status != 200 else None)
    if documented is None:
        raise AssertionError(f"{op.method.upper()} {op.template}: status {status} is not documented")
    return documented["content"]["application/json"]["schema"]


def check_response(method: str, path: str, status: int, body: Any) -> list[str]:
    """What in this answer Stripe's spec does not admit (empty: nothing). A 200 must be the
    operation's object, with no key the spec does not document; any other status must be
    Stripe's `error` object."""
    op = operation(method, path)
    schema = response_schema(op, status)
    return [f"{status} {method} {op.template}: {e}" for e in _errors(_validator(schema, closed=True), body)]
