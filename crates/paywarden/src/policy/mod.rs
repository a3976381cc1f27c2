//! The policy engine: which tool calls run straight away, which need the agent to confirm,
//! which need a person, and which are refused.
//!
//! A policy is an ordered list of rules read from a TOML file (see `docs/policy.md`). Each rule
//! has a `when`, a [CEL](https://cel.dev) expression over the variables listed in
//! [`VARIABLES`], and an `action`, a [`Decision`]. For every tool call the pipeline builds a
//! [`PolicyInput`] and calls [`Policy::evaluate`]: the first rule whose `when` is true decides;
//! when none is, the file's `default` does.
//!
//! Every expression is compiled when the policy is loaded, so a syntax error or an unknown
//! variable stops start-up with the file and line ([`PolicyError::Rule`]). An expression that
//! fails while evaluating (a non-bool result, integer overflow) is a [`PolicyError::Eval`];
//! callers must treat it as a refusal (fail closed).
//!
//! Without a policy file the built-in one applies ([`Policy::builtin`], the embedded
//! `policy/default.toml`).

mod file;
#[cfg(test)]
mod tests;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use cel::common::types::{CelBool, CelInt, CelString};
use cel::common::value::Val;
use cel::{Context, Value};
use paywarden_domain::currency::Currency;
use serde::{Deserialize, Serialize};

pub use file::DEFAULT_RULE_NAME;

/// The text of the built-in policy, `crates/paywarden/policy/default.toml`, as embedded.
pub const BUILTIN_SOURCE: &str = include_str!("../../policy/default.toml");

/// The origin named in errors and explanations for the built-in policy.
pub const BUILTIN_ORIGIN: &str = "builtin:policy/default.toml";

/// The variables a `when` expression can use, in the order [`Explanation::bindings`] lists
/// them. Every one is always bound; absent inputs have neutral values:
///
/// | name | CEL type | value |
/// |---|---|---|
/// | `toolset` | string | the toolset, e.g. `"opp"` |
/// | `tool` | string | the tool, e.g. `"perform_refund"` |
/// | `entity` | string | the entity (merchant) id the call acts for |
/// | `moves_money` | bool | whether the tool moves money |
/// | `amount_minor` | int | the amount in minor units of `currency`; `0` when absent |
/// | `has_amount` | bool | whether an amount was given |
/// | `currency` | string | ISO 4217 code; `""` when absent |
/// | `exponent` | int | ISO 4217 minor-unit exponent of `currency` (EUR 2, JPY 0, KWD 3); `2` when absent or unknown |
/// | `amount_units` | int | `amount_minor` in whole major units, rounded down (`floor(amount_minor / 10^exponent)`) |
/// | `transaction_age_days` | int | age of the referenced transaction in days; `-1` when unknown |
/// | `moved_today_minor` | int | what this entity already moved today (UTC, same currency, executed), minor units |
/// | `moved_today_units` | int | `moved_today_minor` in whole major units, rounded down |
/// | `day_total_minor` | int | `moved_today_minor + amount_minor` (saturating) |
/// | `day_total_units` | int | `day_total_minor` in whole major units, rounded down |
/// | `client` | string | the MCP client's `clientInfo.name`; `""` when unknown |
pub const VARIABLES: &[&str] = &[
    "toolset",
    "tool",
    "entity",
    "moves_money",
    "amount_minor",
    "has_amount",
    "currency",
    "exponent",
    "amount_units",
    "transaction_age_days",
    "moved_today_minor",
    "moved_today_units",
    "day_total_minor",
    "day_total_units",
    "client",
];

/// What the policy decided for a tool call. Serialised in lower case (`"allow"`, ...).
///
/// Ordered from least to most restrictive: `Allow < Confirm < Human < Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Run the call.
    Allow,
    /// Run the call only after the agent confirms it (a confirmation token round trip).
    Confirm,
    /// Run the call only after a person (an operator) approves it.
    Human,
    /// Refuse the call.
    Deny,
}

impl Decision {
    /// Every decision, least restrictive first.
    pub const ALL: [Decision; 4] = [
        Decision::Allow,
        Decision::Confirm,
        Decision::Human,
        Decision::Deny,
    ];

