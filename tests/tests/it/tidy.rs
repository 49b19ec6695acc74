//! Tidy checks over the workspace's sources (after rust-analyzer's `tidy.rs`): the layer rule
//! of every crate, inside its folders too, a `//!` line at the top of every file, and one
//! place that opens SQLite.
//!
//! They read the repository's files and write nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The one file that opens SQLite connections.
const OPENS_SQLITE: &str = "crates/hive-db-core/src/open.rs";

/// Files that open SQLite another way on purpose, and why.
const OPENS_SQLITE_TOO: &[(&str, &str)] = &[
    (
        "crates/hive-bench/src/bench/baselines.rs",
        "the r2d2 and deadpool pools the registry is measured against open their own connections",
    ),
    (
        "crates/hive-bench/src/asynch/clients.rs",
        "the async clients the registry's async API is measured against open their own \
         connections",
    ),
    (
        "crates/ecosystemiser-db/src/bin/eco-move/source.rs",
        "eco-move opens the source read-only to snapshot it (VACUUM INTO), and must never write \
         to the database it moves; it reads the snapshot through open_connection",
    ),
    (
        "crates/db-monitor/src/file.rs",
        "db-monitor inspects files read-only; the core's connection setup writes (the WAL switch) \
         and the monitor must never write to a database it watches",
    ),
];

