//! Reads a crate's sources with a Rust parser (syn) and resolves every path that names
//! the crate (or another crate given by name) to the module path it reaches: in `use`
//! items, in expressions, types, patterns and attributes, and in the tokens of macro
//! calls (`tracing::info!("{}", crate::x::y())` names `x`). String literals, raw or
//! not, and comments are not code, whatever quotes they hold. `#[cfg(test)]` modules are
//! left out: a test module reaching into its parent is how Rust tests are written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// A module's path in its crate: `["http", "cart"]` for `src/http/cart.rs`, `[]` for
/// the library's root. The binary's `main.rs` is `["main"]`.
pub type ModulePath = Vec<String>;

/// One path of the code that names a module of a crate, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The module whose code holds the path.
    pub from: ModulePath,
    /// The crate it names: `None` for the crate itself, else the other crate's name.
    pub krate: Option<String>,
    /// What it reaches in that crate, from its root: `["db", "Database"]`.
    pub to: Vec<String>,
    pub file: PathBuf,
    pub line: usize,
}

/// A crate's sources: the root folder (its `src/`), and how it calls itself and the
/// other crates whose paths are of interest.
pub struct Crate {
    pub src: PathBuf,
    /// The library's name, as its binary (`main.rs`) spells it: `ecommerce_monolith`.
    pub lib_name: String,
    /// Other crates whose paths are recorded too: `sqlx`, `ecommerce_monolith`.
    pub others: Vec<String>,
}

/// A crate read whole: its modules, every reference of its code, and what it defines.
#[derive(Default)]
pub struct Reading {
    pub modules: BTreeSet<ModulePath>,
    pub references: Vec<Reference>,
    /// The names each module defines or re-exports (functions, types, constants,
    /// macros, `pub use`d names).
    pub items: BTreeMap<ModulePath, BTreeSet<String>>,
    /// The members of each type, by the type's name: its methods and associated items
    /// (any `impl` of it), its variants.
    pub members: BTreeMap<String, BTreeSet<String>>,
}

impl Crate {
    pub fn read(&self) -> Reading {
        let files = rust_files(&self.src);
        let sources: Vec<(PathBuf, ModulePath, syn::File)> = files
            .into_iter()
            .map(|file| {
                let text = std::fs::read_to_string(&file).expect("read a source file");
                let parsed = syn::parse_file(&text)
                    .unwrap_or_else(|e| panic!("{}: not Rust: {e}", file.display()));
                let module = module_of(&self.src, &file);
                (file, module, parsed)
            })
            .collect();
        let mut modules: BTreeSet<ModulePath> = BTreeSet::new();
        for (_, module, parsed) in &sources {
            modules.insert(module.clone());
            inline_modules(module, &parsed.items, &mut modules);
        }
        let mut reading = Reading::default();
        for (file, module, parsed) in &sources {
            reading
                .references
                .extend(self.references_in(file, module, parsed, &modules));
            definitions(module, &parsed.items, &mut reading);
        }
        reading.modules = modules;
        reading
    }

    /// The references of one parsed file that is module `module`.
    pub fn references_in(
        &self,
        file: &Path,
        module: &[String],
        parsed: &syn::File,
        modules: &BTreeSet<ModulePath>,
    ) -> Vec<Reference> {
        let mut reader = Reader {
            krate: self,
            modules,
            file: file.to_path_buf(),
            current: module.to_vec(),
            found: Vec::new(),
        };
        reader.visit_file(parsed);
        reader.found
    }
}

/// Every module declared inline (`mod x { … }`) in `items` of `module`, but tests'.
fn inline_modules(module: &[String], items: &[syn::Item], found: &mut BTreeSet<ModulePath>) {
    for item in items {
        if let syn::Item::Mod(inner) = item
            && !is_test_only(&inner.attrs)
        {
            let mut path = module.to_vec();
            path.push(name(&inner.ident));
            found.insert(path.clone());
            if let Some((_, items)) = &inner.content {
                inline_modules(&path, items, found);
            }
        }
    }
}

