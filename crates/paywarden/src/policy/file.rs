//! The policy file: TOML in, validated rules with their source lines out.
//!
//! Every error names the file (`origin`) and the 1-based line it concerns. Lines come from the
//! byte spans the `toml` crate records ([`toml::Spanned`]), so they are exact even when several
//! rules have the same text.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use serde::Deserialize;
use toml::Spanned;

use super::{Decision, PolicyError, RuleInfo, VARIABLES};

/// The name reported in [`Verdict::rule`](super::Verdict::rule) when no rule matched; rules may
/// not use it.
pub const DEFAULT_RULE_NAME: &str = "default";

/// CEL type names that may appear as identifiers (`type(x) == int`) without being variables.
const TYPE_IDENTIFIERS: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "optional_type",
    "string",
    "type",
    "uint",
];

/// The file as written. Unknown keys are errors, at their line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    default: Option<Spanned<String>>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// One `[[rule]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    when: Spanned<String>,
    action: Spanned<String>,
    message: Option<Spanned<String>>,
    toolsets: Option<Spanned<Vec<String>>>,
}

/// A parsed and compiled policy file: the default, the rules in file order and one compiled
/// program per rule (same order).
pub(super) struct Parsed {
    pub(super) default: Decision,
    pub(super) rules: Vec<RuleInfo>,
    pub(super) programs: Vec<cel::Program>,
}