/// What counts as opening SQLite.
const OPENING: &[&str] = &[
    "Connection::open",
    "SqliteConnectionManager::file",
    "SqliteConnectionManager::memory",
    "deadpool_sqlite::Config",
    "async_sqlite::PoolBuilder",
    "SqliteConnectOptions",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, sorted, skipping `target`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The code of a source file that the rules apply to: comments blanked, and everything from
/// its unit-test module on dropped.
fn code_of(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crates that keep the layer rule. Each declares its layers in its section of
/// docs/ARCHITECTURE.md (the one headed `### \`crates/NAME\``), in a fenced block marked
/// `layers`:
///
/// ```text
/// crate: sync clock      # the top-level modules' lowest layer
/// crate: pool            # the next one up
/// pool: slot maintenance # the lowest layer of the files of the folder `pool/`
/// pool: shared
/// ```
///
/// Each line is `SCOPE: MODULES`: the scope is `crate` (the modules next to `lib.rs` or
/// `main.rs`) or a folder (`pool`, `schema/adopt`); a scope's lines are its layers, lowest
/// first. A `#` starts a comment.
///
/// The rule, for every path a file names (`use crate::a::b`, `super::x`, `self::y`, a bare
/// `child::f()` in a `mod.rs`, groups `{a, b::c}` included): where the importing module and
/// the imported one part (`pool/leak` and `pool/shared` part inside `pool`; `loadtest/store`
/// and `bench/baselines` part at the crate's top level), the importer's side must be on a
/// higher layer of that scope than the imported side, or on the same layer without closing
/// a circle. Modules of one layer may use each other one way (`lane` uses `sync`), so that
/// adding a use never means reordering a line; any circle among them is reported with the
/// imports that close it. Every module must be on a line, and every name on a line must be
/// a module.
///
/// Roots are on no line. The crate root (`lib.rs`, `main.rs`) may use anything and is no
/// module to import from (name the module that defines an item, not a re-export). A folder's
/// `mod.rs` is its folder's root: it may use its files (`mod` is the importer's side), or its
/// files may use it (the type they extend with `impl` blocks, as `pool/checkout.rs` extends
/// `Pool`), but not both ways: a circle through a `mod.rs` is reported like one within a
/// layer. Its re-exports of its files' items (`pub use file::Item`) are naming, not use. Unit
/// tests (a `#[cfg(test)] mod tests` at the bottom of a file, or a test module's own file)
/// may use anything.
///
/// Every crate is checked and every violation collected before the test fails, so one
/// crate's violations never hide another's.
const LAYERED: &[&str] = &[
    "hive-db-core",
    "ecosystemiser-db",
    "db-monitor",
    "hive-bench",
    "pg-harness",
];

/// A module's path from the crate root: `["pool", "leak"]`; `[]` is the root.
type ModPath = Vec<String>;

/// The scopes' layers of one crate, as its block declares them.
#[derive(Debug, Default)]
struct Layers {
    /// Per scope (`""` for the top level, `"pool"`, `"schema/adopt"`): its lines, lowest
    /// first.
    scopes: BTreeMap<String, Vec<Vec<String>>>,
}

impl Layers {
    /// The layers block in the section of `doc` headed `### \`crates/{krate}\``.
    fn parse(doc: &str, krate: &str) -> Result<Self, String> {
        let heading = format!("\n### `crates/{krate}`\n");
        let where_ = format!("docs/ARCHITECTURE.md, section `crates/{krate}`");
        let start = doc
            .find(&heading)
            .ok_or_else(|| format!("{where_}: no such heading"))?;
        let section = &doc[start + heading.len()..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        let section = &section[..section.find("\n### ").unwrap_or(section.len())];
        let block = section
            .split_once("```layers\n")
            .and_then(|(_, rest)| rest.split_once("\n```"))
            .map(|(block, _)| block)
            .ok_or_else(|| format!("{where_}: no ```layers block"))?;
        let mut layers = Self::default();
        for line in block.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (scope, modules) = line
                .split_once(':')
                .ok_or_else(|| format!("{where_}: `{line}` is not `SCOPE: MODULES`"))?;
            let scope = match scope.trim() {
                "crate" => String::new(),
                folder => folder.trim_end_matches('/').to_owned(),
            };
            let modules: Vec<String> = modules.split_whitespace().map(str::to_owned).collect();
            layers.scopes.entry(scope).or_default().push(modules);
        }
        Ok(layers)
    }

    /// The layer (from 0) of `name` in `scope`.
    fn rank(&self, scope: &str, name: &str) -> Option<usize> {
        self.scopes
            .get(scope)?
            .iter()
            .position(|l| l.iter().any(|m| m == name))
    }
}

/// `pool/leak.rs` is `["pool", "leak"]`, `pool/mod.rs` is `["pool"]`, `lib.rs` is `[]`.
fn module_path(rel: &str) -> ModPath {
    let mut path: ModPath = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if path.last().is_some_and(|m| m == "mod") || rel == "lib.rs" || rel == "main.rs" {
        path.pop();
    }
    path
}

fn scope_name(scope: &[String]) -> String {
    scope.join("/")
}

fn scope_label(scope: &[String]) -> String {
    match scope {
        [] => "the crate's top level".to_owned(),
        _ => format!("`{}/`", scope_name(scope)),
    }
}

/// The paths `s` starts with, groups expanded: `a::{b, c::d}` is `[a, b]` and `[a, c, d]`;
/// a glob ends its path.
fn paths(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        let mut out = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.extend(paths(&group[start..i]));
                    return out;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(paths(&group[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        return out;
    }
    if s.starts_with('*') {
        return vec![Vec::new()];
    }
    let name: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() {
        return Vec::new();
    }
    match s[name.len()..].trim_start().strip_prefix("::") {
        Some(rest) => paths(rest)
            .into_iter()
            .map(|mut p| {
                p.insert(0, name.clone());
                p
            })
            .collect(),
        None => vec![vec![name]],
    }
}

/// The module `path` (as written in module `from`) names: its longest prefix that is a
/// module of the crate.
fn resolve(from: &[String], path: &[String], known: &BTreeSet<ModPath>) -> ModPath {
    let mut at = from.to_vec();
    let mut rest = path;
    while let Some((first, tail)) = rest.split_first() {
        match first.as_str() {
            "crate" => at.clear(),
            "super" => {
                at.pop();
            }
            "self" => {}
            _ => break,
        }
        rest = tail;
    }
    for segment in rest {
        at.push(segment.clone());
        if !known.contains(&at) {
            at.pop();
            break;
        }
    }
    at
}

/// A path into the crate that a file names.
struct Import {
    /// As written, groups expanded: `super::shared::PoolShared`.
    text: String,
    /// The module it names.
    target: ModPath,
    /// Inside a re-export (`pub use`, `pub(crate) use`).
    reexport: bool,
}

/// The paths into the crate that `code`, the code of module `from`, names.
fn imports(code: &str, from: &[String], known: &BTreeSet<ModPath>) -> Vec<Import> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut reexports = Vec::new();
    for statement in ["pub use ", "pub(crate) use ", "pub(super) use "] {
        for (start, _) in code.match_indices(statement) {
            let end = code[start..].find(';').map_or(code.len(), |n| start + n);
            reexports.push(start..end);
        }
    }
    let mut out = Vec::new();
    let mut prev = ' ';
    for (i, c) in code.char_indices() {
        let starts = is_ident(c) && !is_ident(prev) && prev != ':' && prev != '.';
        prev = c;
        if !starts {
            continue;
        }
        let rest = &code[i..];
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if !rest[name.len()..].starts_with("::") {
            continue;
        }
        let mut child = from.to_vec();
        child.push(name.clone());
        if !["crate", "super", "self"].contains(&name.as_str()) && !known.contains(&child) {
            continue;
        }
        let reexport = reexports.iter().any(|r| r.contains(&i));
        for path in paths(rest) {
            out.push(Import {
                text: path.join("::"),
                target: resolve(from, &path, known),
                reexport,
            });
        }
    }
    out
}

/// A use that is allowed unless it closes a circle: of a module of the same layer, of a
/// lower one, or between a folder's `mod.rs` (`mod`) and one of its files.
struct Use {
    scope: ModPath,
    from: String,
    to: String,
    file: String,
    import: String,
}

/// The layer rule's violations in crate `krate`, whose source files are `files` (paths
/// relative to `src`, and their text), against its block in `doc`.
fn layer_problems(krate: &str, doc: &str, files: &[(String, String)]) -> Vec<String> {
    let layers = match Layers::parse(doc, krate) {
        Ok(layers) => layers,
        Err(e) => return vec![e],
    };
    let display = |rel: &str| format!("crates/{krate}/src/{rel}");
    // Test modules in files of their own (`#[cfg(test)] mod tests;`) may use anything.
    let mut tests = BTreeSet::new();
    for (rel, text) in files {
        let mut rest = text.as_str();
        while let Some(i) = rest.find("#[cfg(test)]\nmod ") {
            rest = &rest[i + "#[cfg(test)]\nmod ".len()..];
            if let Some((name, _)) = rest.split_once(';') {
                let mut path = module_path(rel);
                path.push(name.trim().to_owned());
                tests.insert(path);
            }
        }
    }
    let sources: Vec<(&String, ModPath, &String)> = files
        .iter()
        .map(|(rel, text)| (rel, module_path(rel), text))
        .filter(|(_, m, _)| !tests.iter().any(|t| m.starts_with(t)))
        .collect();
    let known: BTreeSet<ModPath> = sources.iter().map(|(_, m, _)| m.clone()).collect();
    let mut problems = Vec::new();
    for (scope, lines) in &layers.scopes {
        for name in lines.iter().flatten() {
            let mut path: ModPath = scope
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            path.push(name.clone());
            if !known.contains(&path) {
                problems.push(format!(
                    "docs/ARCHITECTURE.md, layers of crates/{krate}: `{}: {name}` names no module",
                    if scope.is_empty() { "crate" } else { scope }
                ));
            }
        }
    }
    let mut uses = Vec::new();
    for (rel, module, text) in &sources {
        let Some((name, scope)) = module.split_last() else {
            continue;
        };
        if layers.rank(&scope_name(scope), name).is_none() {
            problems.push(format!(
                "{}: module `{name}` is on no line of {} in the layers block of \
                 docs/ARCHITECTURE.md, section `crates/{krate}`",
                display(rel),
                scope_label(scope)
            ));
        }
        for Import {
            text: import,
            target,
            reexport,
        } in imports(&code_of(text), module, &known)
        {
            if target == *module {
                continue;
            }
            if target.is_empty() {
                problems.push(format!(
                    "{}: `{import}` names the crate root, not a module: import from the \
                     module that defines the item",
                    display(rel)
                ));
                continue;
            }
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            let mod_rs = "mod".to_owned();
            let (from, to) = match (module.get(common), target.get(common)) {
                // A folder's `mod.rs` re-exporting what its files define.
                (None, Some(_)) if reexport => continue,
                // A folder's `mod.rs` and its files: not layered, only never both ways.
                (None, Some(to)) => (&mod_rs, to),
                (Some(from), None) => (from, &mod_rs),
                (Some(from), Some(to)) => (from, to),
                (None, None) => continue,
            };
            let scope = &module[..common];
            let rank = |m: &String| match m.as_str() {
                "mod" => Some(None),
                _ => layers.rank(&scope_name(scope), m).map(Some),
            };
            let (Some(rf), Some(rt)) = (rank(from), rank(to)) else {
                continue; // reported above as a module on no line
            };
            if let (Some(rf), Some(rt)) = (rf, rt)
                && rf < rt
            {
                problems.push(format!(
                    "{}: `{import}`: in {}, `{from}` (layer {}) uses `{to}` (layer {}); a module \
                     may use only modules of lower layers, or of its own without a circle",
                    display(rel),
                    scope_label(scope),
                    rf + 1,
                    rt + 1
                ));
            } else {
                uses.push(Use {
                    scope: scope.to_vec(),
                    from: from.clone(),
                    to: to.clone(),
                    file: display(rel),
                    import,
                });
            }
        }
    }
    problems.extend(circles(&uses));
    problems
}

/// Each circle among `uses` (within one layer, or through a folder's `mod.rs`), once: `a`
/// uses `b` uses `a`.
fn circles(uses: &[Use]) -> Vec<String> {
    let mut reported = BTreeSet::new();
    let mut out = Vec::new();
    for first in uses {
        // The shortest way back from `first.to` to `first.from`, breadth first.
        let mut came_by: BTreeMap<&str, &Use> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([first.to.as_str()]);
        while let Some(at) = queue.pop_front() {
            if at == first.from {
                break;
            }
            for u in uses
                .iter()
                .filter(|u| u.scope == first.scope && u.from == at)
            {
                if u.to != first.to && !came_by.contains_key(u.to.as_str()) {
                    came_by.insert(&u.to, u);
                    queue.push_back(&u.to);
                }
            }
        }
        let mut steps = vec![first];
        let mut at = first.from.as_str();
        while at != first.to {
            let Some(step) = came_by.get(at) else {
                break;
            };
            steps.insert(1, step);
            at = &step.from;
        }
        if at != first.to {
            continue;
        }
        let members: BTreeSet<&str> = steps.iter().map(|s| s.from.as_str()).collect();
        if !reported.insert((first.scope.clone(), members)) {
            continue;
        }
        let name = |m: &str| if m == "mod" { "mod.rs" } else { m }.to_owned();
        let names: Vec<String> = steps.iter().map(|s| name(&s.from)).collect();
        let how: Vec<String> = steps
            .iter()
            .map(|s| format!("{} names `{}`", s.file, s.import))
            .collect();
        out.push(format!(
            "circle in {}: {} -> {}; modules of one layer, and a folder's mod.rs and its files, \
             may use each other only one way ({})",
            scope_label(&first.scope),
            names.join(" -> "),
            name(&first.from),
            how.join("; ")
        ));
    }
    out
}

/// Bug caught: a module importing from a higher layer, or from a module of its own layer
/// that imports it back, anywhere in a crate, folders included: how import circles start.
/// Also a module on no line of its crate's layers block, and a line naming no module.
#[test]
fn modules_import_only_from_lower_layers() {
    let root = workspace();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("readable doc");
    let mut problems = Vec::new();
    for krate in LAYERED {
        let src = root.join("crates").join(krate).join("src");
        let files: Vec<(String, String)> = rust_files(&src)
            .into_iter()
            .map(|f| {
                let rel = f
                    .strip_prefix(&src)
                    .expect("under src")
                    .display()
                    .to_string();
                (rel, std::fs::read_to_string(&f).expect("readable source"))
            })
            .collect();
        problems.extend(layer_problems(krate, &doc, &files));
    }
    assert!(
        problems.is_empty(),
        "layer rule broken (see the `layers` blocks of docs/ARCHITECTURE.md):\n{}",
        problems.join("\n")
    );
}

/// Bug caught: a layer check that passes everything (a parser that finds no imports, a
/// folder's files never compared, a circle inside a layer let through), so the test above
/// could never fail.
#[test]
fn the_layer_check_finds_upward_imports_and_circles() {
    let doc = "\n### `crates/demo`\n\nText.\n\n```layers\ncrate: low # leaves\ncrate: f\n\
               crate: high\nf: a b\nf: c\n```\n\n### `crates/other`\n";
    let file = |rel: &str, text: &str| (rel.to_owned(), text.to_owned());
    let clean = [
        file(
            "lib.rs",
            "mod low;\nmod f;\nmod high;\nuse crate::high::H;\n",
        ),
        file(
            "low.rs",
            "//! Low.\n// crate::high is a comment\nuse other_crate::high::X;\n",
        ),
        file(
            "f/mod.rs",
            "mod a;\nmod b;\nmod c;\npub use c::C;\nfn g() { a::f(); }\n",
        ),
        file("f/a.rs", "use crate::low::L;\nuse super::b::B;\n"),
        file("f/b.rs", "use crate::{low::{self, L}};\n"),
        file("f/c.rs", "use super::{a::A, b::B};\nuse super::Thing;\n"),
        file("high.rs", "use crate::f::C;\nuse crate::low;\n"),
    ];
    assert_eq!(layer_problems("demo", doc, &clean), Vec::<String>::new());

    let mut bad = clean.to_vec();
    // Upward at the top level, upward inside `f/`, upward from `f/mod.rs` (as the folder
    // `f`), a circle inside layer 1 of `f/`, a circle through `f/mod.rs` (which calls
    // `a::f()`), and the crate root named as a module. The upward use inside `f/` hides in a
    // group. (`f/mod.rs` re-exporting what `c` defines while `c` uses `f/mod.rs` is no
    // problem.)
    bad[1].1.push_str("fn x() { crate::f::c::g(); }\n");
    bad[3]
        .1
        .push_str("use super::{b::B, c::C};\nuse super::Thing;\n");
    bad[2].1.push_str("use crate::high::H;\n");
    bad[4].1.push_str("use super::a::A;\nuse crate::Re;\n");
    let problems = layer_problems("demo", doc, &bad);
    let expect = [
        "crates/demo/src/low.rs: `crate::f::c::g`: in the crate's top level, `low` (layer 1) uses `f` (layer 2)",
        "crates/demo/src/f/a.rs: `super::c::C`: in `f/`, `a` (layer 1) uses `c` (layer 2)",
        "crates/demo/src/f/mod.rs: `crate::high::H`: in the crate's top level, `f` (layer 2) uses `high` (layer 3)",
        "crates/demo/src/f/b.rs: `crate::Re` names the crate root",
        "circle in `f/`: a -> b -> a;",
        "circle in `f/`: mod.rs -> a -> mod.rs;",
    ];
    for e in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(e)),
            "{e}\nnot in\n{problems:#?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");

    // A module on no line, a line naming no module, no block at all.
    let mut extra = clean.to_vec();
    extra.push(file("stray.rs", ""));
    let problems = layer_problems("demo", &doc.replace("f: c", "f: c gone"), &extra);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("`f: gone` names no module"));
    assert!(problems[1].starts_with("crates/demo/src/stray.rs: module `stray` is on no line"));
    assert!(layer_problems("other", doc, &clean)[0].contains("no ```layers block"));
}

