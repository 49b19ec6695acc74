//! Files on disk: permissions, symbolic links, one file under two paths, and odd files at
//! register.
//!
//! Over 400 lines on purpose: one test per file scenario of docs/RELIABILITY.md, sharing its
//! file fixtures.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use hive_db_core::{DbConfig, DbName, Error, OpenCause, Registry};
use hive_tests::{NO_HANG, Rng, have_tool, run_bounded};

const CHILD: &str = env!("CARGO_BIN_EXE_fault-child");

/// Every path under `dir`, recursively, for "nothing was created" checks.
fn tree(dir: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path);
        }
    }
    Ok(out)
}

fn create() -> DbConfig {
    DbConfig {
        create_if_missing: true,
        ..DbConfig::default()
    }
}

fn commit_one(registry: &Registry, db: &DbName) -> anyhow::Result<()> {
    registry.write_with(db, |tx| -> anyhow::Result<_> {
        tx.execute_batch("CREATE TABLE IF NOT EXISTS t (v INTEGER); INSERT INTO t VALUES (1);")?;
        Ok(())
    })
}

/// Bug caught: a database, its `-wal` or `-shm`, or a folder the registry makes, readable by
/// other users, because the code relied on the process umask (the child runs with umask 000)
/// or SQLite created the side files with a mode of its own.
#[test]
fn files_are_0600_and_folders_0700_even_with_umask_000() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("made").join("here").join("x.db");
    let out = run_bounded(
        Command::new("sh").args([
            "-c",
            "umask 000; exec \"$0\" create \"$1\"",
            CHILD,
            &path.display().to_string(),
        ]),
        NO_HANG,
    )?;
    assert!(out.success(), "{out:?}");
    for (what, want) in [
        ("mode-db", "600"),
        ("mode-wal", "600"),
        ("mode-shm", "600"),
        ("mode-folder", "700"),
        ("mode-outer", "700"),
    ] {
        assert_eq!(out.value(what), want, "{what}: {out:?}");
    }
    Ok(())
}

/// Bug caught: following a symbolic link at the database path (to a file elsewhere, or, with
/// `create_if_missing`, creating the link's target).
#[test]
fn symlinked_database_paths_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (registry, _real) = hive_tests::registry_with(dir.path(), "real", DbConfig::default())?;
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(dir.path().join("real.db"), &link)?;
    let dangling = dir.path().join("dangling.db");
    let target = dir.path().join("target.db");
    std::os::unix::fs::symlink(&target, &dangling)?;
    let before = tree(dir.path())?;
    let name = DbName::new("linked")?;
    for path in [&link, &dangling] {
        let err = registry.register(&name, path, create());
        assert!(
            matches!(
                err,
                Err(Error::Open {
                    cause: OpenCause::Symlink,
                    ..
                })
            ),
            "{}: {err:?}",
            path.display()
        );
    }
    assert!(!target.exists(), "the dangling link's target was created");
    assert_eq!(tree(dir.path())?, before);
    assert!(matches!(
        registry.get(&name),
        Err(Error::UnknownDatabase { .. })
    ));
    Ok(())
}

/// Registers `a` at `dir/real/x.db` and returns the registry; `dir/real/x.db` exists.
fn first_name(dir: &Path) -> anyhow::Result<Registry> {
    let registry = Registry::new();
    let a = DbName::new("a")?;
    registry.register(&a, dir.join("real").join("x.db"), create())?;
    commit_one(&registry, &a)?;
    Ok(registry)
}

/// Asserts that registering `b` at `path` (the file of `a` under another spelling) is refused
/// with `PathInUse` and creates nothing.
fn refused_as_second_name(registry: &Registry, dir: &Path, path: &Path) -> anyhow::Result<()> {
    let before = tree(dir)?;
    let b = DbName::new("b")?;
    let result = registry.register(&b, path, create());
    let after = tree(dir)?;
    assert!(
        matches!(result, Err(Error::PathInUse { ref registered_as, .. }) if registered_as.as_str() == "a"),
        "{}: {result:?}",
        path.display()
    );
    assert_eq!(
        after.difference(&before).collect::<Vec<_>>(),
        Vec::<&PathBuf>::new(),
        "created by the refused registration"
    );
    Ok(())
}

/// Bug caught: the same file registered under two names (two writer lanes for one file, so
/// group commit's serialisation and the counters are wrong) when the second path is spelled
/// with `..` or goes through a symbolically linked folder.
#[test]
fn one_file_through_dotdot_or_a_linked_folder_is_one_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = first_name(dir.path())?;
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("linked"))?;
    std::fs::create_dir(dir.path().join("other"))?;
    for path in [
        dir.path().join("real").join("..").join("real").join("x.db"),
        dir.path()
            .join("other")
            .join("..")
            .join("real")
            .join("x.db"),
        dir.path().join("linked").join("x.db"),
        dir.path().join("real").join(".").join("x.db"),
    ] {
        refused_as_second_name(&registry, dir.path(), &path)?;
    }
    Ok(())
}

