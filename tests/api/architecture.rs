//! The layering of `docs/ARCHITECTURE.md`, held against the code as a Rust parser reads
//! it (`architecture/reader.rs`: syn, every path that names the crate, wherever it is):
//!
//! - every module reaches only the modules its row of the table (between the
//!   `layers:begin` and `layers:end` markers) allows, and the table has no cycle;
//! - no module reaches an item of a module it is part of (an arrow running back up:
//!   `http::cart` using `http::AppState`), and no modules reach each other in a circle;
//! - handlers leave SQL to the stores: in `http/`, of sqlx only the types that carry a
//!   connection to a store or its error;
//! - the tools' crate (`crates/lab`) uses of the service only what its row allows.
//!
//! Change the table and the code together, or these tests fail.

pub mod reader;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use self::reader::{Crate, ModulePath, Reading, Reference};

type Layers = BTreeMap<String, BTreeSet<String>>;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The service's sources, with the paths of sqlx (for the handlers' rule).
fn service() -> Reading {
    Crate {
        src: repo_file("src"),
        lib_name: "ecommerce_monolith".into(),
        others: vec!["sqlx".into()],
    }
    .read()
}

/// The tools' sources, with the paths that name the service.
fn tools() -> Reading {
    Crate {
        src: repo_file("crates/lab/src"),
        lib_name: "ecommerce_lab".into(),
        others: vec!["ecommerce_monolith".into()],
    }
    .read()
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

fn place(reference: &Reference) -> String {
    format!(
        "{}:{}",
        reference
            .file
            .strip_prefix(repo_file(""))
            .unwrap_or(&reference.file)
            .display(),
        reference.line
    )
}

/// The references of the crate to itself that cross from one top-level module to
/// another and are not in the table.
fn forbidden_edges(reading: &Reading, layers: &Layers) -> Vec<String> {
    reading
        .references
        .iter()
        .filter(|r| r.krate.is_none())
        .filter_map(|r| {
            let (from, to) = (r.from.first()?, r.to.first()?);
            let allowed = from == to || layers.get(from).is_some_and(|a| a.contains(to));
            (!allowed).then(|| {
                format!(
                    "{}: `{from}` reaches `{}`, which docs/ARCHITECTURE.md does not allow \
                     ({from} may import: {:?})",
                    place(r),
                    r.to.join("::"),
                    layers.get(from).cloned().unwrap_or_default()
                )
            })
        })
        .collect()
}

/// The module a reference lands in: the longest prefix of its path that is a module.
fn landing(reading: &Reading, to: &[String]) -> ModulePath {
    (0..=to.len())
        .rev()
        .map(|n| to[..n].to_vec())
        .find(|prefix| reading.modules.contains(prefix))
        .unwrap_or_default()
}

type Arrows = BTreeMap<ModulePath, BTreeSet<ModulePath>>;

/// Which modules each module reaches: the arrows of the code. A `mod x;` declaration
/// is not a reach; a path into another module (its own descendants included) is.
fn arrows(reading: &Reading) -> Arrows {
    let mut arrows = Arrows::new();
    for r in reading.references.iter().filter(|r| r.krate.is_none()) {
        let to = landing(reading, &r.to);
        if to != r.from {
            arrows.entry(r.from.clone()).or_default().insert(to);
        }
    }
    arrows
}

/// A circle of modules reaching each other, if there is one. A module in a circle
/// with a module it is part of is an arrow running back up: `http` reaching
/// `http::cart`'s router while `http::cart` reaches `http`'s `AppState`.
fn circle(arrows: &Arrows) -> Option<Vec<String>> {
    fn visit(
        at: &ModulePath,
        arrows: &Arrows,
        path: &mut Vec<ModulePath>,
        done: &mut BTreeSet<ModulePath>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == at) {
            let mut found: Vec<String> = path[start..].iter().map(|m| m.join("::")).collect();
            found.push(at.join("::"));
            return Some(found);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.clone());
        for next in arrows.get(at).into_iter().flatten() {
            if let Some(found) = visit(next, arrows, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(at.clone());
        None
    }
    let mut done = BTreeSet::new();
    arrows
        .keys()
        .find_map(|m| visit(m, arrows, &mut Vec::new(), &mut done))
}

/// Where a circle is made: one reference per arrow of it, to say where to cut it.
fn references_of_circle(reading: &Reading, circle: &[String]) -> Vec<String> {
    circle
        .windows(2)
        .filter_map(|pair| {
            reading
                .references
                .iter()
                .filter(|r| r.krate.is_none() && r.from.join("::") == pair[0])
                .find(|r| landing(reading, &r.to).join("::") == pair[1])
                .map(|r| format!("{}: `{}` reaches `{}`", place(r), pair[0], r.to.join("::")))
        })
        .collect()
}

/// Panics with every circle, and where each of its arrows is, if the code has any: one
/// circle, cut, and the next one found, until none is left.
fn assert_no_circle(reading: &Reading) {
    let mut arrows = arrows(reading);
    let mut found = Vec::new();
    while let Some(one) = circle(&arrows) {
        found.push(format!(
            "{}\n{}",
            one.join(" -> "),
            references_of_circle(reading, &one).join("\n")
        ));
        // Cut its last arrow and look again.
        let (from, to) = (&one[one.len() - 2], &one[one.len() - 1]);
        let split = |m: &str| -> ModulePath { m.split("::").map(String::from).collect() };
        if let Some(targets) = arrows.get_mut(&split(from)) {
            targets.remove(&split(to));
        }
    }
    assert!(
        found.is_empty(),
        "modules reach each other in a circle:\n\n{}",
        found.join("\n\n")
    );
}

/// The sqlx items a handler may name: the connection it hands to a store, and the
/// error it turns into a problem. Anything else — a query, an executor, a pool — is
/// SQL in a handler.
const SQLX_IN_HANDLERS: [&str; 4] = ["Error", "PgConnection", "Postgres", "Transaction"];

fn sql_in_handlers(reading: &Reading) -> Vec<String> {
    reading
        .references
        .iter()
        .filter(|r| r.from.first().is_some_and(|m| m == "http"))
        .filter(|r| r.krate.as_deref() == Some("sqlx"))
        .filter(|r| {
            !r.to
                .first()
                .is_some_and(|item| SQLX_IN_HANDLERS.contains(&item.as_str()))
        })
        .map(|r| {
            format!(
                "{}: a handler uses `sqlx::{}`; put the statement in its store",
                place(r),
                r.to.join("::")
            )
        })
        .collect()
}

#[test]
fn every_reference_follows_the_documented_layers() {
    let layers = documented_layers();
    assert!(layers.len() > 15, "the table was not found: {layers:?}");
    assert!(
        layers["domain"].is_empty(),
        "the domain imports nothing of the crate"
    );
    let reading = service();
    assert!(reading.references.len() > 500, "the sources were read");
    let forbidden = forbidden_edges(&reading, &layers);
    assert!(forbidden.is_empty(), "\n{}\n", forbidden.join("\n"));
}

#[test]
fn no_modules_reach_each_other_in_a_circle_nor_an_arrow_back_up() {
    assert_no_circle(&service());
}

#[test]
fn the_documented_layers_have_no_cycle_and_name_real_modules() {
    let layers = documented_layers();
    let table: Arrows = layers
        .iter()
        .map(|(m, allowed)| {
            (
                vec![m.clone()],
                allowed.iter().map(|a| vec![a.clone()]).collect(),
            )
        })
        .collect();
    assert_eq!(circle(&table), None, "the table has a cycle");
    let reading = service();
    let top_level: BTreeSet<String> = reading
        .modules
        .iter()
        .filter(|m| m.len() == 1)
        .map(|m| m[0].clone())
        .chain(["main".to_string()])
        .collect();
    // The tools' crate has a row of its own; its names are the service's modules.
    let service_rows = layers.keys().filter(|m| *m != "ecommerce-lab");
    for module in layers.values().flatten().chain(service_rows) {
        assert!(
            top_level.contains(module),
            "the table names `{module}`, which src/ does not have"
        );
    }
    for module in &top_level {
        assert!(
            layers.contains_key(module.as_str()),
            "`{module}` is missing from the table"
        );
    }
}

#[test]
fn handlers_leave_sql_to_the_stores() {
    let reading = service();
    let sql = sql_in_handlers(&reading);
    assert!(sql.is_empty(), "\n{}\n", sql.join("\n"));
}

#[test]
fn the_tools_use_only_what_their_row_allows_of_the_service() {
    let layers = documented_layers();
    let allowed = &layers["ecommerce-lab"];
    let reading = tools();
    let uses: Vec<&Reference> = reading
        .references
        .iter()
        .filter(|r| r.krate.as_deref() == Some("ecommerce_monolith"))
        .collect();
    assert!(!uses.is_empty(), "the tools' crate was read");
    let forbidden: Vec<String> = uses
        .iter()
        .filter(|r| !r.to.first().is_some_and(|m| allowed.contains(m)))
        .map(|r| format!("{}: the tools reach `{}`", place(r), r.to.join("::")))
        .collect();
    assert!(forbidden.is_empty(), "\n{}\n", forbidden.join("\n"));
    assert_no_circle(&reading);
}

/// The shapes that fooled the hand-written reader this replaced, each as a file of a
/// small crate, and what the reader must make of it.
mod the_reader {
    use super::*;

    /// The references of `source` as the file of `module` in a crate whose modules
    /// are `modules`.
    fn read(module: &[&str], modules: &[&[&str]], source: &str) -> Reading {
        let module: ModulePath = module.iter().map(|s| s.to_string()).collect();
        let modules: BTreeSet<ModulePath> = modules
            .iter()
            .map(|m| m.iter().map(|s| s.to_string()).collect())
            .collect();
        let krate = Crate {
            src: repo_file("src"),
            lib_name: "ecommerce_monolith".into(),
            others: vec!["sqlx".into()],
        };
        let parsed = syn::parse_file(source).expect("Rust");
        let references = krate.references_in(Path::new("scratch.rs"), &module, &parsed, &modules);
        Reading {
            modules,
            references,
            ..Reading::default()
        }
    }

    fn layers() -> Layers {
        [
            ("domain", vec![]),
            ("http", vec!["domain"]),
            ("checkout", vec!["domain"]),
        ]
        .into_iter()
        .map(|(m, a)| (m.to_string(), a.into_iter().map(String::from).collect()))
        .collect()
    }

    const MODULES: &[&[&str]] = &[
        &["domain"],
        &["http"],
        &["checkout"],
        &["checkout", "jobs"],
        &["checkout", "steps"],
    ];

    #[test]
    fn a_quote_in_a_char_literal_hides_nothing() {
        let reading = read(
            &["domain"],
            MODULES,
            "const QUOTE: char = '\"';\nuse crate::http::router;\n",
        );
        let forbidden = forbidden_edges(&reading, &layers());
        assert_eq!(forbidden.len(), 1, "{forbidden:?}");
        assert!(forbidden[0].contains("`domain` reaches `http::router`"));
    }

    #[test]
    fn a_raw_string_with_quotes_hides_nothing_and_is_not_code() {
        let source = "const SAID: &str = r#\"say \"crate::http::x\"\"#;\n\
                      fn f() { crate::http::router(); }\n";
        let reading = read(&["domain"], MODULES, source);
        let reached: Vec<String> = reading.references.iter().map(|r| r.to.join("::")).collect();
        assert_eq!(reached, ["http::router"], "the call, not the string");
        assert_eq!(forbidden_edges(&reading, &layers()).len(), 1);
    }

    #[test]
    fn super_super_in_an_expression_is_resolved() {
        let reading = read(
            &["checkout", "jobs"],
            MODULES,
            "fn f() { super::super::http::router(); }",
        );
        let forbidden = forbidden_edges(&reading, &layers());
        assert_eq!(forbidden.len(), 1, "{forbidden:?}");
        assert!(forbidden[0].contains("`checkout` reaches `http::router`"));
    }

    #[test]
    fn paths_in_types_macros_and_attributes_are_read() {
        let source = "fn f(_: crate::http::AppState) {}\n\
                      fn g() { tracing::info!(x = %crate::http::y(), \"{}\", 1); }\n\
                      #[utoipa::path(get, responses((status = 200, body = crate::http::Z)))]\n\
                      fn h() {}\n";
        let reading = read(&["domain"], MODULES, source);
        let reached: BTreeSet<String> =
            reading.references.iter().map(|r| r.to.join("::")).collect();
        assert_eq!(
            reached,
            ["http::AppState", "http::Z", "http::y"]
                .map(String::from)
                .into()
        );
    }

    #[test]
    fn reaching_a_parent_that_reaches_back_is_an_arrow_back_up() {
        // `checkout` uses a step of `checkout::steps`, which uses `checkout`'s own item.
        let parent = read(&["checkout"], MODULES, "fn f() { steps::validate_cart(); }");
        let child = read(&["checkout", "steps"], MODULES, "use super::Checkout;");
        let both = Reading {
            modules: parent.modules.clone(),
            references: parent
                .references
                .into_iter()
                .chain(child.references)
                .collect(),
            ..Reading::default()
        };
        let found = circle(&arrows(&both)).expect("a circle");
        assert_eq!(found, ["checkout", "checkout::steps", "checkout"]);
        // Through a sibling instead, nothing runs back up.
        let sibling = read(
            &["checkout", "jobs"],
            MODULES,
            "use super::steps::validate_cart;",
        );
        assert_eq!(circle(&arrows(&sibling)), None);
    }

    #[test]
    fn test_modules_are_left_out() {
        let source = "#[cfg(test)]\nmod tests { use super::*; use crate::http::x; }\n";
        let reading = read(&["domain"], MODULES, source);
        assert!(reading.references.is_empty(), "{:?}", reading.references);
    }

    #[test]
    fn any_sqlx_item_but_a_connection_or_its_error_is_sql_in_a_handler() {
        let source = "use sqlx::PgConnection;\nuse sqlx::query_as;\n\
                      fn f() -> Result<(), sqlx::Error> { let _ = sqlx::query(\"SELECT 1\"); Ok(()) }\n";
        let reading = read(&["http"], MODULES, source);
        let sql = sql_in_handlers(&reading);
        assert_eq!(sql.len(), 2, "{sql:?}");
        assert!(sql.iter().any(|s| s.contains("sqlx::query_as")));
        assert!(sql.iter().any(|s| s.contains("sqlx::query`")));
    }
}
