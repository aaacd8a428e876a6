//! The documents, held where they can drift from the code: every table the migrations
//! create is in docs/ARCHITECTURE.md's diagram, and every path the documents quote in
//! backticks — a module, an item, a type's member, a file — exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::architecture::reader::{Crate, ModulePath, Reading};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The tables the migrations leave: every `CREATE TABLE`, less every `DROP TABLE`.
fn migrated_tables() -> BTreeSet<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_file("migrations"))
        .expect("migrations/")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let create =
        regex::Regex::new(r"(?i)create\s+table\s+(?:if\s+not\s+exists\s+)?(\w+)").expect("regex");
    let drop = regex::Regex::new(r"(?i)drop\s+table\s+(?:if\s+exists\s+)?(\w+)").expect("regex");
    let mut tables = BTreeSet::new();
    for file in files {
        let sql = read(&file);
        tables.extend(create.captures_iter(&sql).map(|c| c[1].to_lowercase()));
        for dropped in drop.captures_iter(&sql) {
            tables.remove(&dropped[1].to_lowercase());
        }
    }
    tables
}

/// The entities of the `erDiagram` in docs/ARCHITECTURE.md: the names its relationship
/// lines and entity blocks mention.
fn diagram_entities() -> BTreeSet<String> {
    let document = read(&repo_file("docs/ARCHITECTURE.md"));
    let (_, after) = document
        .split_once("erDiagram")
        .expect("an erDiagram in docs/ARCHITECTURE.md");
    let (diagram, _) = after.split_once("```").expect("the diagram's end");
    // `a ||--o{ b : label` (identifying) or `a |o..o| b : label` (not).
    let relationship =
        regex::Regex::new(r"^\s*(\w+)\s+\S+(?:--|\.\.)\S+\s+(\w+)\s*:").expect("regex");
    let block = regex::Regex::new(r"^\s*(\w+)\s*\{").expect("regex");
    let mut entities = BTreeSet::new();
    for line in diagram.lines() {
        if let Some(c) = relationship.captures(line) {
            entities.insert(c[1].to_string());
            entities.insert(c[2].to_string());
        } else if let Some(c) = block.captures(line) {
            entities.insert(c[1].to_string());
        }
    }
    entities
}

#[test]
fn every_migrated_table_is_in_the_architectures_diagram() {
    let tables = migrated_tables();
    assert!(tables.len() >= 15, "the migrations were read: {tables:?}");
    let entities = diagram_entities();
    let missing: Vec<&String> = tables.difference(&entities).collect();
    assert!(
        missing.is_empty(),
        "tables the migrations create that docs/ARCHITECTURE.md's diagram lacks: {missing:?}"
    );
    let unknown: Vec<&String> = entities.difference(&tables).collect();
    assert!(
        unknown.is_empty(),
        "entities of the diagram that no migration creates: {unknown:?}"
    );
}

/// Every document a newcomer reads: the README and everything under docs/ and lab/.
fn documents() -> Vec<PathBuf> {
    let mut found = vec![repo_file("README.md"), repo_file("web/README.md")];
    let mut pending = vec![repo_file("docs"), repo_file("lab")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    found.retain(|path| path.exists());
    found.sort();
    found
}

/// The crates a quoted path may name: the service, its tools, and the test suites (a
/// document may name a test as `cargo test` filters it, `edges::a_…`).
struct Known {
    crates: Vec<Reading>,
}

impl Known {
    fn read() -> Self {
        let service = Crate {
            src: repo_file("src"),
            lib_name: "ecommerce_monolith".into(),
            others: Vec::new(),
        }
        .read();
        let tools = Crate {
            src: repo_file("crates/lab/src"),
            lib_name: "ecommerce_lab".into(),
            others: Vec::new(),
        }
        .read();
        let mut crates = vec![service, tools];
        for suite in ["tests/api", "tests/external"] {
            crates.push(
                Crate {
                    src: repo_file(suite),
                    lib_name: String::new(),
                    others: Vec::new(),
                }
                .read(),
            );
        }
        Self { crates }
    }

    /// Whether `path` (`db::Database::enter_async_share`, `checkout::steps`,
    /// `outbox::takeover_after`, `Workers::record`) names something that exists.
    fn exists(&self, path: &[&str]) -> bool {
        let path: Vec<&str> = match path.first() {
            Some(&"ecommerce_monolith" | &"ecommerce_lab" | &"crate") => path[1..].to_vec(),
            _ => path.to_vec(),
        };
        self.crates.iter().any(|reading| resolves(reading, &path))
    }

    /// Whether the path's first name is one of ours (a module, or a type we define):
    /// `rust_decimal::Decimal` is not ours to check.
    fn is_ours(&self, first: &str) -> bool {
        matches!(first, "ecommerce_monolith" | "ecommerce_lab" | "crate")
            || self.crates.iter().any(|reading| {
                reading.modules.contains(&vec![first.to_string()])
                    || (first.starts_with(char::is_uppercase)
                        && reading.members.contains_key(first))
            })
    }
}

/// A module path, then an item of the last module, then members of that item.
fn resolves(reading: &Reading, path: &[&str]) -> bool {
    let modules = (0..=path.len())
        .rev()
        .find(|&n| {
            let module: ModulePath = path[..n].iter().map(|s| s.to_string()).collect();
            reading.modules.contains(&module)
        })
        .unwrap_or(0);
    let rest = &path[modules..];
    let module: ModulePath = path[..modules].iter().map(|s| s.to_string()).collect();
    match rest {
        [] => modules > 0,
        [item] => reading
            .items
            .get(&module)
            .is_some_and(|items| items.contains(*item)),
        [item, member] => {
            let known_item = modules == 0
                || reading
                    .items
                    .get(&module)
                    .is_some_and(|items| items.contains(*item));
            known_item
                && reading
                    .members
                    .get(*item)
                    .is_some_and(|members| members.contains(*member))
        }
        _ => false,
    }
}

#[test]
fn every_path_the_documents_quote_exists() {
    let known = Known::read();
    let quoted_path = regex::Regex::new(r"`([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+)`")
        .expect("regex");
    let quoted_file = regex::Regex::new(
        r"`((?:src|crates|tests|migrations|bench|deploy|grafana|web|lab)/[\w./-]+)`",
    )
    .expect("regex");
    let mut checked = 0;
    let mut missing = Vec::new();
    for document in documents() {
        let text = read(&document);
        let name = document
            .strip_prefix(repo_file(""))
            .unwrap_or(&document)
            .display()
            .to_string();
        for captured in quoted_path.captures_iter(&text) {
            let path: Vec<&str> = captured[1].split("::").collect();
            if !known.is_ours(path[0]) {
                continue;
            }
            checked += 1;
            if !known.exists(&path) {
                missing.push(format!("{name}: `{}`", &captured[1]));
            }
        }
        for captured in quoted_file.captures_iter(&text) {
            let file = captured[1].trim_end_matches(['.', ',', ':']);
            // A glob or a placeholder names no one file.
            if file.contains('*') || file.contains('<') {
                continue;
            }
            checked += 1;
            if !repo_file(file).exists() {
                missing.push(format!("{name}: `{file}`"));
            }
        }
    }
    assert!(checked > 30, "the documents were read ({checked} paths)");
    assert!(
        missing.is_empty(),
        "paths the documents quote that do not exist:\n{}",
        missing.join("\n")
    );
}
