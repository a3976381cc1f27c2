//! Dependencies point down: domain ← store/policy/connectors ← pipeline ← toolsets ←
//! mcp/http ← app ← main. Read from the source (`crate::` paths outside comments), so that a
//! module reaching up the stack fails here rather than in review.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The top-level crate modules a file names (`crate::<module>`), comments left out.
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = match code.find(" //") {
            Some(i) => &code[..i],
            None => code,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push((n + 1, name));
            rest = after;
        }
    }
    found
}

/// Modules above each layer: a file under `layer` may not name any of them.
const RULES: &[(&str, &[&str])] = &[
    (
        "pipeline",
        &[
            "toolsets",
            "service",
            "mcp",
            "http",
            "http_sse",
            "approvals_http",
            "ifthenpay_http",
            "app",
        ],
    ),
    (
        "connectors",
        &["pipeline", "service", "toolsets", "mcp", "http", "app"],
    ),
    (
        "store",
        &["pipeline", "service", "toolsets", "mcp", "http", "app"],
    ),
    (
        "policy",
        &["pipeline", "service", "toolsets", "mcp", "http", "app"],
    ),
    (
        "toolsets",
        &[
            "service",
            "mcp",
            "http",
            "http_sse",
            "approvals_http",
            "ifthenpay_http",
            "app",
        ],
    ),
];

fn violations(src: &Path) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut bad = Vec::new();
    for (layer, above) in RULES {
        for file in rust_files(&src.join(layer)) {
            checked += 1;
            let source = std::fs::read_to_string(&file).expect("readable file");
            for (line, module) in crate_paths(&source) {
                if above.contains(&module.as_str()) {
                    bad.push(format!(
                        "{}:{line}: {layer} names crate::{module}",
                        file.strip_prefix(src).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    (checked, bad)
}

#[test]
fn no_layer_names_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (checked, bad) = violations(&src);
    assert!(
        checked >= 30,
        "only {checked} files found under {}",
        src.display()
    );
    assert!(
        bad.is_empty(),
        "dependencies must point down:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_scanner_sees_paths_in_code_and_not_in_comments() {
    let source = "use crate::toolsets::opp;\n/// [`crate::mcp`]\nlet x = crate::app::App::build(); // crate::http\n";
    let names: Vec<String> = crate_paths(source).into_iter().map(|(_, m)| m).collect();
    assert_eq!(names, ["toolsets", "app"]);
}

/// The pipeline's step functions a toolset must not call itself: it hands an `Operation` to
/// `Pipeline::run`, which calls them in the documented order.
const STEP_CALLS: &[&str] = &[".write(", ".gate(", ".finish_gated(", ".reconcile("];

/// Where a file calls a pipeline step directly (`path:line: call`), comments left out.
fn step_calls(name: &str, source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = match code.find(" //") {
            Some(i) => &code[..i],
            None => code,
        };
        for call in STEP_CALLS {
            if code.contains(call) {
                found.push(format!("{name}:{}: {}", n + 1, code.trim()));
            }
        }
    }
    found
}

#[test]
fn toolsets_run_operations_through_pipeline_run_and_call_no_step_themselves() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src.join("toolsets"));
    assert!(
        files.len() >= 15,
        "only {} toolset files found",
        files.len()
    );
    let mut bad = Vec::new();
    let mut runs = 0;
    for file in &files {
        let source = std::fs::read_to_string(file).expect("readable file");
        let name = file
            .strip_prefix(&src)
            .unwrap_or(file)
            .display()
            .to_string();
        bad.extend(step_calls(&name, &source));
        runs += source.matches(".run(caller").count() + source.matches(".run(&caller").count();
    }
    assert!(
        bad.is_empty(),
        "a toolset supplies an Operation and calls Pipeline::run; it never runs the steps itself:\n{}",
        bad.join("\n")
    );
    // OPP back-office, OPP get_approval, ops issue_refund, ops create_payment_link, ifthenpay.
    assert!(
        runs >= 5,
        "only {runs} calls of Pipeline::run found under toolsets/"
    );
}

#[test]
fn the_step_scanner_sees_calls_in_code_and_not_in_comments() {
    let source = "// self.pipeline.write(x)\nlet g = self.pipeline.gate(GateRequest {\n    .finish_gated(&c) // .reconcile(\n";
    let found = step_calls("f.rs", source);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("f.rs:2:") && found[1].starts_with("f.rs:3:"));
}
