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
