//! One-shot reports of database files: the table, the JSON, the saved report, exit codes.

use std::path::Path;

use hive_db_core::rusqlite::Connection;

use crate::{TestResult, files_under, make_db, monitor, run};

/// Bug caught: the table missing a section (databases, SQLite facts) or the healthy
/// database's facts, or a healthy database not exiting 0.
#[test]
fn table_for_a_healthy_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("inv.db");
    make_db(&db, 50)?;
    let r = run(monitor(dir.path())
        .arg("--db")
        .arg(format!("inventory={}", db.display())))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("status HEALTHY"), "{}", r.stdout);
    for want in ["Databases", "SQLite", "inventory", "wal", "ok"] {
        assert!(r.stdout.contains(want), "no {want:?} in\n{}", r.stdout);
    }
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    Ok(())
}

/// Bug caught: JSON fields that do not match the file (page count, journal mode), a status
/// or exit code in the JSON that disagrees with the process's, or `--output` saving something
/// other than the report printed.
#[test]
fn json_field_by_field_and_saved() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("inv.db");
    make_db(&db, 2000)?;
    let (pages, page_size): (i64, i64) = {
        let c = Connection::open(&db)?;
        (
            c.query_row("PRAGMA page_count", [], |r| r.get(0))?,
            c.query_row("PRAGMA page_size", [], |r| r.get(0))?,
        )
    };
    let saved = dir.path().join("report.json");
    let r = run(monitor(dir.path())
        .arg("--json")
        .arg("--output")
        .arg(&saved)
        .arg("--db")
        .arg(format!("inventory={}", db.display())))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let v = r.json()?;
    assert_eq!(v["report_version"], 1);
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["exit_code"], 0);
    let d = &v["databases"][0];
    assert_eq!(d["name"], "inventory");
    assert_eq!(d["source"], "file");
    assert_eq!(d["status"], "healthy");
    assert_eq!(d["findings"].as_array().map(Vec::len), Some(0));
    assert!(d["pool"].is_null(), "a file has no pool: {d}");
    assert_eq!(d["health"]["status"], "healthy");
    assert!(
        d["health"]["latency_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0)
    );
    let s = &d["sqlite"];
    assert_eq!(s["page_count"], pages);
    assert_eq!(s["page_size"], page_size);
    assert_eq!(s["file_bytes"], std::fs::metadata(&db)?.len());
    assert_eq!(s["journal_mode"], "wal");
    assert_eq!(s["quick_check"], "ok");
    assert_eq!(s["freelist_count"], 0);
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&saved)?)?;
    assert_eq!(file, v);
    Ok(())
}

/// Bug caught: a database whose write lock another connection holds reported healthy (the
/// monitor only reading, which WAL never blocks).
#[test]
fn locked_from_outside_is_degraded() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("inv.db");
    make_db(&db, 10)?;
    let holder = Connection::open(&db)?;
    holder.execute_batch("BEGIN IMMEDIATE")?;
    let r = run(monitor(dir.path())
        .args(["--json", "--db"])
        .arg(format!("inventory={}", db.display())))?;
    holder.execute_batch("ROLLBACK")?;
    assert_eq!(r.code, Some(1), "{r:?}");
    let v = r.json()?;
    assert_eq!(v["status"], "degraded");
    let message = v["databases"][0]["findings"][0]["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.contains("write lock"), "{message}");
    // Once the lock is gone, healthy again.
    let r = run(monitor(dir.path())
        .arg("--db")
        .arg(format!("inventory={}", db.display())))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    Ok(())
}

/// Bug caught: corruption inside the file (a damaged b-tree page) missed because only the
/// header is read, or reported as degraded instead of unhealthy.
#[test]
fn corrupt_database_is_unhealthy() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("inv.db");
    make_db(&db, 3000)?;
    {
        let c = Connection::open(&db)?;
        c.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(()))?;
    }
    // Scribble over the middle of the file, past the first page and its header.
    let mut bytes = std::fs::read(&db)?;
    let page = 4096;
    assert!(bytes.len() > 6 * page, "the table spans several pages");
    for b in &mut bytes[3 * page..3 * page + 64] {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes)?;
    let r = run(monitor(dir.path())
        .args(["--json", "--db"])
        .arg(format!("inventory={}", db.display())))?;
    assert_eq!(r.code, Some(2), "{r:?}");
    let v = r.json()?;
    let d = &v["databases"][0];
    assert_eq!(d["status"], "unhealthy");
    assert_eq!(d["sqlite"]["corrupt"], true);
    assert_eq!(d["findings"][0]["kind"], "corrupt");
    assert_eq!(r.stderr_lines().len(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("quick_check"), "{}", r.stderr);
    Ok(())
}

