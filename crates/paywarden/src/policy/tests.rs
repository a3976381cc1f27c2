use super::*;
use proptest::prelude::*;

fn input(tool: &str, moves_money: bool) -> PolicyInput {
    PolicyInput {
        toolset: "opp".into(),
        tool: tool.into(),
        entity: "ent_1".into(),
        moves_money,
        ..PolicyInput::default()
    }
}

fn money(tool: &str, amount_minor: i64, currency: &str) -> PolicyInput {
    PolicyInput {
        amount_minor: Some(amount_minor),
        currency: Some(currency.into()),
        ..input(tool, true)
    }
}

fn builtin() -> Policy {
    match Policy::from_toml(BUILTIN_SOURCE, BUILTIN_ORIGIN) {
        Ok(p) => p,
        Err(e) => panic!("the built-in policy must load: {e}"),
    }
}

fn load_err(source: &str) -> PolicyError {
    match Policy::from_toml(source, "test.toml") {
        Ok(p) => panic!("expected an error, loaded {p:?}"),
        Err(e) => e,
    }
}

#[test]
fn builtin_loads_and_is_what_builtin_returns() {
    let policy = Policy::builtin();
    assert_eq!(policy.origin(), BUILTIN_ORIGIN);
    assert_eq!(policy.rules(), builtin().rules());
    assert_eq!(policy.default_decision(), Decision::Confirm);
    let names: Vec<&str> = policy.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "reads-are-free",
            "ifthenpay-payment-requests",
            "payment-links",
            "chargebacks-need-a-person",
            "large-amounts-need-a-person",
            "daily-total-needs-a-person",
            "old-refunds-need-a-person",
            "money-moves-with-confirmation",
        ]
    );
}

#[test]
fn policy_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
}

#[test]
fn default_policy_decides_as_documented() {
    let policy = builtin();
    let refund = |amount: i64, currency: &str| money("perform_refund", amount, currency);
    let cases: Vec<(&str, PolicyInput, Decision, &str)> = vec![
        (
            "a read",
            input("search_transactions", false),
            Decision::Allow,
            "reads-are-free",
        ),
        (
            "a read with an amount filter",
            PolicyInput {
                amount_minor: Some(10_000_000),
                currency: Some("EUR".into()),
                ..input("search_transactions", false)
            },
            Decision::Allow,
            "reads-are-free",
        ),
        (
            "a 5,000.00 EUR Multibanco reference (collects money, pays nothing out)",
            PolicyInput {
                toolset: "ifthenpay".into(),
                ..money("multibanco_create_reference", 500_000, "EUR")
            },
            Decision::Allow,
            "ifthenpay-payment-requests",
        ),
        (
            "an OPP tool named like an ifthenpay one is not covered",
            money("multibanco_create_reference", 1_000, "EUR"),
            Decision::Confirm,
            "money-moves-with-confirmation",
        ),
        (
            "10.00 EUR refund",
            refund(1_000, "EUR"),
            Decision::Confirm,
            "money-moves-with-confirmation",
        ),
        (
            "500.00 EUR refund",
            refund(50_000, "EUR"),
            Decision::Human,
            "large-amounts-need-a-person",
        ),
        (
            "499.99 EUR refund",
            refund(49_999, "EUR"),
            Decision::Confirm,
            "money-moves-with-confirmation",
        ),
        (
            "JPY 50,000 capture",
            money("perform_capture", 50_000, "JPY"),
            Decision::Human,
            "large-amounts-need-a-person",
        ),
        (
            "JPY 49,999 capture",
            money("perform_capture", 49_999, "JPY"),
            Decision::Confirm,
            "money-moves-with-confirmation",
        ),
        (
            "KWD 500.000 refund",
            refund(500_000, "KWD"),
            Decision::Human,
            "large-amounts-need-a-person",
        ),
        (
            "KWD 499.999 refund",
            refund(499_999, "KWD"),
            Decision::Confirm,
            "money-moves-with-confirmation",
        ),
        (
            "chargeback of 1.00",
            money("perform_chargeback", 100, "EUR"),
            Decision::Human,
            "chargebacks-need-a-person",
        ),
        (
            "chargeback reversal",
            input("perform_chargeback_reversal", true),
            Decision::Human,
            "chargebacks-need-a-person",
        ),
        (
            "250.00 EUR refund after 1,800.00 today",
            PolicyInput {
                moved_today_minor: 180_000,
                ..refund(25_000, "EUR")
            },
            Decision::Human,
            "daily-total-needs-a-person",
        ),
        (
            "1,999.50 + 0.50 reaches 2,000.00 exactly",
            PolicyInput {
                moved_today_minor: 199_950,
                ..refund(50, "EUR")
            },
            Decision::Human,
            "daily-total-needs-a-person",
        ),
        (
            "100.00 EUR refund after 1,800.00 today",
            PolicyInput {
                moved_today_minor: 180_000,
                ..refund(10_000, "EUR")
            },
            Decision::Confirm,
            "money-moves-with-confirmation",
        ),
        (
            "JPY 10,000 after JPY 195,000 today",
            PolicyInput {
                moved_today_minor: 195_000,
                ..money("perform_capture", 10_000, "JPY")
            },
            Decision::Human,
            "daily-total-needs-a-person",
        ),
        (
            "70-day-old 10.00 refund",
            PolicyInput {
                transaction_age_days: Some(70),
                ..refund(1_000, "EUR")
            },
            Decision::Human,
            "old-refunds-need-a-person",
        ),
        (
            "60-day-old 10.00 refund",
            PolicyInput {
                transaction_age_days: Some(60),
                ..refund(1_000, "EUR")
            },
            Decision::Confirm,
            "money-moves-with-confirmation",
        ),
        (
            "70-day-old capture (not a refund)",
            PolicyInput {
                transaction_age_days: Some(70),
                ..money("perform_capture", 1_000, "EUR")
            },
            Decision::Confirm,
            "money-moves-with-confirmation",
        ),
        (
            "reversal without amount",
            input("perform_reversal", true),
            Decision::Confirm,
            "money-moves-with-confirmation",
        ),
        (
            "unknown currency counts as exponent 2",
            refund(50_000, "XYZ"),
            Decision::Human,
            "large-amounts-need-a-person",
        ),
    ];
    for (what, input, decision, rule) in cases {
        let verdict = match policy.evaluate(&input) {
            Ok(v) => v,
            Err(e) => panic!("{what}: {e}"),
        };
        assert_eq!(verdict.decision, decision, "{what}: {verdict:?}");
        assert_eq!(verdict.rule, rule, "{what}: {verdict:?}");
        let info = policy.rules().iter().find(|r| r.name == rule);
        assert_eq!(
            Some(verdict.message.as_str()),
            info.map(|r| r.message.as_str())
        );
        assert!(verdict.explanation.contains(rule), "{what}: {verdict:?}");
    }
}

