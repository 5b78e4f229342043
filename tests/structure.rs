//! The layout's rules, read from the source: dependencies between the files of src/ run one
//! way (no import circle), no file in src/ is over 500 lines and no function over 80.
//! `cargo test --test structure -- --nocapture` prints the dependencies of src/gpu in order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every file of `dir` and below whose name ends in `.rs`, with its text.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), text));
        }
    }
}

/// `src/gpu/ops/linear/mod.rs` -> `crate::gpu::ops::linear`.
fn module_of(path: &str) -> String {
    let rel = path.trim_start_matches("src/").trim_end_matches(".rs");
    let rel = rel.trim_end_matches("/mod");
    match rel {
        "lib" | "main" => "crate".into(),
        _ => format!("crate::{}", rel.replace('/', "::")),
    }
}

/// The text that is code: no comments (a doc link is not a dependency), no unit tests.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module -> the modules (files) it names with `crate::...`.
fn graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.iter().map(|(p, _)| module_of(p)).collect();
    let resolve = |path: &str| {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|m| modules.contains(m))
    };
    let mut edges = BTreeMap::new();
    for (path, text) in files {
        let from = module_of(path);
        let mut to = BTreeSet::new();
        let code = code(text);
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let Some(t) = resolve(name.trim_end_matches(':')) else {
                continue;
            };
            // A module may use its own parent's items (`ops::Modules` from `ops::linear`).
            if t != from && t != "crate" && !from.starts_with(&format!("{t}::")) {
                to.insert(t);
            }
        }
        edges.insert(from, to);
    }
    edges
}

/// A circle in `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for t in &edges[m] {
            match state.get(t) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == t).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(t.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(t, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if !state.contains_key(m) {
            let mut stack = Vec::new();
            if let Some(c) = visit(m, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn src_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    sources(Path::new("src"), &mut files);
    files.sort();
    files
}

#[test]
fn dependencies_run_one_way() {
    let edges = graph(&src_files());
    // Dependency order: each module after everything it uses.
    let mut done: Vec<String> = Vec::new();
    while done.len() < edges.len() {
        let ready: Vec<String> = edges
            .iter()
            .filter(|(m, to)| !done.contains(m) && to.iter().all(|t| done.contains(t)))
            .map(|(m, _)| m.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        done.extend(ready);
    }
    for m in done.iter().filter(|m| m.starts_with("crate::gpu")) {
        let to: Vec<&str> = edges[m]
            .iter()
            .filter_map(|t| t.strip_prefix("crate::gpu::"))
            .collect();
        println!(
            "{:<28} <- {}",
            m.trim_start_matches("crate::"),
            to.join(", ")
        );
    }
    if let Some(c) = find_cycle(&edges) {
        panic!("an import circle: {}", c.join(" -> "));
    }
}

/// The checker finds a circle where there is one (three modules naming each other in turn).
#[test]
fn a_circle_is_found() {
    let files = [
        ("src/a.rs", "use crate::b::X;"),
        (
            "src/b.rs",
            "use crate::c::Y; // crate::a in a comment is no use",
        ),
        ("src/c.rs", "fn f() { crate::a::g() }"),
    ]
    .map(|(p, t)| (p.to_string(), t.to_string()));
    let cycle = find_cycle(&graph(&files)).expect("a circle");
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    let acyclic = [("src/a.rs", "use crate::b::X;"), ("src/b.rs", "")]
        .map(|(p, t)| (p.to_string(), t.to_string()));
    assert_eq!(find_cycle(&graph(&acyclic)), None);
}

/// Lines of each function of `text` that starts a line with `fn` (after `pub`, `async`):
/// from its signature to the brace that closes it.
fn function_lengths(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let t = t.strip_prefix("pub ").unwrap_or(t);
        let t = t.strip_prefix("pub(crate) ").unwrap_or(t);
        let t = t.strip_prefix("async ").unwrap_or(t);
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut opened) = (0i32, false);
        for (j, l) in lines.iter().enumerate().skip(i) {
            let code = l.split("//").next().unwrap();
            if !opened && code.trim_end().ends_with(';') {
                break; // a declaration without a body
            }
            for c in code.chars() {
                match c {
                    '{' => (depth, opened) = (depth + 1, true),
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                out.push((name.clone(), i + 1, j - i + 1));
                break;
            }
        }
    }
    out
}

#[test]
fn files_and_functions_stay_short() {
    let mut long = Vec::new();
    for (path, text) in src_files() {
        let n = text.lines().count();
        if n > 500 {
            long.push(format!("{path}: {n} lines"));
        }
        for (name, at, len) in function_lengths(&text) {
            if len > 80 {
                long.push(format!("{path}:{at}: fn {name} is {len} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "over 500 lines a file or 80 a function:\n{}",
        long.join("\n")
    );
    let sample =
        "fn short() {\n    1\n}\n\npub async fn longer(\n    x: u8,\n) {\n    {\n    }\n}\n";
    let lengths = function_lengths(sample);
    assert_eq!(lengths, [("short".into(), 1, 3), ("longer".into(), 5, 6)]);
}