/// Parses, validates and compiles `source`; `origin` names it in errors; `env` compiles the
/// `when` expressions (the same environment must evaluate them).
pub(super) fn parse(
    source: &str,
    origin: &str,
    env: &Arc<cel::Env>,
) -> Result<Parsed, PolicyError> {
    let lines = LineIndex::new(source);
    let raw: RawFile = toml::from_str(source).map_err(|error| PolicyError::Toml {
        origin: origin.to_owned(),
        line: error.span().map_or(1, |span| lines.line(span.start)),
        reason: error.message().trim_end().to_owned(),
    })?;

    let default = match &raw.default {
        None => Decision::Confirm,
        Some(text) => Decision::from_name(text.get_ref()).ok_or_else(|| PolicyError::Toml {
            origin: origin.to_owned(),
            line: lines.line(text.span().start),
            reason: format!(
                "unknown default `{}`; expected one of allow, confirm, human, deny",
                text.get_ref()
            ),
        })?,
    };

    let mut rules = Vec::with_capacity(raw.rule.len());
    let mut programs = Vec::with_capacity(raw.rule.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for rule in raw.rule {
        let name = rule.name.get_ref().clone();
        let rule_error = |span: Range<usize>, reason: String| PolicyError::Rule {
            origin: origin.to_owned(),
            line: lines.line(span.start),
            rule: name.clone(),
            reason,
        };

        if name.trim().is_empty() {
            return Err(rule_error(
                rule.name.span(),
                "the rule name is empty".to_owned(),
            ));
        }
        if name != name.trim() || name.chars().any(char::is_control) {
            return Err(rule_error(
                rule.name.span(),
                "the rule name has surrounding whitespace or control characters".to_owned(),
            ));
        }
        if name == DEFAULT_RULE_NAME {
            return Err(rule_error(
                rule.name.span(),
                format!(
                    "`{DEFAULT_RULE_NAME}` is reserved for the policy default; rename the rule"
                ),
            ));
        }
        if let Some(first) = seen.get(&name) {
            return Err(rule_error(
                rule.name.span(),
                format!("duplicate rule name; first used on line {first}"),
            ));
        }
        let name_line = lines.line(rule.name.span().start);
        seen.insert(name.clone(), name_line);

        let action = Decision::from_name(rule.action.get_ref()).ok_or_else(|| {
            rule_error(
                rule.action.span(),
                format!(
                    "unknown action `{}`; expected one of allow, confirm, human, deny",
                    rule.action.get_ref()
                ),
            )
        })?;

        let toolsets = match rule.toolsets {
            None => Vec::new(),
            Some(list) => {
                let span = list.span();
                let list = list.into_inner();
                if list.is_empty() {
                    return Err(rule_error(
                        span,
                        "`toolsets` is empty, so the rule could never apply; remove the key to apply it to every toolset".to_owned(),
                    ));
                }
                if list.iter().any(|t| t.trim().is_empty()) {
                    return Err(rule_error(span, "`toolsets` has an empty name".to_owned()));
                }
                list
            }
        };

        let when_span = rule.when.span();
        let when = rule.when.into_inner();
        if when.trim().is_empty() {
            return Err(rule_error(when_span, "`when` is empty".to_owned()));
        }
        let program = env.compile(&when).map_err(|errors| {
            let reason = errors
                .errors
                .iter()
                .map(|e| {
                    let (line, column) = e.pos;
                    if line <= 1 {
                        format!("CEL syntax error at column {column} of `when`: {}", e.msg)
                    } else {
                        format!(
                            "CEL syntax error at line {line}, column {column} of `when`: {}",
                            e.msg
                        )
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            rule_error(when_span.clone(), reason)
        })?;
        let unknown = unknown_identifiers(&program.expression().expr);
        if !unknown.is_empty() {
            return Err(rule_error(
                when_span.clone(),
                format!(
                    "unknown variable{} {}; the variables are {}",
                    if unknown.len() == 1 { "" } else { "s" },
                    unknown
                        .iter()
                        .map(|u| format!("`{u}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    VARIABLES.join(", ")
                ),
            ));
        }

        let message = match rule.message {
            Some(message) => message.into_inner(),
            None => format!("Rule `{name}` decided {action}."),
        };
        rules.push(RuleInfo {
            line: lines.line(when_span.start),
            name,
            when,
            action,
            message,
            toolsets,
        });
        programs.push(program);
    }

    Ok(Parsed {
        default,
        rules,
        programs,
    })
}

/// Byte offset to 1-based line number.
struct LineIndex {
    /// Byte offsets at which each line after the first starts.
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(source: &str) -> Self {
        let starts = source
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        Self { starts }
    }

    /// The 1-based line holding byte `offset` (offsets past the end give the last line).
    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|start| *start <= offset) + 1
    }
}

/// Identifiers in `expr` that are neither policy variables, CEL type names, nor variables bound
/// by a comprehension (`exists`, `all`, `map`, `filter`) around them. Sorted, deduplicated.
fn unknown_identifiers(expr: &Expr) -> Vec<String> {
    let mut found = Vec::new();
    let mut bound = Vec::new();
    collect_unknown(expr, &mut bound, &mut found);
    found.sort();
    found.dedup();
    found
}

fn collect_unknown<'e>(expr: &'e Expr, bound: &mut Vec<&'e str>, found: &mut Vec<String>) {
    let mut walk =
        |e: &'e IdedExpr, bound: &mut Vec<&'e str>| collect_unknown(&e.expr, bound, found);
    match expr {
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Ident(name) => {
            let name = name.as_str();
            let known = name.starts_with('@')
                || VARIABLES.contains(&name)
                || TYPE_IDENTIFIERS.contains(&name)
                || bound.contains(&name);
            if !known {
                found.push(name.to_owned());
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                walk(target, bound);
            }
            for arg in &call.args {
                walk(arg, bound);
            }
        }
        Expr::Comprehension(comp) => {
            walk(&comp.iter_range, bound);
            walk(&comp.accu_init, bound);
            let depth = bound.len();
            bound.push(comp.iter_var.as_str());
            if let Some(second) = &comp.iter_var2 {
                bound.push(second.as_str());
            }
            bound.push(comp.accu_var.as_str());
            walk(&comp.loop_cond, bound);
            walk(&comp.loop_step, bound);
            walk(&comp.result, bound);
            bound.truncate(depth);
        }
        Expr::List(list) => {
            for element in &list.elements {
                walk(element, bound);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    EntryExpr::StructField(field) => walk(&field.value, bound),
                    EntryExpr::MapEntry(pair) => {
                        walk(&pair.key, bound);
                        walk(&pair.value, bound);
                    }
                }
            }
        }
        Expr::Select(select) => walk(&select.operand, bound),
        Expr::Struct(structure) => {
            for entry in &structure.entries {
                match &entry.expr {
                    EntryExpr::StructField(field) => walk(&field.value, bound),
                    EntryExpr::MapEntry(pair) => {
                        walk(&pair.key, bound);
                        walk(&pair.value, bound);
                    }
                }
            }
        }
    }
}