/// Bug caught: a hard link to a registered file accepted under a second name: paths are
/// compared, not the file's identity (device and inode).
#[test]
fn one_file_through_a_hard_link_is_one_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = first_name(dir.path())?;
    let hard = dir.path().join("hard.db");
    std::fs::hard_link(dir.path().join("real").join("x.db"), &hard)?;
    refused_as_second_name(&registry, dir.path(), &hard)
}

/// Bug caught: a second spelling through a folder that does not exist yet
/// (`missing/../real/x.db`) registering the same file under a second name, and creating the
/// missing folder on the way, before any check that the file is registered already.
#[test]
fn one_file_through_a_missing_folder_is_one_file_and_creates_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = first_name(dir.path())?;
    let path = dir
        .path()
        .join("missing")
        .join("..")
        .join("real")
        .join("x.db");
    refused_as_second_name(&registry, dir.path(), &path)
}

/// Bug caught: registering a new file as `new/../other/x.db` (created) made a folder `new`
/// that nobody asked for: the file and its folders were created along the caller's path,
/// `..` and all, not the resolved one.
#[test]
fn a_new_file_through_dotdot_creates_only_its_own_folders() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    let path = dir.path().join("new").join("..").join("other").join("x.db");
    let config = DbConfig {
        create_if_missing: true,
        ..DbConfig::default()
    };
    registry.register(&DbName::new("dotdot")?, &path, config)?;
    assert!(dir.path().join("other").join("x.db").exists());
    assert!(
        !dir.path().join("new").exists(),
        "made a folder nobody asked for"
    );
    Ok(())
}

/// Bug caught: the same file registered under a second name when it is reached through a
/// bind mount, where no path spelling, link or canonical form gives it away (only the device
/// and inode do), or the refused registration creating files on the way. Runs `fault-child` in
/// a mount namespace of its own (`unshare`, as root; the CI runs as root), so the mount never
/// shows outside the test.
#[test]
fn one_file_through_a_second_mount_point_is_one_file() -> anyhow::Result<()> {
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: a mount namespace needs root (the CI runs as root)");
        return Ok(());
    }
    anyhow::ensure!(
        have_tool("unshare") && have_tool("mount"),
        "unshare and mount (util-linux) are needed as root"
    );
    let dir = tempfile::tempdir()?;
    let (real, mnt) = (dir.path().join("real"), dir.path().join("mnt"));
    std::fs::create_dir(&real)?;
    std::fs::create_dir(&mnt)?;
    let out = run_bounded(
        Command::new("unshare").args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount --bind "$1" "$2" && exec "$3" same-file "$1/x.db" "$2/x.db""#,
            "sh",
            &real.display().to_string(),
            &mnt.display().to_string(),
            CHILD,
        ]),
        NO_HANG,
    )?;
    anyhow::ensure!(out.success(), "{out:?}");
    assert_eq!(out.value("second"), "PathInUse", "{out:?}");
    assert_eq!(out.value("registered-as"), "a", "{out:?}");
    assert_eq!(out.value("new-entries"), "0", "{out:?}");
    // The mount was the child's alone: nothing of it, or in it, is left here.
    assert_eq!(std::fs::read_dir(&mnt)?.count(), 0);
    Ok(())
}