#[test]
fn bindings_derive_units_and_neutral_values() {
    let list = |input: &PolicyInput| Bindings::new(input).list();
    let get = |list: &[Binding], name: &str| {
        list.iter()
            .find(|b| b.name == name)
            .map(|b| b.value.clone())
            .unwrap_or_default()
    };
    let empty = list(&PolicyInput::default());
    assert_eq!(
        empty.iter().map(|b| b.name).collect::<Vec<_>>(),
        VARIABLES.to_vec()
    );
    assert_eq!(get(&empty, "amount_minor"), "0");
    assert_eq!(get(&empty, "has_amount"), "false");
    assert_eq!(get(&empty, "currency"), "\"\"");
    assert_eq!(get(&empty, "exponent"), "2");
    assert_eq!(get(&empty, "transaction_age_days"), "-1");
    assert_eq!(get(&empty, "client"), "\"\"");

    let kwd = list(&PolicyInput {
        moved_today_minor: 1_999_999,
        ..money("perform_refund", 1_234_567, "KWD")
    });
    assert_eq!(get(&kwd, "exponent"), "3");
    assert_eq!(get(&kwd, "amount_units"), "1234");
    assert_eq!(get(&kwd, "moved_today_units"), "1999");
    assert_eq!(get(&kwd, "day_total_minor"), "3234566");
    assert_eq!(get(&kwd, "day_total_units"), "3234");

    let jpy = list(&money("perform_refund", 777, "JPY"));
    assert_eq!(get(&jpy, "exponent"), "0");
    assert_eq!(get(&jpy, "amount_units"), "777");

    let negative = list(&money("perform_refund", -1, "EUR"));
    assert_eq!(
        get(&negative, "amount_units"),
        "-1",
        "floor, not truncation"
    );

    let saturated = list(&PolicyInput {
        moved_today_minor: i64::MAX,
        ..money("perform_refund", 5, "EUR")
    });
    assert_eq!(get(&saturated, "day_total_minor"), i64::MAX.to_string());
}