    /// The lower-case name used in policy files and JSON: `allow`, `confirm`, `human`, `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Confirm => "confirm",
            Decision::Human => "human",
            Decision::Deny => "deny",
        }
    }

    /// Parses a lower-case name as written in a policy file; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Decision> {
        Decision::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the policy sees of one tool call. The pipeline fills it after validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInput {
    /// The toolset, e.g. `"opp"`.
    pub toolset: String,
    /// The tool, e.g. `"perform_refund"`.
    pub tool: String,
    /// The entity (merchant) id the call acts for.
    pub entity: String,
    /// Whether the tool moves money.
    pub moves_money: bool,
    /// The amount that will move, in minor units of `currency` (e.g. `1000` = 10.00 EUR).
    /// `None` when the call carries no amount.
    pub amount_minor: Option<i64>,
    /// ISO 4217 alphabetic code of the amount, e.g. `"EUR"`. `None` when absent.
    pub currency: Option<String>,
    /// Age in whole days of the transaction the call refers to (e.g. the payment refunded).
    /// `None` when unknown or not applicable.
    pub transaction_age_days: Option<i64>,
    /// What this entity already moved today (UTC), in the same currency, executed calls only,
    /// in minor units.
    pub moved_today_minor: i64,
    /// The MCP client's `clientInfo.name`, when it sent one.
    pub client: Option<String>,
}

/// The outcome of [`Policy::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// What to do.
    pub decision: Decision,
    /// The deciding rule's name, or [`DEFAULT_RULE_NAME`] (`"default"`) when no rule matched.
    pub rule: String,
    /// The rule's message, for the agent and for the person who approves.
    pub message: String,
    /// One line saying why, naming the file, line and expression, e.g.
    /// ``rule `reads-are-free` (builtin:policy/default.toml line 12) matched: !moves_money``.
    pub explanation: String,
}

/// One rule as loaded, in file order ([`Policy::rules`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// The rule's unique name.
    pub name: String,
    /// Its CEL expression, as written.
    pub when: String,
    /// What it decides when `when` is true.
    pub action: Decision,
    /// Its message (a generated one when the file gave none).
    pub message: String,
    /// 1-based line of the rule's `when` in the source file.
    pub line: usize,
    /// The toolsets the rule applies to; empty means every toolset.
    pub toolsets: Vec<String>,
}

impl RuleInfo {
    /// Whether the rule applies to calls of `toolset` (its `toolsets` list, if any).
    pub fn applies_to(&self, toolset: &str) -> bool {
        self.toolsets.is_empty() || self.toolsets.iter().any(|t| t == toolset)
    }
}

