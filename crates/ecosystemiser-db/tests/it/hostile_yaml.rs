//! Hostile component files: alias bombs, deep nesting, huge scalars and huge files are refused
//! by the YAML import with a typed error naming the file, within a hang bound, with nothing
//! imported (the good file beside the bad one included), on SQLite and on PostgreSQL.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ecosystemiser_db::{ComponentLibrary, EcoDb, Error};

use crate::common::{Kind, count_of, open};

/// Far above what any of these takes when bounded (milliseconds); an unbounded expansion or
/// nesting runs for minutes or exhausts memory instead.
const HANG_BOUND: Duration = Duration::from_secs(60);

/// A valid spec, sorted before the hostile file, so a partial import would keep it.
const GOOD: &str = "type: battery\ncategory: energy\nname: lfp\ntechnical:\n  capacity_kwh: 10\n";

/// The start of a spec whose `technical` parameters (free-form JSON) follow.
const HEAD: &str = "type: battery\ncategory: energy\nname: hostile\ntechnical:\n";

/// The import of `dir` into `db`, on its own thread (with the default 2 MiB stack, as an
/// application thread has), failing the test if it has not returned within [`HANG_BOUND`].
fn import_bounded(db: &EcoDb, dir: PathBuf) -> ecosystemiser_db::Result<usize> {
    let (tx, rx) = mpsc::channel();
    let db = db.clone();
    std::thread::spawn(move || {
        let _ = tx.send(ComponentLibrary::new(&db).import_yaml(&dir));
    });
    match rx.recv_timeout(HANG_BOUND) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the import did not return within {HANG_BOUND:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the import thread panicked"),
    }
}

/// Rows of the library's tables.
fn counts(db: &EcoDb) -> anyhow::Result<(i64, i64, i64)> {
    let count = |table: &str| {
        let sql = format!("SELECT count(*) FROM {table}");
        count_of(db, &sql, &sql, None)
    };
    Ok((
        count("component_types")?,
        count("component_specs")?,
        count("version_history")?,
    ))
}

/// Imports a folder holding [`GOOD`] and `write`'s hostile file `b_hostile.yaml` into a
/// SQLite database and, where the harness's server is available, a PostgreSQL one; checks
/// each import is refused with [`Error::Yaml`] naming that file, within the hang bound, and
/// that nothing was written. Returns the refusal's reason.
fn refused(what: &str, write: impl FnOnce(&Path) -> std::io::Result<()>) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("library");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("a_good.yaml"), GOOD)?;
    let hostile = src.join("b_hostile.yaml");
    write(&hostile)?;
    let mut kinds = vec![Kind::Pooled];
    if hive_pg_harness::available()? {
        kinds.push(Kind::Postgres);
    }
    let mut reasons = Vec::new();
    for kind in kinds {
        let (db, _registry) = open(kind, dir.path(), "eco.db")?;
        let result = import_bounded(&db, src.clone());
        match result {
            Err(Error::Yaml {
                ref path,
                ref reason,
            }) if *path == hostile => reasons.push(reason.clone()),
            other => anyhow::bail!(
                "{what} on {kind:?}: expected a YAML error naming {hostile:?}, got {other:?}"
            ),
        }
        assert_eq!(
            counts(&db)?,
            (0, 0, 0),
            "{what} on {kind:?}: something was imported"
        );
    }
    Ok(reasons.swap_remove(0))
}

fn text(text: String) -> impl FnOnce(&Path) -> std::io::Result<()> {
    move |path| std::fs::write(path, text)
}

/// Bug caught: aliases expanded without a bound (billion laughs: ten levels of ten aliases,
/// a few hundred bytes that stand for 10^10 values), so the import runs until memory is gone.
#[test]
fn a_billion_laughs_is_refused() -> anyhow::Result<()> {
    let mut bomb = format!("{HEAD}  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = format!("*l{}", i - 1);
        let refs = [p.as_str(); 10].join(", ");
        bomb.push_str(&format!("  l{i}: &l{i} [{refs}]\n"));
    }
    refused("alias bomb", text(bomb))?;
    Ok(())
}

/// Bug caught: one large scalar multiplied by aliases: a file under the size limit that
/// stands for 54 MB of parameters, all parsed into memory and then stored (the parser's
/// default budget lets through 64 MiB of scalars).
#[test]
fn an_aliased_large_scalar_is_refused() -> anyhow::Result<()> {
    let mut doc = format!("{HEAD}  s: &s \"{}\"\n", "x".repeat(900 * 1024));
    for i in 0..60 {
        doc.push_str(&format!("  k{i}: *s\n"));
    }
    refused("aliased scalar", text(doc))?;
    Ok(())
}

/// Bug caught: nesting followed by recursion without a depth limit, so 100,000 levels of
/// flow sequences, flow mappings or block sequences overflow the stack (the whole process
/// aborts) or take quadratic time.
#[test]
fn deep_nesting_is_refused() -> anyhow::Result<()> {
    const LEVELS: usize = 100_000;
    let cases = [
        (
            "flow sequences",
            format!("{HEAD}  x: {}{}\n", "[".repeat(LEVELS), "]".repeat(LEVELS)),
        ),
        (
            "flow mappings",
            format!(
                "{HEAD}  x: {}1{}\n",
                "{a: ".repeat(LEVELS),
                "}".repeat(LEVELS)
            ),
        ),
        (
            "block sequences",
            format!("{HEAD}  x:\n    {}x\n", "- ".repeat(LEVELS)),
        ),
    ];
    for (what, doc) in cases {
        refused(what, text(doc))?;
    }
    Ok(())
}

/// Bug caught: the node count unbounded, so a flat list of a few hundred thousand values
/// (each a JSON value in memory, then stored) passes under the file size limit.
#[test]
fn too_many_nodes_are_refused() -> anyhow::Result<()> {
    let items = vec!["1"; 300_000].join(",");
    refused("many nodes", text(format!("{HEAD}  x: [{items}]\n")))?;
    Ok(())
}

/// Bug caught: a huge scalar read whole into memory (and parsed) before any size check.
#[test]
fn a_huge_scalar_is_refused_by_size() -> anyhow::Result<()> {
    let doc = format!("{HEAD}  notes: \"{}\"\n", "x".repeat(64 * 1024 * 1024));
    let reason = refused("64 MiB scalar", text(doc))?;
    assert!(reason.contains("larger than"), "{reason}");
    Ok(())
}

/// Bug caught: a huge file read to its end (a sparse 16 GiB file costs nothing on disk and
/// everything in memory).
#[test]
fn a_huge_file_is_refused_by_size() -> anyhow::Result<()> {
    let reason = refused("16 GiB file", |path| {
        let file = std::fs::File::create(path)?;
        file.set_len(16 * 1024 * 1024 * 1024)
    })?;
    assert!(reason.contains("larger than"), "{reason}");
    Ok(())
}