#[test]
fn first_matching_rule_decides_in_file_order() {
    let source = r#"
[[rule]]
name = "first"
when = "amount_minor > 100"
action = "deny"

[[rule]]
name = "second"
when = "amount_minor > 10"
action = "human"

[[rule]]
name = "third"
when = "true"
action = "allow"
"#;
    let policy = Policy::from_toml(source, "order.toml");
    let policy = match policy {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let decide = |amount| {
        policy
            .evaluate(&money("perform_refund", amount, "EUR"))
            .map(|v| (v.decision, v.rule))
            .map_err(|e| e.to_string())
    };
    assert_eq!(decide(1_000), Ok((Decision::Deny, "first".into())));
    assert_eq!(decide(50), Ok((Decision::Human, "second".into())));
    assert_eq!(decide(5), Ok((Decision::Allow, "third".into())));
}

#[test]
fn default_applies_when_nothing_matches() {
    let source = r#"
default = "deny"

[[rule]]
name = "tiny-refunds"
when = "tool == 'perform_refund' && amount_minor < 100"
action = "allow"
"#;
    let policy = match Policy::from_toml(source, "d.toml") {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let verdict = policy.evaluate(&money("perform_capture", 1, "EUR"));
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(verdict.decision, Decision::Deny);
    assert_eq!(verdict.rule, DEFAULT_RULE_NAME);
    assert!(verdict
        .explanation
        .contains("no rule matched; default deny"));

    // No `default` key: confirm. No rules at all is a valid (if blunt) policy.
    let empty = match Policy::from_toml("", "empty.toml") {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(empty.default_decision(), Decision::Confirm);
    assert!(empty.rules().is_empty());
    let verdict = empty.evaluate(&input("search_transactions", false));
    assert_eq!(verdict.map(|v| v.decision).ok(), Some(Decision::Confirm));
}

#[test]
fn toolsets_restrict_a_rule() {
    let source = r#"
[[rule]]
name = "opp-only"
when = "true"
action = "deny"
toolsets = ["opp"]

[[rule]]
name = "rest"
when = "true"
action = "allow"
"#;
    let policy = match Policy::from_toml(source, "t.toml") {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(policy.rules()[0].toolsets, vec!["opp".to_owned()]);
    let opp = policy.evaluate(&input("x", true)).map(|v| v.rule).ok();
    assert_eq!(opp.as_deref(), Some("opp-only"));
    let other = PolicyInput {
        toolset: "stripe".into(),
        ..input("x", true)
    };
    assert_eq!(
        policy.evaluate(&other).map(|v| v.rule).ok().as_deref(),
        Some("rest")
    );
    let explanation = match policy.explain(&other) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(explanation.steps[0].result, StepResult::Skipped);
}

/// A file with several rules, the broken one in the middle, and rules with similar text.
const SYNTAX_ERROR_IN_THE_MIDDLE: &str = r#"# line 1
default = "confirm"

[[rule]]
name = "a"
when = "amount_minor > 100"
action = "human"

[[rule]]
name = "b"
action = "deny"
message = "when = \"amount_minor > 100\" is not here"
when = "amount_minor > > 100"

[[rule]]
name = "c"
when = "amount_minor > 100"
action = "allow"
"#;

#[test]
fn cel_syntax_error_names_file_line_and_rule() {
    match load_err(SYNTAX_ERROR_IN_THE_MIDDLE) {
        PolicyError::Rule {
            origin,
            line,
            rule,
            reason,
        } => {
            assert_eq!(origin, "test.toml");
            assert_eq!(line, 13);
            assert_eq!(rule, "b");
            assert!(reason.contains("CEL syntax error"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = load_err(SYNTAX_ERROR_IN_THE_MIDDLE).to_string();
    assert!(text.starts_with("test.toml:13: rule `b`: "), "{text}");
}

#[test]
fn rule_lines_are_the_lines_of_when() {
    let source = SYNTAX_ERROR_IN_THE_MIDDLE.replace("> > 100", "> 100");
    let policy = match Policy::from_toml(&source, "ok.toml") {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let lines: Vec<usize> = policy.rules().iter().map(|r| r.line).collect();
    assert_eq!(lines, [6, 13, 17]);
    // The built-in file: every rule's line holds its `when`.
    let builtin = builtin();
    let source_lines: Vec<&str> = BUILTIN_SOURCE.lines().collect();
    for rule in builtin.rules() {
        let line = source_lines[rule.line - 1];
        assert!(line.starts_with("when = "), "{}: {line}", rule.name);
        assert!(line.contains(&rule.when), "{}: {line}", rule.name);
    }
}

#[test]
fn unknown_variable_is_rejected_at_load() {
    let source = r#"
[[rule]]
name = "typo"
when = "amount_minr > 5 && [1, 2].exists(x, x == exponent)"
action = "deny"
"#;
    match load_err(source) {
        PolicyError::Rule {
            line, rule, reason, ..
        } => {
            assert_eq!((line, rule.as_str()), (4, "typo"));
            assert!(reason.contains("`amount_minr`"), "{reason}");
            assert!(
                !reason.contains("`x`"),
                "comprehension variables are fine: {reason}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // Comprehension variables and type names are not variables.
    let fine = r#"
[[rule]]
name = "ok"
when = "['a', 'b'].exists(t, t == tool) && type(amount_minor) == int"
action = "deny"
"#;
    assert!(Policy::from_toml(fine, "fine.toml").is_ok());
}

#[test]
fn toml_syntax_error_reports_its_line() {
    let source =
        "default = \"confirm\"\n\n[[rule]]\nname = \"a\"\nwhen = \"true\nmessage = \"x\"\n";
    match load_err(source) {
        PolicyError::Toml { origin, line, .. } => {
            assert_eq!(origin, "test.toml");
            assert_eq!(line, 5);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unknown_action_is_rejected_with_its_line() {
    let source = "[[rule]]\nname = \"a\"\nwhen = \"true\"\naction = \"allow\"\n\n[[rule]]\nname = \"b\"\nwhen = \"true\"\naction = \"maybe\"\n";
    match load_err(source) {
        PolicyError::Rule {
            line, rule, reason, ..
        } => {
            assert_eq!((line, rule.as_str()), (9, "b"));
            assert!(reason.contains("unknown action `maybe`"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    match load_err("\n\ndefault = \"Allow\"\n") {
        PolicyError::Toml { line, reason, .. } => {
            assert_eq!(line, 3);
            assert!(reason.contains("unknown default"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let top = "default = \"confirm\"\ndefualt_action = \"deny\"\n";
    match load_err(top) {
        PolicyError::Toml { line, reason, .. } => {
            assert_eq!(line, 2);
            assert!(reason.contains("defualt_action"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let in_rule = "[[rule]]\nname = \"a\"\nwhen = \"true\"\naction = \"allow\"\n\n[[rule]]\nname = \"b\"\nwhen = \"true\"\nactoin = \"deny\"\naction = \"deny\"\n";
    match load_err(in_rule) {
        PolicyError::Toml { line, reason, .. } => {
            assert_eq!(line, 9);
            assert!(reason.contains("actoin"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_and_mistyped_fields_are_rejected() {
    let missing_when = "[[rule]]\nname = \"a\"\naction = \"allow\"\n";
    match load_err(missing_when) {
        PolicyError::Toml { reason, .. } => assert!(reason.contains("when"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    let number_when = "[[rule]]\nname = \"a\"\nwhen = 5\naction = \"allow\"\n";
    match load_err(number_when) {
        PolicyError::Toml { line, .. } => assert_eq!(line, 3),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn names_and_expressions_are_validated() {
    let rule = |name: &str, when: &str| {
        format!("[[rule]]\nname = \"{name}\"\nwhen = \"{when}\"\naction = \"allow\"\n")
    };
    let reason_and_line = |source: &str| match load_err(source) {
        PolicyError::Rule { line, reason, .. } => (line, reason),
        other => panic!("unexpected {other:?}"),
    };

    let (line, reason) = reason_and_line(&rule("", "true"));
    assert_eq!(line, 2);
    assert!(reason.contains("empty"), "{reason}");

    let (line, reason) = reason_and_line(&rule("a", "  "));
    assert_eq!(line, 3);
    assert!(reason.contains("`when` is empty"), "{reason}");

    let (line, reason) = reason_and_line(&rule("default", "true"));
    assert_eq!(line, 2);
    assert!(reason.contains("reserved"), "{reason}");

    let duplicate = format!("{}\n{}", rule("a", "true"), rule("a", "false"));
    let (line, reason) = reason_and_line(&duplicate);
    assert_eq!(line, 7);
    assert!(
        reason.contains("duplicate rule name; first used on line 2"),
        "{reason}"
    );

    let empty_toolsets = format!("{}toolsets = []\n", rule("a", "true"));
    let (line, reason) = reason_and_line(&empty_toolsets);
    assert_eq!(line, 5);
    assert!(reason.contains("toolsets"), "{reason}");
}

#[test]
fn non_bool_result_is_an_eval_error_naming_the_rule() {
    let source = r#"
[[rule]]
name = "fine"
when = "false"
action = "allow"

[[rule]]
name = "returns-an-int"
when = "amount_minor"
action = "deny"
"#;
    let policy = match Policy::from_toml(source, "e.toml") {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    match policy.evaluate(&money("perform_refund", 5, "EUR")) {
        Err(PolicyError::Eval { rule, reason }) => {
            assert_eq!(rule, "returns-an-int");
            assert!(reason.contains("bool"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let explanation = match policy.explain(&money("perform_refund", 5, "EUR")) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    assert!(matches!(explanation.steps[1].result, StepResult::Error(_)));
    assert!(matches!(explanation.outcome, Err(PolicyError::Eval { .. })));
    let report = render_check(&explanation);
    assert!(report.contains("evaluation failed"), "{report}");
}

#[test]
fn runtime_errors_are_eval_errors() {
    let source = r#"
[[rule]]
name = "overflows"
when = "amount_minor * 1000000000000 > 0"
action = "deny"
"#;
    let policy = match Policy::from_toml(source, "o.toml") {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert!(matches!(
        policy.evaluate(&money("perform_refund", i64::MAX / 2, "EUR")),
        Err(PolicyError::Eval { .. })
    ));
    assert!(policy.evaluate(&money("perform_refund", 1, "EUR")).is_ok());
}

#[test]
fn explain_lists_every_rule_tried_and_render_shows_them() {
    let policy = builtin();
    let small_refund = money("perform_refund", 1_000, "EUR");
    let explanation = match policy.explain(&small_refund) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(explanation.steps.len(), policy.rules().len());
    assert!(explanation.not_reached.is_empty());
    let expected: Vec<&str> = policy.rules().iter().map(|r| r.name.as_str()).collect();
    let got: Vec<&str> = explanation.steps.iter().map(|s| s.rule.as_str()).collect();
    assert_eq!(got, expected);
    assert_eq!(
        explanation.outcome.as_ref().ok(),
        policy.evaluate(&small_refund).as_ref().ok()
    );
    let report = render_check(&explanation);
    for rule in policy.rules() {
        assert!(
            report.contains(&rule.name),
            "{} missing:\n{report}",
            rule.name
        );
        assert!(
            report.contains(&format!("line {:>4}", rule.line)),
            "{report}"
        );
    }
    assert!(report.contains("amount_minor"), "{report}");
    assert!(
        report.contains("deciding rule: money-moves-with-confirmation"),
        "{report}"
    );
    assert!(report.contains("decision: confirm"), "{report}");

    // A read stops at the first rule; the rest are listed as not evaluated.
    let read = match policy.explain(&input("search_transactions", false)) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(read.steps.len(), 1);
    assert_eq!(read.steps[0].result, StepResult::Matched);
    assert_eq!(read.not_reached.len(), policy.rules().len() - 1);

    // Nothing matches: the report says so.
    let none = match Policy::from_toml(
        "default = \"human\"\n[[rule]]\nname = \"never\"\nwhen = \"false\"\naction = \"deny\"\n",
        "n.toml",
    ) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let explanation = match none.explain(&input("x", true)) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    let report = render_check(&explanation);
    assert!(
        report.contains("no rule matched; default human"),
        "{report}"
    );
    assert!(report.contains("never"), "{report}");
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let path = dir.path().join("policy.toml");
    if let Err(e) = std::fs::write(&path, SYNTAX_ERROR_IN_THE_MIDDLE) {
        panic!("{e}");
    }
    match Policy::load(&path) {
        Err(PolicyError::Rule { origin, line, .. }) => {
            assert_eq!(origin, path.display().to_string());
            assert_eq!(line, 13);
        }
        other => panic!("unexpected {other:?}"),
    }
    if let Err(e) = std::fs::write(&path, BUILTIN_SOURCE) {
        panic!("{e}");
    }
    assert!(Policy::load(&path).is_ok());
    assert!(matches!(
        Policy::load(&dir.path().join("missing.toml")),
        Err(PolicyError::Io { .. })
    ));
}

#[test]
fn decision_names_round_trip() {
    for decision in Decision::ALL {
        assert_eq!(Decision::from_name(decision.as_str()), Some(decision));
        assert_eq!(
            serde_json::to_string(&decision).ok(),
            Some(format!("\"{decision}\""))
        );
    }
    assert_eq!(Decision::from_name("Allow"), None);
    assert!(Decision::Allow < Decision::Confirm && Decision::Human < Decision::Deny);
}

fn arbitrary_input() -> impl Strategy<Value = PolicyInput> {
    (
        prop_oneof![Just("opp".to_owned()), ".{0,8}"],
        prop_oneof![
            Just("perform_refund".to_owned()),
            Just("perform_chargeback".to_owned()),
            ".{0,20}"
        ],
        ".{0,12}",
        any::<bool>(),
        proptest::option::of(any::<i64>()),
        proptest::option::of(prop_oneof![
            Just("EUR".to_owned()),
            Just("JPY".to_owned()),
            Just("KWD".to_owned()),
            Just("CLF".to_owned()),
            ".{0,4}"
        ]),
        proptest::option::of(any::<i64>()),
        any::<i64>(),
        proptest::option::of(".{0,12}"),
    )
        .prop_map(
            |(
                toolset,
                tool,
                entity,
                moves_money,
                amount_minor,
                currency,
                transaction_age_days,
                moved_today_minor,
                client,
            )| PolicyInput {
                toolset,
                tool,
                entity,
                moves_money,
                amount_minor,
                currency,
                transaction_age_days,
                moved_today_minor,
                client,
            },
        )
}

/// Rules that can fail at run time (overflow, division by zero, type errors, regexes).
const FRAGILE: &str = r#"
[[rule]]
name = "arithmetic"
when = "amount_minor * 3 + moved_today_minor - transaction_age_days > amount_units / exponent"
action = "deny"

[[rule]]
name = "strings"
when = "client.matches('^[a-z]+$') && size(entity) > 3 && tool.startsWith('perform') && currency + toolset != ''"
action = "human"

[[rule]]
name = "mixed"
when = "day_total_units % (exponent - 2) == 0 || has_amount"
action = "confirm"
"#;

proptest! {
    #[test]
    fn builtin_evaluation_never_fails(input in arbitrary_input()) {
        let policy = builtin();
        let verdict = policy.evaluate(&input);
        prop_assert!(verdict.is_ok(), "{:?}", verdict);
        if let Ok(verdict) = verdict {
            if !input.moves_money {
                prop_assert_eq!(verdict.decision, Decision::Allow);
            } else {
                prop_assert!(verdict.decision >= Decision::Confirm);
            }
        }
    }

    #[test]
    fn evaluation_never_panics(input in arbitrary_input()) {
        let policy = match Policy::from_toml(FRAGILE, "fragile.toml") {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let verdict = policy.evaluate(&input);
        let explanation = policy.explain(&input);
        prop_assert!(explanation.is_ok());
        if let Ok(explanation) = explanation {
            prop_assert_eq!(
                explanation.outcome.as_ref().ok(),
                verdict.as_ref().ok()
            );
            let _ = render_check(&explanation);
        }
    }
}

/// Not a test: measures [`Policy::evaluate`] on the built-in policy. Run with
/// `cargo test -p paywarden --release policy -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_evaluate() {
    let policy = builtin();
    // Worst case for the built-in policy: a small refund tries all six rules.
    let input = PolicyInput {
        moved_today_minor: 12_345,
        transaction_age_days: Some(10),
        client: Some("claude".into()),
        ..money("perform_refund", 1_000, "EUR")
    };
    let iterations: u32 = 100_000;
    let start = std::time::Instant::now();
    let mut confirms = 0_u32;
    for _ in 0..iterations {
        if let Ok(v) = policy.evaluate(std::hint::black_box(&input)) {
            confirms += u32::from(v.decision == Decision::Confirm);
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(confirms, iterations);
    println!(
        "policy evaluate (built-in, 6 rules tried): {} ns/op over {iterations} runs",
        elapsed.as_nanos() / u128::from(iterations)
    );
}