/// Why a policy could not be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file is not valid TOML, or its shape is wrong (unknown key, missing field, wrong
    /// type, unknown `default`). `line` is 1-based.
    #[error("{origin}:{line}: {reason}")]
    Toml {
        /// The file (path, or [`BUILTIN_ORIGIN`]).
        origin: String,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong, from the TOML parser or the validation.
        reason: String,
    },
    /// A rule is invalid: CEL syntax error or unknown variable in `when` (line of `when`),
    /// unknown `action` (line of `action`), empty, reserved or duplicate name (line of `name`),
    /// empty `when` or `toolsets`.
    #[error("{origin}:{line}: rule `{rule}`: {reason}")]
    Rule {
        /// The file (path, or [`BUILTIN_ORIGIN`]).
        origin: String,
        /// 1-based line of the offending key.
        line: usize,
        /// The rule's name.
        rule: String,
        /// What is wrong (for CEL, the parser's message with the position inside `when`).
        reason: String,
    },
    /// A rule's `when` failed while evaluating: it did not produce a bool, or CEL raised an
    /// error (overflow, division by zero, no such overload). Callers must refuse the call.
    #[error("rule `{rule}` failed to evaluate: {reason}")]
    Eval {
        /// The rule's name.
        rule: String,
        /// What went wrong.
        reason: String,
    },
    /// The policy file could not be read.
    #[error("cannot read policy file {origin}: {source}")]
    Io {
        /// The path as given.
        origin: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A loaded policy: ordered rules, each with its compiled expression, and a default.
///
/// Cheap to evaluate and safe to share between tasks (`Send + Sync`); wrap it in an `Arc`.
pub struct Policy {
    origin: String,
    default: Decision,
    rules: Vec<RuleInfo>,
    /// One per rule, same order.
    programs: Vec<cel::Program>,
    env: Arc<cel::Env>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("origin", &self.origin)
            .field("default", &self.default)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// The built-in policy ([`BUILTIN_SOURCE`], `policy/default.toml`).
    ///
    /// The embedded file is checked by the tests; should it ever fail to load anyway, this
    /// logs the error and returns a policy with no rules whose default is
    /// [`Decision::Deny`], so nothing runs unchecked.
    pub fn builtin() -> Policy {
        match Policy::from_toml(BUILTIN_SOURCE, BUILTIN_ORIGIN) {
            Ok(policy) => policy,
            Err(error) => {
                tracing::error!(%error, "the built-in policy failed to load; denying every call");
                Policy {
                    origin: format!("{BUILTIN_ORIGIN} (failed to load: {error})"),
                    default: Decision::Deny,
                    rules: Vec::new(),
                    programs: Vec::new(),
                    env: Arc::new(cel::Env::stdlib()),
                }
            }
        }
    }

    /// Parses, validates and compiles a policy from TOML text. `origin` names the source in
    /// errors and explanations (a path, or [`BUILTIN_ORIGIN`]).
    ///
    /// # Errors
    /// [`PolicyError::Toml`] for TOML syntax errors, unknown keys, missing or mistyped fields and
    /// an unknown `default`; [`PolicyError::Rule`] for an invalid rule (see its docs). Both carry
    /// the 1-based line.
    pub fn from_toml(source: &str, origin: &str) -> Result<Policy, PolicyError> {
        let env = Arc::new(cel::Env::stdlib());
        let parsed = file::parse(source, origin, &env)?;
        Ok(Policy {
            origin: origin.to_owned(),
            default: parsed.default,
            rules: parsed.rules,
            programs: parsed.programs,
            env,
        })
    }

    /// Reads and loads the policy file at `path` (its display form is the origin).
    ///
    /// # Errors
    /// [`PolicyError::Io`] when the file cannot be read (or is not UTF-8); otherwise as
    /// [`Policy::from_toml`].
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            origin: origin.clone(),
            source,
        })?;
        Policy::from_toml(&source, &origin)
    }

    /// Decides one tool call: the first rule (in file order, among those whose `toolsets`
    /// include `input.toolset`) whose `when` is true; otherwise the default.
    ///
    /// # Errors
    /// [`PolicyError::Eval`] naming the first rule whose `when` failed or gave a non-bool
    /// (rules after it are not tried). Callers must treat this as a refusal.
    pub fn evaluate(&self, input: &PolicyInput) -> Result<Verdict, PolicyError> {
        self.run(input, None)
    }

    /// Like [`Policy::evaluate`], but records every rule tried, for `paywarden policy check`.
    ///
    /// # Errors
    /// Currently none: an evaluation error is recorded in [`Explanation::steps`] and
    /// [`Explanation::outcome`] (which always equals what [`Policy::evaluate`] returns), so the
    /// report can show it. The `Result` leaves room for failures before any rule runs.
    pub fn explain(&self, input: &PolicyInput) -> Result<Explanation, PolicyError> {
        let mut steps = Vec::new();
        let outcome = self.run(input, Some(&mut steps));
        let not_reached = self
            .rules
            .iter()
            .skip(steps.len())
            .map(|r| r.name.clone())
            .collect();
        Ok(Explanation {
            origin: self.origin.clone(),
            bindings: Bindings::new(input).list(),
            steps,
            not_reached,
            default: self.default,
            outcome,
        })
    }

    /// The rules in evaluation (file) order.
    pub fn rules(&self) -> &[RuleInfo] {
        &self.rules
    }

    /// What applies when no rule matches (the file's `default`; `confirm` when it has none).
    pub fn default_decision(&self) -> Decision {
        self.default
    }

    /// Where the policy came from: the path given to [`Policy::load`], the origin given to
    /// [`Policy::from_toml`], or [`BUILTIN_ORIGIN`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn run(
        &self,
        input: &PolicyInput,
        mut steps: Option<&mut Vec<RuleStep>>,
    ) -> Result<Verdict, PolicyError> {
        let bindings = Bindings::new(input);
        let context = bindings.context(&self.env);
        for (rule, program) in self.rules.iter().zip(&self.programs) {
            let result = if rule.applies_to(&input.toolset) {
                execute(program, &context)
            } else {
                Ok(None)
            };
            if let Some(steps) = steps.as_deref_mut() {
                steps.push(RuleStep {
                    rule: rule.name.clone(),
                    line: rule.line,
                    when: rule.when.clone(),
                    action: rule.action,
                    result: match &result {
                        Ok(None) => StepResult::Skipped,
                        Ok(Some(true)) => StepResult::Matched,
                        Ok(Some(false)) => StepResult::NotMatched,
                        Err(reason) => StepResult::Error(reason.clone()),
                    },
                });
            }
            match result {
                Ok(Some(true)) => {
                    return Ok(Verdict {
                        decision: rule.action,
                        rule: rule.name.clone(),
                        message: rule.message.clone(),
                        explanation: format!(
                            "rule `{}` ({} line {}) matched: {}",
                            rule.name,
                            self.origin,
                            rule.line,
                            one_line(&rule.when)
                        ),
                    })
                }
                Ok(_) => {}
                Err(reason) => {
                    return Err(PolicyError::Eval {
                        rule: rule.name.clone(),
                        reason,
                    })
                }
            }
        }
        Ok(Verdict {
            decision: self.default,
            rule: DEFAULT_RULE_NAME.to_owned(),
            message: format!(
                "No policy rule matched this call; the policy default `{}` applies.",
                self.default
            ),
            explanation: format!(
                "no rule matched; default {} ({})",
                self.default, self.origin
            ),
        })
    }
}

