//! The layering of `docs/ARCHITECTURE.md`, held against the code: every `crate::`
//! import of `src/` must be an edge of the table in that document (between the
//! `layers:begin` and `layers:end` markers), and the table must have no cycle. Change
//! the table and the code together, or this test fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Layers = BTreeMap<String, BTreeSet<String>>;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The table of allowed imports, from the document.
fn documented_layers() -> Layers {
    let document =
        std::fs::read_to_string(repo_file("docs/ARCHITECTURE.md")).expect("docs/ARCHITECTURE.md");
    let (_, rest) = document
        .split_once("<!-- layers:begin -->")
        .expect("the layers:begin marker in docs/ARCHITECTURE.md");
    let (table, _) = rest
        .split_once("<!-- layers:end -->")
        .expect("the layers:end marker");
    table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let names = |cell: &str| -> BTreeSet<String> {
                cell.split(',')
                    .map(|name| name.trim().trim_matches('`').to_string())
                    .filter(|name| !name.is_empty() && name != "—")
                    .collect()
            };
            let module = names(cells[0]).into_iter().next().expect("a module name");
            (module, names(cells.get(1).copied().unwrap_or_default()))
        })
        .collect()
}

/// The top-level module a source file belongs to (`src/http/cart.rs` → `http`).
fn module_of(file: &Path) -> String {
    let relative = file
        .strip_prefix(repo_file("src"))
        .expect("a file under src/");
    let first = relative
        .components()
        .next()
        .expect("a path")
        .as_os_str()
        .to_string_lossy()
        .to_string();
    first.trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The code without comments and string literals, so that a path in a doc comment or a
/// log target is not taken for an import.
fn code_only(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '"' && !escaped {
                        break;
                    }
                    escaped = c == '\\' && !escaped;
                }
                code.push_str("\"\"");
            }
            other => code.push(other),
        }
    }
    code
}

/// The top-level modules a file names through `crate::…` (grouped imports included);
/// the binary names the library `ecommerce_monolith::…`.
fn imported_modules(text: &str) -> BTreeSet<String> {
    let code = code_only(text);
    let mut modules = BTreeSet::new();
    for prefix in ["crate::", "ecommerce_monolith::"] {
        for (start, _) in code.match_indices(prefix) {
            let preceded_by_ident = code[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            if preceded_by_ident {
                continue;
            }
            let rest = &code[start + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::{c, d}}`: the first name of each top-level item.
                let mut depth = 0;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            modules.extend(first_name(&item));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                modules.extend(first_name(&item));
            } else {
                modules.extend(first_name(rest));
            }
        }
    }
    modules
}

fn first_name(path: &str) -> Option<String> {
    let name: String = path
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Every edge of the code: (importing module, imported module, the file).
fn imports() -> Vec<(String, String, PathBuf)> {
    let mut files = Vec::new();
    rust_files(&repo_file("src"), &mut files);
    files.sort();
    let mut edges = Vec::new();
    for file in files {
        let module = module_of(&file);
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for imported in imported_modules(&text) {
            if imported != module {
                edges.push((module.clone(), imported, file.clone()));
            }
        }
    }
    edges
}

/// A cycle of the table, if it has one.
fn cycle(layers: &Layers) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        layers: &Layers,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut found = path[at..].to_vec();
            found.push(module.to_string());
            return Some(found);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in layers.get(module).into_iter().flatten() {
            if let Some(found) = visit(next, layers, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    layers
        .keys()
        .find_map(|module| visit(module, layers, &mut Vec::new(), &mut done))
}

#[test]
fn every_import_follows_the_documented_layers() {
    let layers = documented_layers();
    assert!(layers.len() > 15, "the table was not found: {layers:?}");
    assert!(
        layers["domain"].is_empty(),
        "the domain imports nothing of the crate"
    );
    let forbidden: Vec<String> = imports()
        .into_iter()
        .filter(|(from, to, _)| !layers.get(from).is_some_and(|allowed| allowed.contains(to)))
        .map(|(from, to, file)| {
            format!(
                "{}: `{from}` imports `{to}`, which docs/ARCHITECTURE.md does not allow \
                 ({from} may import: {:?})",
                file.strip_prefix(repo_file("")).unwrap_or(&file).display(),
                layers.get(&from).cloned().unwrap_or_default()
            )
        })
        .collect();
    assert!(forbidden.is_empty(), "\n{}\n", forbidden.join("\n"));
}

#[test]
fn the_documented_layers_have_no_cycle_and_name_real_modules() {
    let layers = documented_layers();
    assert_eq!(cycle(&layers), None, "the table has a cycle");
    let modules: BTreeSet<String> = imports().into_iter().map(|(from, ..)| from).collect();
    for module in layers.values().flatten().chain(layers.keys()) {
        let exists = repo_file(&format!("src/{module}.rs")).exists()
            || repo_file(&format!("src/{module}")).is_dir();
        assert!(
            exists,
            "the table names `{module}`, which src/ does not have"
        );
    }
    for module in modules {
        assert!(
            layers.contains_key(&module),
            "`{module}` is missing from the table"
        );
    }
}

#[test]
fn handlers_leave_sql_to_the_stores() {
    let mut files = Vec::new();
    rust_files(&repo_file("src/http"), &mut files);
    for file in files {
        let code = code_only(&std::fs::read_to_string(&file).expect("read"));
        assert!(
            !code.contains("sqlx::query"),
            "{}: a handler runs SQL itself; put the statement in its store",
            file.display()
        );
    }
}

#[test]
fn the_reader_finds_grouped_and_inline_imports() {
    let text = "use crate::{db::Database, domain::{Email, Money}};\n\
                // use crate::http::AppState;\n\
                const T: &str = \"ecommerce_monolith::db::x\";\n\
                fn f() { crate::telemetry::init(); my_crate::config::x(); }";
    let found: Vec<String> = imported_modules(text).into_iter().collect();
    assert_eq!(found, ["db", "domain", "telemetry"]);
}