/// Bug caught: a file that is not SQLite reported healthy (opening is lazy), or the monitor
/// leaving a journal or WAL file beside it.
#[test]
fn not_a_database_is_unhealthy_and_left_alone() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    let path = data.join("notes.db");
    std::fs::write(&path, "these are notes, not a database\n".repeat(200))?;
    let before = files_under(&data);
    let r = run(monitor(dir.path())
        .arg("--db")
        .arg(format!("notes={}", path.display())))?;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_eq!(r.stderr_lines().len(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("is not a SQLite database"),
        "{}",
        r.stderr
    );
    assert_eq!(files_under(&data), before);
    Ok(())
}

/// Bug caught: a FIFO named as a database hung the monitor for good (opening it waits for a
/// writer, whatever `--timeout` says), and `/dev/zero` or `/dev/null` read as an empty,
/// healthy database.
#[test]
fn a_fifo_or_device_is_unhealthy_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("pipe.db");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    assert!(made.success(), "mkfifo failed");
    for path in [
        fifo.as_path(),
        Path::new("/dev/zero"),
        Path::new("/dev/null"),
    ] {
        let r = run(monitor(dir.path())
            .arg("--timeout")
            .arg("1s")
            .arg("--db")
            .arg(format!("odd={}", path.display())))?;
        assert_eq!(r.code, Some(2), "{}: {r:?}", path.display());
        assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
    }
    Ok(())
}

/// Bug caught: a missing database created by the monitor (SQLite's default open flags), or
/// reported healthy as an empty database.
#[test]
fn missing_database_is_unhealthy_and_not_created() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    // In a folder that exists (SQLite could create the file) and in one that does not.
    for path in [data.join("gone.db"), data.join("sub").join("gone.db")] {
        let r = run(monitor(dir.path())
            .arg("--db")
            .arg(format!("gone={}", path.display())))?;
        assert_eq!(r.code, Some(2), "{r:?}");
        assert_eq!(r.stderr_lines().len(), 1, "{}", r.stderr);
        assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    }
    assert!(files_under(&data).is_empty());
    Ok(())
}

/// Bug caught: with no source, the monitor creating the default database or its folder, or
/// not saying where it looked.
#[test]
fn default_database_missing_is_said_and_not_created() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cmd = monitor(dir.path());
    cmd.env_remove("ECOSYSTEMISER_DB_PATH");
    let r = run(&mut cmd)?;
    assert_eq!(r.code, Some(3), "{r:?}");
    let want = dir
        .path()
        .join("xdg")
        .join("ecosystemiser")
        .join("ecosystemiser.db");
    assert_eq!(r.stderr_lines().len(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("no EcoSystemiser database"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&want.display().to_string()),
        "{}",
        r.stderr
    );
    assert!(
        files_under(dir.path()).is_empty(),
        "{:?}",
        files_under(dir.path())
    );
    Ok(())
}

/// Bug caught: the default path not following ECOSYSTEMISER_DB_PATH, then XDG_DATA_HOME.
#[test]
fn default_database_is_found() -> TestResult {
    let dir = tempfile::tempdir()?;
    // ECOSYSTEMISER_DB_PATH first.
    let set = dir.path().join("default").join("eco.db");
    std::fs::create_dir_all(set.parent().ok_or("no parent")?)?;
    make_db(&set, 5)?;
    let r = run(monitor(dir.path()).arg("--json"))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.json()?["databases"][0]["path"], set.display().to_string());
    // Then the XDG data folder.
    let xdg = dir
        .path()
        .join("xdg")
        .join("ecosystemiser")
        .join("ecosystemiser.db");
    std::fs::create_dir_all(xdg.parent().ok_or("no parent")?)?;
    make_db(&xdg, 5)?;
    let mut cmd = monitor(dir.path());
    cmd.env_remove("ECOSYSTEMISER_DB_PATH").arg("--json");
    let r = run(&mut cmd)?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let v = r.json()?;
    assert_eq!(v["databases"][0]["path"], xdg.display().to_string());
    assert_eq!(v["databases"][0]["name"], "ecosystemiser");
    Ok(())
}

/// Bug caught: a database at a path that is not UTF-8 (a Unix file name may be any bytes)
/// failed the whole report, table or JSON, with "cannot encode the report", exit 3: the
/// JSON was built even for the table, and serde refuses such a `PathBuf`. The report shows
/// the path with U+FFFD for what is not UTF-8. Nor could `--db` or `--config` name such a
/// file.
#[test]
fn a_path_that_is_not_utf8_is_reported() -> TestResult {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(std::ffi::OsStr::from_bytes(b"eco-\xff.db"));
    make_db(&path, 5)?;
    let mut table = monitor(dir.path());
    table.env("ECOSYSTEMISER_DB_PATH", &path);
    let r = run(&mut table)?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("eco-\u{fffd}.db"), "{}", r.stdout);
    let mut json = monitor(dir.path());
    json.env("ECOSYSTEMISER_DB_PATH", &path).arg("--json");
    let r = run(&mut json)?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.json()?["databases"][0]["path"],
        path.to_string_lossy().into_owned()
    );
    // Named with --db, and in a config file, as it is (both were refused as not UTF-8).
    let mut arg = std::ffi::OsString::from("eco=");
    arg.push(&path);
    let r = run(monitor(dir.path()).arg("--json").arg("--db").arg(&arg))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.json()?["databases"][0]["name"], "eco");
    let config = dir.path().join("monitor.conf");
    let mut lines = b"# one database\neco = ".to_vec();
    lines.extend_from_slice(path.as_os_str().as_bytes());
    lines.push(b'\n');
    std::fs::write(&config, lines)?;
    let r = run(monitor(dir.path())
        .arg("--json")
        .arg("--config")
        .arg(&config))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.json()?["databases"][0]["path"],
        path.to_string_lossy().into_owned()
    );
    Ok(())
}

