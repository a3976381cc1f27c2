//! The README's tool tables against the one tool catalogue (`paywarden::catalog`): every tool
//! the server serves is documented once, no documented tool is missing from the catalogue, and
//! each row's hints say what the catalogue says the tool does to money.

use paywarden::catalog::{Effect, CATALOG};

/// The rows of the README's tool tables: (tool name, last cell), for rows whose first cell
/// starts with a backticked catalogue-style name.
fn tool_rows(readme: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut in_tool_table = false;
    for line in readme.lines() {
        if line.starts_with("| tool |") {
            in_tool_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_tool_table = false;
            continue;
        }
        if !in_tool_table || line.starts_with("|---") {
            continue;
        }
        // `\|` inside a cell is a literal bar, not a column.
        let cells: Vec<String> = line
            .replace("\\|", "\u{0}")
            .split('|')
            .map(|c| c.trim().replace('\u{0}', "|"))
            .filter(|c| !c.is_empty())
            .collect();
        let (Some(first), Some(last)) = (cells.first(), cells.last()) else {
            continue;
        };
        let Some(name) = first
            .strip_prefix('`')
            .and_then(|rest| rest.split(['`', '(']).next())
        else {
            continue;
        };
        rows.push((name.to_string(), last.clone()));
    }
    rows
}

fn effect_of_hint(hint: &str) -> Option<Effect> {
    if hint.contains("read-only") {
        Some(Effect::Read)
    } else if hint.contains("destructive") {
        Some(Effect::MovesMoney)
    } else if hint.contains("asks for money") {
        Some(Effect::RequestsMoney)
    } else if hint == "write" {
        Some(Effect::Write)
    } else {
        None
    }
}

#[test]
fn the_readme_tool_tables_follow_the_catalogue() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .expect("README.md");
    let rows = tool_rows(&readme);
    let mut problems = Vec::new();
    for spec in CATALOG {
        let documented: Vec<_> = rows.iter().filter(|(n, _)| n == spec.name).collect();
        match documented.as_slice() {
            [] => problems.push(format!(
                "{} is served but not in the README's tables",
                spec.name
            )),
            [(_, hint)] => match effect_of_hint(hint) {
                Some(e) if e == spec.effect => {}
                other => problems.push(format!(
                    "{}: README says {hint:?} ({other:?}), the catalogue says {:?}",
                    spec.name, spec.effect
                )),
            },
            _ => problems.push(format!("{} is in the README's tables twice", spec.name)),
        }
    }
    for (name, _) in &rows {
        if !CATALOG.iter().any(|s| s.name == name) {
            problems.push(format!("{name} is documented but not in the catalogue"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        rows.len() >= CATALOG.len(),
        "only {} rows parsed",
        rows.len()
    );
}

/// The ```text block of a Markdown or `//!` text (the first one).
fn text_block(text: &str) -> Option<String> {
    let start = text.find("```text\n")? + "```text\n".len();
    let end = start + text[start..].find("```")?;
    Some(text[start..end].to_string())
}

#[test]
fn the_docs_show_the_sequence_pipeline_mod_rs_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let module = std::fs::read_to_string(root.join("src/pipeline/mod.rs")).expect("mod.rs");
    let doc: String = module
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    let sequence = text_block(&doc).expect("the sequence in pipeline/mod.rs");
    assert!(sequence.contains("gate") && sequence.lines().count() >= 10);
    for doc in ["../../docs/architecture.md", "../../README.md"] {
        let text = std::fs::read_to_string(root.join(doc)).expect(doc);
        assert!(
            text.contains(&sequence),
            "{doc} must show the sequence exactly as pipeline/mod.rs lists it:\n{sequence}"
        );
    }
}