/// Runs one compiled `when`: `Ok(Some(bool))`, or the reason it failed.
fn execute(program: &cel::Program, context: &Context<'_, '_>) -> Result<Option<bool>, String> {
    // The interpreter should never panic; if it does, the rule fails (and the call is refused)
    // instead of taking the task down.
    match catch_unwind(AssertUnwindSafe(|| program.execute(context))) {
        Ok(Ok(Value::Bool(b))) => Ok(Some(b)),
        Ok(Ok(other)) => Err(format!(
            "`when` must evaluate to a bool, got {} ({other:?})",
            other.type_of()
        )),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("the CEL interpreter panicked".to_owned()),
    }
}

/// Collapses whitespace runs (multi-line `when`s) for one-line explanations.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The variables bound for one evaluation, derived from a [`PolicyInput`].
struct Bindings<'a> {
    toolset: &'a str,
    tool: &'a str,
    entity: &'a str,
    moves_money: bool,
    amount_minor: i64,
    has_amount: bool,
    currency: &'a str,
    exponent: i64,
    amount_units: i64,
    transaction_age_days: i64,
    moved_today_minor: i64,
    moved_today_units: i64,
    day_total_minor: i64,
    day_total_units: i64,
    client: &'a str,
}

impl<'a> Bindings<'a> {
    fn new(input: &'a PolicyInput) -> Self {
        let currency = input.currency.as_deref().unwrap_or("");
        let known = Currency::from_code(currency).ok();
        let exponent = known.map_or(2, |c| i64::from(c.exponent()));
        let per_major = known.map_or(100, |c| c.minor_units_per_major()).max(1);
        let units = |minor: i64| minor.div_euclid(per_major);
        let amount_minor = input.amount_minor.unwrap_or(0);
        let day_total_minor = input.moved_today_minor.saturating_add(amount_minor);
        Bindings {
            toolset: &input.toolset,
            tool: &input.tool,
            entity: &input.entity,
            moves_money: input.moves_money,
            amount_minor,
            has_amount: input.amount_minor.is_some(),
            currency,
            exponent,
            amount_units: units(amount_minor),
            transaction_age_days: input.transaction_age_days.unwrap_or(-1),
            moved_today_minor: input.moved_today_minor,
            moved_today_units: units(input.moved_today_minor),
            day_total_minor,
            day_total_units: units(day_total_minor),
            client: input.client.as_deref().unwrap_or(""),
        }
    }

    fn context(&self, env: &Arc<cel::Env>) -> Context<'a, 'a> {
        let mut context = Context::with_env(Arc::clone(env));
        for (name, value) in self.values() {
            let val: Box<dyn Val + 'a> = match value {
                Bound::Str(s) => Box::new(CelString::from(s)),
                Bound::Int(i) => Box::new(CelInt::from(i)),
                Bound::Bool(b) => Box::new(CelBool::from(b)),
            };
            context.add_variable_as_val(name, val);
        }
        context
    }

    /// Every variable, in [`VARIABLES`] order.
    fn values(&self) -> [(&'static str, Bound<'a>); 15] {
        [
            ("toolset", Bound::Str(self.toolset)),
            ("tool", Bound::Str(self.tool)),
            ("entity", Bound::Str(self.entity)),
            ("moves_money", Bound::Bool(self.moves_money)),
            ("amount_minor", Bound::Int(self.amount_minor)),
            ("has_amount", Bound::Bool(self.has_amount)),
            ("currency", Bound::Str(self.currency)),
            ("exponent", Bound::Int(self.exponent)),
            ("amount_units", Bound::Int(self.amount_units)),
            (
                "transaction_age_days",
                Bound::Int(self.transaction_age_days),
            ),
            ("moved_today_minor", Bound::Int(self.moved_today_minor)),
            ("moved_today_units", Bound::Int(self.moved_today_units)),
            ("day_total_minor", Bound::Int(self.day_total_minor)),
            ("day_total_units", Bound::Int(self.day_total_units)),
            ("client", Bound::Str(self.client)),
        ]
    }

    fn list(&self) -> Vec<Binding> {
        self.values()
            .into_iter()
            .map(|(name, value)| Binding {
                name,
                value: match value {
                    Bound::Str(s) => format!("{s:?}"),
                    Bound::Int(i) => i.to_string(),
                    Bound::Bool(b) => b.to_string(),
                },
            })
            .collect()
    }
}