/// What `items` of `module` define, into `reading` (inline modules too).
fn definitions(module: &[String], items: &[syn::Item], reading: &mut Reading) {
    let mut names: Vec<String> = Vec::new();
    let mut inner = Vec::new();
    for item in items {
        match item {
            syn::Item::Const(i) => names.push(name(&i.ident)),
            syn::Item::Enum(i) => {
                names.push(name(&i.ident));
                let variants = reading.members.entry(name(&i.ident)).or_default();
                variants.extend(i.variants.iter().map(|v| name(&v.ident)));
            }
            syn::Item::Fn(i) => names.push(name(&i.sig.ident)),
            syn::Item::Macro(i) => names.extend(i.ident.as_ref().map(name)),
            syn::Item::Mod(i) => {
                names.push(name(&i.ident));
                if let Some((_, items)) = &i.content {
                    inner.push((name(&i.ident), items));
                }
            }
            syn::Item::Static(i) => names.push(name(&i.ident)),
            syn::Item::Struct(i) => names.push(name(&i.ident)),
            syn::Item::Trait(i) => names.push(name(&i.ident)),
            syn::Item::Type(i) => names.push(name(&i.ident)),
            syn::Item::Union(i) => names.push(name(&i.ident)),
            syn::Item::Use(i) => use_leaves(&i.tree, &mut names),
            syn::Item::Impl(i) => {
                if let syn::Type::Path(path) = &*i.self_ty
                    && let Some(last) = path.path.segments.last()
                {
                    let members = reading.members.entry(name(&last.ident)).or_default();
                    for member in &i.items {
                        match member {
                            syn::ImplItem::Fn(f) => members.insert(name(&f.sig.ident)),
                            syn::ImplItem::Const(c) => members.insert(name(&c.ident)),
                            syn::ImplItem::Type(t) => members.insert(name(&t.ident)),
                            _ => false,
                        };
                    }
                }
            }
            _ => {}
        }
    }
    reading
        .items
        .entry(module.to_vec())
        .or_default()
        .extend(names);
    for (child, items) in inner {
        let mut path = module.to_vec();
        path.push(child);
        definitions(&path, items, reading);
    }
}

/// The names a `use` makes visible (`a::b::{C, D as E}` → C, E).
fn use_leaves(tree: &syn::UseTree, out: &mut Vec<String>) {
    match tree {
        syn::UseTree::Path(path) => use_leaves(&path.tree, out),
        syn::UseTree::Name(leaf) => out.push(name(&leaf.ident)),
        syn::UseTree::Rename(rename) => out.push(name(&rename.rename)),
        syn::UseTree::Glob(_) => {}
        syn::UseTree::Group(group) => group.items.iter().for_each(|t| use_leaves(t, out)),
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .meta
                .require_list()
                .is_ok_and(|list| list.tokens.to_string().trim() == "test")
    })
}

/// An identifier's name, without the `r#` of a raw one.
fn name(ident: &proc_macro2::Ident) -> String {
    ident.to_string().trim_start_matches("r#").to_string()
}

struct Reader<'a> {
    krate: &'a Crate,
    modules: &'a BTreeSet<ModulePath>,
    file: PathBuf,
    current: ModulePath,
    found: Vec<Reference>,
}

impl Reader<'_> {
    /// Resolves a path's segments as written in the current module, and records it if
    /// it names this crate or one of the others.
    fn record(&mut self, segments: &[String], line: usize) {
        let Some(first) = segments.first() else {
            return;
        };
        let in_binary = self.current.first().is_some_and(|m| m == "main");
        let (krate, to): (Option<String>, Vec<String>) = match first.as_str() {
            // In the binary, `crate::` is the binary itself, which the table calls main.
            "crate" | "$crate" if in_binary => {
                (None, with_prefix(&["main".to_string()], &segments[1..]))
            }
            "crate" | "$crate" => (None, segments[1..].to_vec()),
            "self" => (None, with_prefix(&self.current, &segments[1..])),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                let Some(base) = self.current.len().checked_sub(ups) else {
                    return; // above the crate's root: not a path of the crate
                };
                (None, with_prefix(&self.current[..base], &segments[ups..]))
            }
            name if name == self.krate.lib_name => (None, segments[1..].to_vec()),
            name if self.krate.others.iter().any(|o| o == name) => {
                (Some(name.to_string()), segments[1..].to_vec())
            }
            // A child module named without `self::` (Rust 2018's relative paths).
            name if self
                .modules
                .contains(&with_prefix(&self.current, &[name.to_string()])) =>
            {
                (None, with_prefix(&self.current, segments))
            }
            _ => return,
        };
        self.found.push(Reference {
            from: self.current.clone(),
            krate,
            to,
            file: self.file.clone(),
            line,
        });
    }

    /// Every path in a macro's tokens: runs of `name :: name …` (and `$crate :: …`),
    /// in groups at any depth. String literals are single tokens: never read.
    fn record_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            if let TokenTree::Group(group) = &tokens[i] {
                if group.delimiter() != Delimiter::None || !group.stream().is_empty() {
                    self.record_tokens(group.stream());
                }
                i += 1;
                continue;
            }
            // `$crate`: a `$` then the ident `crate`.
            let (start, mut segments, line) = match (&tokens[i], tokens.get(i + 1)) {
                (TokenTree::Punct(dollar), Some(TokenTree::Ident(krate)))
                    if dollar.as_char() == '$' && krate == "crate" =>
                {
                    (i + 2, vec!["$crate".to_string()], krate.span().start().line)
                }
                (TokenTree::Ident(ident), _) => {
                    // Not the tail of a longer path (`a::b` read from `b`).
                    let after_colons = i >= 2 && is_colon_pair(&tokens[i - 2], &tokens[i - 1]);
                    if after_colons {
                        i += 1;
                        continue;
                    }
                    (i + 1, vec![name(ident)], ident.span().start().line)
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            let mut j = start;
            loop {
                match (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2)) {
                    (Some(a), Some(b), Some(TokenTree::Ident(next))) if is_colon_pair(a, b) => {
                        segments.push(name(next));
                        j += 3;
                    }
                    _ => break,
                }
            }
            if segments.len() > 1 {
                self.record(&segments, line);
            }
            i = j.max(i + 1);
        }
    }
}