/// Bug caught: a source file whose purpose is not stated at its top.
#[test]
fn every_source_file_opens_with_a_doc_line() {
    let root = workspace();
    let missing: Vec<_> = ["crates", "tests", "xtask"]
        .iter()
        .flat_map(|d| rust_files(&root.join(d)))
        .filter(|f| {
            !std::fs::read_to_string(f)
                .expect("readable source")
                .starts_with("//!")
        })
        .map(|f| relative(&f))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line:\n{}",
        missing.join("\n")
    );
}

/// Bug caught: a second place that opens SQLite, whose connections would miss the flags and
/// PRAGMAs every other connection gets.
#[test]
fn only_one_file_opens_sqlite() {
    let root = workspace();
    let mut found = Vec::new();
    for file in ["crates", "tests", "xtask"]
        .iter()
        .flat_map(|d| rust_files(&root.join(d)))
    {
        let rel = relative(&file);
        // Integration tests play other processes and broken files: they may.
        if rel.contains("/tests/") || rel == OPENS_SQLITE || rel == "tests/tests/it/tidy.rs" {
            continue;
        }
        if OPENS_SQLITE_TOO.iter().any(|(f, _)| *f == rel) {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).expect("readable source"));
        for pattern in OPENING {
            if code.contains(pattern) {
                found.push(format!("{rel}: {pattern}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQLite opened outside {OPENS_SQLITE} (use hive_db_core::open_connection):\n{}",
        found.join("\n")
    );
}