#[derive(Clone, Copy)]
enum Bound<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

/// One bound variable, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// The variable's name (one of [`VARIABLES`]).
    pub name: &'static str,
    /// Its value as a CEL literal: `"opp"`, `1000`, `true`.
    pub value: String,
}

/// What happened to one rule during [`Policy::explain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "result", content = "reason")]
pub enum StepResult {
    /// `when` was true: this rule decided.
    Matched,
    /// `when` was false.
    NotMatched,
    /// The rule's `toolsets` do not include the call's toolset; `when` was not evaluated.
    Skipped,
    /// `when` failed or did not give a bool (the reason); evaluation stopped here.
    Error(String),
}

/// One rule tried during [`Policy::explain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleStep {
    /// The rule's name.
    pub rule: String,
    /// 1-based line of its `when`.
    pub line: usize,
    /// Its expression.
    pub when: String,
    /// What it decides when it matches.
    pub action: Decision,
    /// What happened.
    pub result: StepResult,
}

/// A full account of one evaluation, from [`Policy::explain`]; render it with
/// [`render_check`].
#[derive(Debug)]
pub struct Explanation {
    /// Where the policy came from ([`Policy::origin`]).
    pub origin: String,
    /// Every variable as bound, in [`VARIABLES`] order.
    pub bindings: Vec<Binding>,
    /// The rules tried, in order, up to and including the deciding (or failing) one.
    pub steps: Vec<RuleStep>,
    /// Names of the rules after the last step, which were not evaluated.
    pub not_reached: Vec<String>,
    /// The policy's default decision.
    pub default: Decision,
    /// What [`Policy::evaluate`] returns for the same input.
    pub outcome: Result<Verdict, PolicyError>,
}

/// A human-readable report of an [`Explanation`], for `paywarden policy check`: the policy's
/// origin, the bound variables, each rule tried with its line and result, then the decision
/// with the deciding rule and its message (or "no rule matched; default `<x>`", or the
/// evaluation error). Ends with a newline.
pub fn render_check(explanation: &Explanation) -> String {
    use std::fmt::Write as _;

    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored deliberately.
    let _ = writeln!(out, "policy: {}", explanation.origin);
    let _ = writeln!(out, "\nvariables:");
    let width = explanation
        .bindings
        .iter()
        .map(|b| b.name.len())
        .max()
        .unwrap_or(0);
    for binding in &explanation.bindings {
        let _ = writeln!(out, "  {:<width$} = {}", binding.name, binding.value);
    }

    let _ = writeln!(out, "\nrules:");
    if explanation.steps.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for step in &explanation.steps {
        let result = match &step.result {
            StepResult::Matched => format!("true -> {}", step.action),
            StepResult::NotMatched => "false".to_owned(),
            StepResult::Skipped => "skipped (toolsets)".to_owned(),
            StepResult::Error(reason) => format!("error: {reason}"),
        };
        let _ = writeln!(
            out,
            "  line {:>4}  {}: {}  =>  {}",
            step.line,
            step.rule,
            one_line(&step.when),
            result
        );
    }
    if !explanation.not_reached.is_empty() {
        let _ = writeln!(
            out,
            "  not evaluated: {}",
            explanation.not_reached.join(", ")
        );
    }

    let _ = writeln!(out);
    match &explanation.outcome {
        Ok(verdict) if verdict.rule == DEFAULT_RULE_NAME => {
            let _ = writeln!(out, "no rule matched; default {}", verdict.decision);
            let _ = writeln!(out, "decision: {}", verdict.decision);
            let _ = writeln!(out, "message: {}", verdict.message);
        }
        Ok(verdict) => {
            let line = explanation
                .steps
                .last()
                .map_or_else(String::new, |s| format!(" (line {})", s.line));
            let _ = writeln!(out, "deciding rule: {}{line}", verdict.rule);
            let _ = writeln!(out, "decision: {}", verdict.decision);
            let _ = writeln!(out, "message: {}", verdict.message);
        }
        Err(error) => {
            let _ = writeln!(out, "evaluation failed: {error}");
            let _ = writeln!(out, "decision: none (the call would be refused)");
        }
    }
    out
}