fn is_colon_pair(first: &TokenTree, second: &TokenTree) -> bool {
    matches!((first, second), (TokenTree::Punct(a), TokenTree::Punct(b))
        if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
}

fn with_prefix(prefix: &[String], rest: &[String]) -> Vec<String> {
    prefix.iter().chain(rest).cloned().collect()
}

impl<'ast> Visit<'ast> for Reader<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if is_test_only(&item.attrs) {
            return;
        }
        self.current.push(name(&item.ident));
        visit::visit_item_mod(self, item);
        self.current.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        fn flatten(
            tree: &syn::UseTree,
            prefix: &mut Vec<String>,
            out: &mut Vec<(Vec<String>, usize)>,
        ) {
            match tree {
                syn::UseTree::Path(path) => {
                    prefix.push(name(&path.ident));
                    flatten(&path.tree, prefix, out);
                    prefix.pop();
                }
                syn::UseTree::Name(leaf) => {
                    let mut full = prefix.clone();
                    // `use crate::db::{self, Database}`: `self` is the prefix itself.
                    if leaf.ident != "self" {
                        full.push(name(&leaf.ident));
                    }
                    out.push((full, leaf.ident.span().start().line));
                }
                syn::UseTree::Rename(rename) => {
                    let mut full = prefix.clone();
                    full.push(name(&rename.ident));
                    out.push((full, rename.ident.span().start().line));
                }
                syn::UseTree::Glob(glob) => {
                    out.push((prefix.clone(), glob.star_token.span.start().line));
                }
                syn::UseTree::Group(group) => {
                    for tree in &group.items {
                        flatten(tree, prefix, out);
                    }
                }
            }
        }
        let mut paths = Vec::new();
        flatten(&item.tree, &mut Vec::new(), &mut paths);
        for (segments, line) in paths {
            self.record(&segments, line);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| name(&s.ident)).collect();
        let line = path
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        if segments.len() > 1 {
            self.record(&segments, line);
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.record_tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }

    /// An attribute's arguments are tokens too: `#[utoipa::path(…, body = x::Y)]`.
    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        if let syn::Meta::List(list) = &attr.meta {
            self.record_tokens(list.tokens.clone());
        }
        visit::visit_attribute(self, attr);
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("read a source folder")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The module a file of `src` is: `src/http/cart.rs` → `["http", "cart"]`,
/// `src/http/mod.rs` → `["http"]`, `src/lib.rs` → `[]`, `src/main.rs` → `["main"]`.
pub fn module_of(src: &Path, file: &Path) -> ModulePath {
    let relative = file.strip_prefix(src).expect("a file under src/");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    match parts.last().map(String::as_str) {
        Some("lib") if parts.len() == 1 => Vec::new(),
        Some("main") if parts.len() == 1 => parts,
        Some("mod") => {
            parts.pop();
            parts
        }
        _ => parts,
    }
}
