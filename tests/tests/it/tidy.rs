//! Tidy checks over the workspace's sources (after rust-analyzer's `tidy.rs`): the layer rules
//! of hive-db-core and db-monitor, a `//!` line at the top of every file, and one place that
//! opens SQLite.
//!
//! They read the repository's files and write nothing.

use std::path::{Path, PathBuf};

/// hive-db-core's modules, lowest first. A module may use only the modules before it in this
/// list: those of lower layers, and those listed before it in its own layer. Unit tests (a
/// `#[cfg(test)] mod tests` at the bottom of a file) may use anything. docs/ARCHITECTURE.md
/// shows the same table.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves",
        &["sync", "clock", "histogram", "lane", "name", "backend"],
    ),
    ("vocabulary", &["error", "config", "stats"]),
    ("SQLite", &["wal", "open"]),
    ("one database's connections", &["pool"]),
    ("writes", &["batch", "checkpoint"]),
    ("database", &["database", "pg"]),
    (
        "facade and views",
        &["health", "registry", "global", "metrics", "endpoint"],
    ),
];

/// db-monitor's crate root. Its `mod` lines list the crate's modules in layers, lowest first,
/// and a module may use only those listed before it (docs/ARCHITECTURE.md gives the order).
const MONITOR_LIB: &str = "crates/db-monitor/src/lib.rs";

/// The one file that opens SQLite connections.
const OPENS_SQLITE: &str = "crates/hive-db-core/src/open.rs";

/// Files that open SQLite another way on purpose, and why.
const OPENS_SQLITE_TOO: &[(&str, &str)] = &[
    (
        "crates/hive-bench/src/bench/baselines.rs",
        "the r2d2 and deadpool pools the registry is measured against open their own connections",
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

/// The modules of the crate that `code` names through `crate::` paths (`use crate::a::..`,
/// `crate::a::f()`, `use crate::{a, b::c}`).
fn crate_modules_used(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut used = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `hive_db_core::..` or `some_crate::..` are not this crate.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let after = rest.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        used.push(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            used.push(ident(item.trim()));
        } else {
            used.push(ident(after));
        }
    }
    used.retain(|m| !m.is_empty() && m != "self");
    used
}

/// The module a file of a crate's `src` belongs to (`pool/leak.rs` is `pool`); `None` for
/// the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    (module != "lib").then(|| module.to_owned())
}

fn rank(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .flat_map(|(_, modules)| modules.iter())
        .position(|m| *m == module)
}

fn layer_of(module: &str) -> &'static str {
    LAYERS
        .iter()
        .find(|(_, modules)| modules.contains(&module))
        .map_or("no layer", |(layer, _)| layer)
}

/// The layer rule's violations in `code`, the code of a file of `module`.
fn layer_violations(module: &str, code: &str) -> Vec<String> {
    let Some(own) = rank(module) else {
        return vec![format!(
            "module `{module}` is in no layer: add it to LAYERS and docs/ARCHITECTURE.md"
        )];
    };
    let mut out = Vec::new();
    for used in crate_modules_used(code) {
        if used == module {
            continue;
        }
        match rank(&used) {
            Some(r) if r < own => {}
            Some(_) => out.push(format!(
                "`{module}` ({}) uses `crate::{used}` ({}), which is not below it",
                layer_of(module),
                layer_of(&used)
            )),
            None => out.push(format!(
                "`{module}` uses `crate::{used}`, which is not a module in LAYERS (name the \
                 module, not a re-export of the crate root)"
            )),
        }
    }
    out
}

/// Bug caught: a module of hive-db-core importing from its own layer's later modules or from
/// a layer above, which is how import circles start.
#[test]
fn core_modules_import_only_from_below() {
    let problems = crate_problems(
        &workspace().join("crates/hive-db-core/src"),
        layer_violations,
    );
    assert!(
        problems.is_empty(),
        "layer rule broken:\n{}",
        problems.join("\n")
    );
}