/// A real database at `path` in rollback-journal mode: a table over many pages.
fn real_database(path: &Path) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA page_size = 4096; PRAGMA journal_mode = DELETE;
         CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);
         CREATE INDEX t_payload ON t (payload);",
    )?;
    let tx = conn.unchecked_transaction()?;
    for i in 0..400 {
        tx.execute(
            "INSERT INTO t (payload) VALUES (?1)",
            [format!("row {i} {}", "x".repeat(100))],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// An odd file and what registering it may give.
struct OddFile {
    name: &'static str,
    path: PathBuf,
    /// Acceptable `(bad, use)` words from `fault-child register`; `use` is `None` when
    /// registration must fail.
    accept: fn(&str, Option<&str>) -> bool,
}

fn refused(bad: &str, _use: Option<&str>) -> bool {
    bad.starts_with("Open:")
}

fn refused_or_fails_at_first_use(bad: &str, used: Option<&str>) -> bool {
    bad == "Open:NotADatabase" || (bad == "ok" && used.is_some_and(|u| u != "ok"))
}

/// Makes the odd files in `dir`, one folder each; `None` for the device when `mknod` is not
/// permitted.
fn odd_files(dir: &Path) -> anyhow::Result<Vec<OddFile>> {
    let mut rng = Rng::from_entropy();
    let mut files = Vec::new();
    let mut add =
        |name: &'static str, accept: fn(&str, Option<&str>) -> bool| -> anyhow::Result<PathBuf> {
            let folder = dir.join(name);
            std::fs::create_dir(&folder)?;
            let path = folder.join("odd.db");
            files.push(OddFile {
                name,
                path: path.clone(),
                accept,
            });
            Ok(path)
        };

    let path = add("random_pages", refused_or_fails_at_first_use)?;
    real_database(&path)?;
    let mut bytes = std::fs::read(&path)?;
    let keep = 4096; // page 1: the header and sqlite_schema
    let noise = rng.bytes(bytes.len() - keep);
    bytes[keep..].copy_from_slice(&noise);
    std::fs::write(&path, bytes)?;

    let path = add("truncated", refused_or_fails_at_first_use)?;
    real_database(&path)?;
    let len = std::fs::metadata(&path)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(len / 2 + 100)?;

    let path = add("garbage_header", |bad, _| bad == "Open:NotADatabase")?;
    real_database(&path)?;
    let mut bytes = std::fs::read(&path)?;
    bytes[..100].copy_from_slice(&rng.bytes(100));
    std::fs::write(&path, bytes)?;

    // SQLite's format defines an empty file as an empty database: using it is correct.
    let path = add("zero_bytes", |bad, used| {
        bad == "Open:NotADatabase" || (bad == "ok" && used == Some("ok"))
    })?;
    std::fs::write(&path, b"")?;

    let path = add("folder", |bad, _| bad == "Open:IsDirectory")?;
    std::fs::create_dir(&path)?;

    let path = add("fifo", |bad, used| bad != "ok" || used != Some("ok"))?;
    let made = Command::new("mkfifo").arg(&path).status()?;
    anyhow::ensure!(made.success(), "mkfifo failed");

    let path = add("device", |bad, used| bad != "ok" || used != Some("ok"))?;
    // A copy of /dev/null (char 1:3), so nothing is created in /dev if it is accepted.
    let made = Command::new("mknod")
        .arg(&path)
        .args(["c", "1", "3"])
        .output()?;
    if !made.status.success() {
        eprintln!(
            "device case skipped: mknod not permitted: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        files.retain(|f| f.name != "device");
    }
    Ok(files)
}

/// What registering one odd file gave, as `fault-child register` words.
struct OddResult {
    file: OddFile,
    bad: String,
    used: Option<String>,
    good: String,
    /// The odd file's folder changed (something was created or removed).
    changed: bool,
}

/// Registers each odd file in a child (bounded: a FIFO or device could block a read), next
/// to a good database.
fn register_odd_files(dir: &Path) -> anyhow::Result<Vec<OddResult>> {
    let files = odd_files(dir)?;
    let good = dir.join("good");
    std::fs::create_dir(&good)?;
    let mut results = Vec::new();
    for (i, file) in files.into_iter().enumerate() {
        let folder = file.path.parent().expect("own folder").to_path_buf();
        let before = tree(&folder)?;
        let out = run_bounded(
            Command::new(CHILD).args([
                "register",
                &file.path.display().to_string(),
                &good.join(format!("good{i}.db")).display().to_string(),
            ]),
            NO_HANG,
        )?;
        assert!(
            out.status.is_some(),
            "{}: registering hung past {NO_HANG:?}",
            file.name
        );
        assert!(out.success(), "{}: {out:?}", file.name);
        let bad = out.value("bad").to_owned();
        let used = out.values("use").next().map(str::to_owned);
        let good_word = out.value("good").to_owned();
        let changed = tree(&folder)? != before;
        results.push(OddResult {
            file,
            bad,
            used,
            good: good_word,
            changed,
        });
    }
    Ok(results)
}

/// Bug caught: a corrupt, truncated or foreign file accepted and then silently used (or
/// returning wrong data instead of an error); a folder or FIFO that blocks `register` or
/// panics; one bad file affecting another database of the same registry.
#[test]
fn odd_files_fail_with_typed_errors_and_spare_other_databases() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for OddResult {
        file,
        bad,
        used,
        good,
        changed,
    } in register_odd_files(dir.path())?
    {
        eprintln!("{}: bad {bad}, use {used:?}", file.name);
        assert!(
            (file.accept)(&bad, used.as_deref()),
            "{}: register gave {bad}, use {used:?}",
            file.name
        );
        assert_eq!(good, "ok", "{}: the good database was affected", file.name);
        if bad != "ok" {
            assert!(
                !changed,
                "{}: a refused registration left files behind",
                file.name
            );
        }
    }
    Ok(())
}

/// Bug caught: a FIFO or a character device (like /dev/null) accepted at register, or refused
/// with an error that looks retryable: `register` should refuse any path that is not a regular
/// file with `Error::Open` before SQLite opens it, and create no `-wal` or `-shm` next to it
/// (for /dev/null, in /dev).
#[test]
fn special_files_are_refused_as_open_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for OddResult {
        file,
        bad,
        used,
        good,
        changed,
    } in register_odd_files(dir.path())?
    {
        if !matches!(file.name, "fifo" | "device") {
            continue;
        }
        assert!(
            refused(&bad, used.as_deref()),
            "{}: register gave {bad}, use {used:?}",
            file.name
        );
        assert!(!changed, "{}: files created next to it", file.name);
        assert_eq!(good, "ok");
    }
    Ok(())
}