/// Bug caught: `--probe` ignored for files, or a probe that never reads.
#[test]
fn probe_measures_reads() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("inv.db");
    make_db(&db, 10)?;
    let r = run(monitor(dir.path())
        .args(["--json", "--probe", "0.3", "--db"])
        .arg(format!("inventory={}", db.display())))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let p = &r.json()?["databases"][0]["probe"];
    assert_eq!(p["what"], "reads");
    assert!(p["ops"].as_u64().is_some_and(|n| n > 0), "{p}");
    assert_eq!(p["errors"], 0);
    Ok(())
}

/// Bug caught: a config file's databases not read, or its relative paths taken from the
/// working folder instead of the file's.
#[test]
fn config_file_lists_databases() -> TestResult {
    let dir = tempfile::tempdir()?;
    let conf_dir = dir.path().join("etc");
    std::fs::create_dir(&conf_dir)?;
    make_db(&conf_dir.join("a.db"), 3)?;
    make_db(&conf_dir.join("b.db"), 3)?;
    let conf = conf_dir.join("monitor.conf");
    std::fs::write(
        &conf,
        "# two databases\nalpha = a.db\nbeta = b.db # the second\n",
    )?;
    let r = run(monitor(dir.path()).arg("--json").arg("--config").arg(&conf))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let v = r.json()?;
    let names: Vec<_> = v["databases"]
        .as_array()
        .ok_or("no databases")?
        .iter()
        .map(|d| d["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    Ok(())
}

/// Bug caught, as a user without write rights (the monitor dropped to nobody, databases
/// owned by root): a file it may not read said only SQLite's "unable to open database
/// file", and a WAL database the application had closed cleanly (no `-shm`, which a
/// read-only look needs and may not create in the folder) was UNHEALTHY, a false alert
/// whenever the application was stopped. Skipped unless root (the CI runs as root).
#[test]
fn permission_problems_say_so_and_an_unreadable_wal_file_is_not_unhealthy() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let uid = std::process::Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: dropping privileges needs root (the CI runs as root)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    mode(dir.path(), 0o755)?;
    let bin = dir.path().join("db-monitor");
    std::fs::copy(env!("CARGO_BIN_EXE_db-monitor"), &bin)?;
    mode(&bin, 0o755)?;
    let (closed, unreadable) = (dir.path().join("closed.db"), dir.path().join("secret.db"));
    make_db(&closed, 3)?;
    make_db(&unreadable, 3)?;
    assert!(!Path::new(&format!("{}-shm", closed.display())).exists());
    mode(&closed, 0o644)?;
    mode(&unreadable, 0o000)?;
    let as_nobody = |path: &Path| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .arg("--db")
            .arg(format!("x={}", path.display()))
            .env("HOME", dir.path())
            .env("XDG_RUNTIME_DIR", dir.path().join("run"))
            .env("TMPDIR", dir.path().join("tmp"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        run(&mut cmd)
    };
    let r = as_nobody(&unreadable)?;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("permission denied"), "{}", r.stderr);
    let r = as_nobody(&closed)?;
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.contains("no -shm"), "{}", r.stdout);
    Ok(())
}

/// Bug caught: a path's (or an endpoint's message's) control characters written to the
/// terminal as they were: a newline in a missing file's name forged a second
/// `UNHEALTHY` line on stderr, and an escape sequence reached the terminal, in the finding
/// line and in the table.
#[test]
fn control_characters_in_a_path_are_escaped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir
        .path()
        .join("no\nUNHEALTHY y: forged line\u{1b}[31mred.db");
    let mut arg = std::ffi::OsString::from("x=");
    arg.push(&path);
    let r = run(monitor(dir.path()).arg("--db").arg(&arg))?;
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_eq!(r.stderr_lines().len(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("no\\nUNHEALTHY y"), "{}", r.stderr);
    for (what, text) in [("stderr", &r.stderr), ("stdout", &r.stdout)] {
        assert!(!text.contains('\u{1b}'), "{what}: {text}");
        assert!(
            !text.lines().any(|l| l.starts_with("UNHEALTHY y")),
            "{what}: {text}"
        );
    }
    Ok(())
}