/// What `check` (given a module and its code) finds in the files of the crate whose sources
/// are in `src`, each line naming its file; the crate roots are left out.
fn crate_problems(src: &Path, check: impl Fn(&str, &str) -> Vec<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for file in rust_files(src) {
        // A binary's root uses its library by the library's name, not through `crate::`.
        let Some(module) = module_of(src, &file).filter(|m| m != "main") else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("readable source");
        for p in check(&module, &code_of(&text)) {
            problems.push(format!("{}: {p}", relative(&file)));
        }
    }
    problems
}

/// Bug caught: the layer check passing everything (a parser that finds no imports), so the
/// test above could never fail.
#[test]
fn the_layer_check_finds_upward_imports() {
    let upward = "use crate::registry::Registry;\nfn f() { crate::database::x(); }";
    assert_eq!(layer_violations("pool", upward).len(), 2);
    let grouped = "use crate::{sync::lock, error::Error};";
    assert_eq!(layer_violations("name", grouped).len(), 1);
    assert!(layer_violations("registry", "use crate::pool::Pool;").is_empty());
    // Comments and other crates' paths are not imports.
    let code = code_of("// crate::registry\nuse hive_db_core::Registry;\n");
    assert!(layer_violations("sync", &code).is_empty());
    assert_eq!(layer_violations("nowhere", "").len(), 1);
}

/// The modules `root` (a crate root's text) declares with `mod name;`, in order.
fn declared_modules(root: &str) -> Vec<String> {
    code_of(root)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            Some(
                line.strip_prefix("mod ")?
                    .strip_suffix(';')?
                    .trim()
                    .to_owned(),
            )
        })
        .collect()
}

/// The uses in `code`, the code of a file of `module`, of modules not declared before it in
/// `order`.
fn order_violations(order: &[String], module: &str, code: &str) -> Vec<String> {
    let rank = |m: &str| order.iter().position(|o| o == m);
    let Some(own) = rank(module) else {
        return vec![format!(
            "module `{module}` is not declared in the crate root"
        )];
    };
    crate_modules_used(code)
        .into_iter()
        .filter(|used| used != module)
        .filter_map(|used| match rank(&used) {
            Some(r) if r < own => None,
            Some(_) => Some(format!(
                "`{module}` uses `crate::{used}`, which the crate root declares after it"
            )),
            None => Some(format!(
                "`{module}` uses `crate::{used}`, which is not a module of the crate root \
                 (name the module, not a re-export)"
            )),
        })
        .collect()
}

/// Bug caught: a db-monitor module importing one declared after it in lib.rs, which is how
/// an import circle (such as `checks` and `report` importing each other) comes back.
#[test]
fn monitor_modules_import_only_from_above() {
    let root = workspace().join(MONITOR_LIB);
    let order = declared_modules(&std::fs::read_to_string(&root).expect("readable lib.rs"));
    assert!(
        order.len() > 5,
        "no modules found in {MONITOR_LIB}: {order:?}"
    );
    let src = root.parent().expect("lib.rs sits in src");
    let problems = crate_problems(src, |module, code| order_violations(&order, module, code));
    assert!(
        problems.is_empty(),
        "layer rule broken:\n{}",
        problems.join("\n")
    );
}

/// Bug caught: the module order read wrong from a crate root, or the order check passing
/// everything, so the test above could never fail.
#[test]
fn the_order_check_finds_upward_imports() {
    let order = declared_modules("//! Root.\n// leaves\nmod fmt;\nmod sample;\npub mod report;\n");
    assert_eq!(order, ["fmt", "sample", "report"]);
    assert!(order_violations(&order, "report", "use crate::{fmt, sample::Sample};").is_empty());
    let upward = "use crate::report::Report;\nfn f() { crate::sample::take(); }";
    assert_eq!(order_violations(&order, "fmt", upward).len(), 2);
    assert_eq!(
        order_violations(&order, "sample", "use crate::Report;").len(),
        1
    );
    assert_eq!(order_violations(&order, "nowhere", "").len(), 1);
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
