//! A child process for fault tests: runs one scenario that may hang, abort, or need limits or
//! another user, and reports what it saw as `key value` lines on standard output (errors as
//! [`hive_tests::describe`] words), so the parent can bound, kill and judge it.
//!
//! - `register BAD GOOD`: registers GOOD (created), then BAD (not created); prints
//!   `bad <ok|error>`; when BAD registered, `use <ok|error>` for a read, an integrity check and
//!   a write on it; then `good <ok|error>` for a write and read on GOOD.
//! - `create PATH`: registers PATH (created) and commits one row, so that `-wal` and `-shm`
//!   exist; prints `mode-db`, `mode-wal`, `mode-shm`, `mode-folder` (PATH's folder) and
//!   `mode-outer` (that folder's folder) in octal, then `created`.
//!
//! - `fill PATH`: registers PATH (which has a table `t (id INTEGER PRIMARY KEY, v BLOB)`) and
//!   commits 8 KiB rows until a `write` fails (run it under a file-size limit); prints
//!   `committed N` after each, then `failed <error>`, `rows N` (rows in `t` now), `health
//!   <status>`, and `waiting`; once a line arrives on standard input (the parent has lifted
//!   the limit), `after <ok|error>` for one more write and `rows-after N`.
//! - `nofile GOOD NEW`: registers GOOD (created, two connections ready), then opens files
//!   until the descriptor limit is hit, prints `hoarded N`, then `new <ok|error>` for
//!   registering NEW (created) and `new-ms` its duration, `good <ok|error>` for a write and read
//!   on GOOD, and, after closing the hoard, `new-after <ok|error>`.
//! - `perm PATH create|open`: registers PATH (created or not) and prints `result <ok|error>`
//!   and `ms` its duration; for an error also `error MESSAGE` (its whole chain) and, for one
//!   about a database, `error-db NAME`. For running as another user.
//! - `perm-live PATH`: registers PATH (created; at most two connections, none kept idle),
//!   commits a row, holds one connection, makes the file mode 0000, and asks for a second
//!   connection, which must be opened; prints `second <ok|error>`, `second-ms`, for an error
//!   `second-error MESSAGE` and `second-error-db NAME`, then `held <ok|error>` for a read on the
//!   held connection, and `after <ok|error>` for a read once the mode is 0600 again. For
//!   running as another user (root ignores the mode).
//! - `config FIELD zero|max DIR` and `env VAR VALUE DIR`: registers `DIR/x.db` (created) with
//!   one `DbConfig` field at zero or at its type's largest value, or with one `HIVE_DB_*`
//!   variable set; prints `register <ok|error>` (with `reason` for `InvalidConfig`), then for
//!   an accepted one `use`, `health` and `close`.
//! - `from-env`: `DbConfig::from_env()` with whatever `HIVE_DB_*` the parent set; prints
//!   `from-env ok max_size N` or `from-env <error>`.
//! - `timeouts DIR`: calls every public timeout argument at zero and at `Duration::MAX`
//!   (`health`, `close`, `close_all`), printing `<call> <ok|panic>` for each.
//! - `oom PATH`: turns SQLite's memory statistics on (the workspace builds it with them off,
//!   and its heap limits need them), registers PATH (created), sets SQLite's process-wide
//!   `hard_heap_limit` to 64 MiB, and writes a 200 MB value; prints `failed <error>` (or
//!   `failed none`), then `after <ok|error>` for a small write, `rows N` and `health <status>`.
//! - `many N DIR`: registers N databases in DIR (one connection each, none kept idle) and
//!   runs `health` with a 10 s timeout while counting this process's threads; prints
//!   `threads-before`, `threads-peak`, `health-ms`, `status` and `healthy` (databases
//!   reported Healthy).
//! - `same-file FIRST SECOND`: registers FIRST (created) as `a` and commits a row, then
//!   registers SECOND (not created) as `b`; prints `second <ok|error>`, `registered-as NAME`
//!   when refused with `PathInUse`, and `new-entries N`, the entries that appeared in FIRST's
//!   folder during the second registration. For one file reached through a bind mount, which
//!   needs a mount namespace of its own.
//!
//! Exit codes: 0 the scenario ran (whatever it found), 1 it could not run, 2 usage.
//!
//! Over 400 lines on purpose: one small function per scenario, all behind one command line, so
//! every risky scenario runs in its own process.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hive_db_core::{DbConfig, DbName, HealthStatus, Registry};
use hive_tests::{describe, describe_any};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["register", bad, good] => register(bad, good),
        ["create", path] => create(path),
        ["fill", path] => fill(path),
        ["nofile", good, new] => nofile(good, new),
        ["perm", path, mode] => perm(path, *mode == "create"),
        ["perm-live", path] => perm_live(path),
        ["config", field, extreme, dir] => config_case(Case::Field(field, *extreme == "max"), dir),
        ["env", var, value, dir] => config_case(Case::Env(var, value), dir),
        ["timeouts", dir] => timeouts(dir),
        ["from-env"] => from_env(),
        ["oom", path] => oom(path),
        ["many", n, dir] => many(n, dir),
        ["same-file", first, second] => same_file(first, second),
        _ => {
            eprintln!(
                "usage: fault-child register BAD GOOD | create PATH | fill PATH | nofile GOOD NEW \
                 | perm PATH create|open | perm-live PATH | config FIELD zero|max DIR | env VAR VALUE DIR \
                 | timeouts DIR | oom PATH | many N DIR | same-file FIRST SECOND"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fault-child: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn created() -> DbConfig {
    DbConfig {
        create_if_missing: true,
        ..quick()
    }
}

/// Short timeouts: a scenario that waits fails within seconds.
fn quick() -> DbConfig {
    DbConfig {
        connection_timeout: Duration::from_secs(2),
        busy_timeout: Duration::from_secs(1),
        ..DbConfig::default()
    }
}

/// A word for the result of using a database: `ok` or the error.
fn outcome<E: Into<anyhow::Error>>(result: Result<(), E>) -> String {
    match result.map_err(Into::into) {
        Ok(()) => "ok".to_owned(),
        // A refusal to open is reported by its cause, also when SQLite's error is its source.
        Err(err) if matches!(err.downcast_ref(), Some(hive_db_core::Error::Open { .. })) => {
            describe_any(&err)
        }
        Err(err) => match err
            .chain()
            .find_map(|e| e.downcast_ref::<rusqlite::Error>())
        {
            Some(rusqlite::Error::SqliteFailure(e, _)) => {
                format!("sqlite:{}", e.extended_code)
            }
            _ => describe_any(&err),
        },
    }
}

fn use_db(registry: &Registry, db: &DbName) -> anyhow::Result<()> {
    registry.write(db, |tx| {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS probe (v INTEGER); INSERT INTO probe VALUES (1);",
        )?;
        Ok(())
    })?;
    registry.read_with(db, |c| -> anyhow::Result<_> {
        let n: i64 = c.query_row("SELECT count(*) FROM probe", [], |r| r.get(0))?;
        anyhow::ensure!(n > 0, "probe row missing");
        Ok(())
    })
}

fn register(bad: &str, good: &str) -> anyhow::Result<()> {
    let registry = Registry::new();
    let good_db = DbName::new("good")?;
    registry.register(&good_db, good, created())?;
    use_db(&registry, &good_db)?;
    let bad_db = DbName::new("bad")?;
    match registry.register(&bad_db, bad, quick()) {
        Ok(()) => {
            println!("bad ok");
            let used = registry
                .read_with(&bad_db, |c| -> anyhow::Result<_> {
                    let integrity: String =
                        c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
                    anyhow::ensure!(integrity == "ok", "integrity_check: {integrity}");
                    let tables: Vec<String> = c
                        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?
                        .query_map([], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    for table in tables {
                        c.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                            r.get::<_, i64>(0)
                        })?;
                    }
                    Ok(())
                })
                .and_then(|()| use_db(&registry, &bad_db));
            println!("use {}", outcome(used));
        }
        Err(err) => println!("bad {}", describe(&err)),
    }
    println!("good {}", outcome(use_db(&registry, &good_db)));
    registry.close_all(Duration::from_secs(2));
    Ok(())
}

fn create(path: &str) -> anyhow::Result<()> {
    let registry = Registry::new();
    let db = DbName::new("created")?;
    registry.register(&db, path, created())?;
    use_db(&registry, &db)?;
    // The pool is open, so `-wal` and `-shm` exist now (closing may remove them).
    let path = std::path::absolute(path)?;
    let path = path.as_path();
    let wal = format!("{}-wal", path.display());
    let shm = format!("{}-shm", path.display());
    let parent = path.parent().unwrap_or(path);
    let grandparent = parent.parent().unwrap_or(parent);
    for (what, file) in [
        ("db", path),
        ("wal", wal.as_ref()),
        ("shm", shm.as_ref()),
        ("folder", parent),
        ("outer", grandparent),
    ] {
        let mode = std::fs::metadata(file)?.permissions().mode() & 0o7777;
        println!("mode-{what} {mode:o}");
    }
    println!("created");
    registry.close_all(Duration::from_secs(2));
    Ok(())
}

fn fill(path: &str) -> anyhow::Result<()> {
    let registry = Registry::new();
    let db = DbName::new("fill")?;
    registry.register(&db, path, quick())?;
    let insert = |registry: &Registry| {
        registry.write(&db, |tx| {
            tx.execute("INSERT INTO t (v) VALUES (zeroblob(8192))", [])?;
            Ok(())
        })
    };
    let mut committed = 0;
    let failure = loop {
        match insert(&registry) {
            Ok(()) => {
                committed += 1;
                println!("committed {committed}");
            }
            Err(err) => break outcome(Err(err)),
        }
        if committed == 100_000 {
            break "never".to_owned();
        }
    };
    println!("failed {failure}");
    let rows = |registry: &Registry| {
        registry.read(&db, |c| {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
        })
    };
    println!("rows {}", rows(&registry)?);
    println!(
        "health {:?}",
        registry.health(Duration::from_secs(2)).status
    );
    println!("waiting");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    println!("after {}", outcome(insert(&registry)));
    println!("rows-after {}", rows(&registry)?);
    registry.close_all(Duration::from_secs(2));
    Ok(())
}

fn nofile(good: &str, new: &str) -> anyhow::Result<()> {
    let registry = Registry::new();
    let good_db = DbName::new("good")?;
    registry.register(
        &good_db,
        good,
        DbConfig {
            max_size: 2,
            min_idle: 2,
            ..created()
        },
    )?;
    use_db(&registry, &good_db)?;
    let mut hoard = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        hoard.push(file);
        if hoard.len() > 100_000 {
            anyhow::bail!("no descriptor limit: run under prlimit --nofile");
        }
    }
    println!("hoarded {}", hoard.len());
    let new_db = DbName::new("new")?;
    let start = Instant::now();
    let registered = registry.register(&new_db, new, created());
    println!("new-ms {}", start.elapsed().as_millis());
    println!(
        "new {}",
        registered.map_or_else(|e| describe(&e), |()| "ok".to_owned())
    );
    println!("good {}", outcome(use_db(&registry, &good_db)));
    drop(hoard);
    let again = registry
        .register(&new_db, new, created())
        .map_err(anyhow::Error::from)
        .and_then(|()| use_db(&registry, &new_db));
    println!("new-after {}", outcome(again));
    registry.close_all(Duration::from_secs(2));
    Ok(())
}

fn perm(path: &str, create: bool) -> anyhow::Result<()> {
    let registry = Registry::new();
    let db = DbName::new("perm")?;
    let config = DbConfig {
        create_if_missing: create,
        ..quick()
    };
    let start = Instant::now();
    let result = registry
        .register(&db, path, config)
        .map_err(anyhow::Error::from)
        .and_then(|()| use_db(&registry, &db));
    println!("ms {}", start.elapsed().as_millis());
    print_error("", result.as_ref().err());
    println!("result {}", outcome(result));
    Ok(())
}

/// For an error: `<prefix>error MESSAGE`, its whole chain, and for one about a database
/// `<prefix>error-db NAME`.
fn print_error(prefix: &str, err: Option<&anyhow::Error>) {
    let Some(err) = err else { return };
    if let Some(db) = err
        .downcast_ref::<hive_db_core::Error>()
        .and_then(hive_db_core::Error::db)
    {
        println!("{prefix}error-db {db}");
    }
    println!("{prefix}error {err:#}");
}

fn perm_live(path: &str) -> anyhow::Result<()> {
    let registry = Registry::new();
    let db = DbName::new("live")?;
    registry.register(
        &db,
        path,
        DbConfig {
            max_size: 2,
            min_idle: 0,
            ..created()
        },
    )?;
    use_db(&registry, &db)?;
    let held = registry.get(&db)?;
    let mode = |m: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(m));
    mode(0o000)?;
    let start = Instant::now();
    let second = registry.get(&db).map(drop).map_err(anyhow::Error::from);
    println!("second-ms {}", start.elapsed().as_millis());
    print_error("second-", second.as_ref().err());
    println!("second {}", outcome(second));
    let read = held
        .query_row("SELECT count(*) FROM probe", [], |r| r.get::<_, i64>(0))
        .map(drop)
        .map_err(anyhow::Error::from);
    println!("held {}", outcome(read));
    mode(0o600)?;
    println!(
        "after {}",
        outcome(registry.get(&db).map(drop).map_err(anyhow::Error::from))
    );
    drop(held);
    registry.close_all(Duration::from_secs(2));
    Ok(())
}

fn same_file(first: &str, second: &str) -> anyhow::Result<()> {
    let registry = Registry::new();
    let a = DbName::new("a")?;
    registry.register(&a, first, created())?;
    registry.write(&a, |tx| {
        tx.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1);")?;
        Ok(())
    })?;
    let folder = std::path::Path::new(first)
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{first} has no folder"))?;
    let entries = || -> anyhow::Result<std::collections::BTreeSet<std::ffi::OsString>> {
        std::fs::read_dir(folder)?
            .map(|e| Ok(e?.file_name()))
            .collect()
    };
    let before = entries()?;
    let result = registry.register(&DbName::new("b")?, second, quick());
    let after = entries()?;
    println!(
        "second {}",
        result.as_ref().map_or_else(describe, |()| "ok".to_owned())
    );
    if let Err(hive_db_core::Error::PathInUse { registered_as, .. }) = &result {
        println!("registered-as {registered_as}");
    }
    println!("new-entries {}", after.difference(&before).count());
    Ok(())
}

/// `DbConfig::from_env()` as this process's environment has it.
fn from_env() -> anyhow::Result<()> {
    match DbConfig::from_env() {
        Ok(c) => println!("from-env ok max_size {}", c.max_size),
        Err(e) => println!("from-env {}", describe(&e)),
    }
    Ok(())
}

/// One extreme setting.
enum Case<'a> {
    /// A `DbConfig` field at zero (`false`) or at its type's largest value (`true`).
    Field(&'a str, bool),
    /// A `HIVE_DB_*` variable and its value.
    Env(&'a str, &'a str),
}

fn extreme_config(case: &Case<'_>) -> anyhow::Result<DbConfig> {
    let mut c = created();
    let (field, max) = match case {
        Case::Env(var, value) => {
            let mut c = DbConfig::from_lookup(|v| (v == *var).then(|| (*value).to_owned()))?;
            c.create_if_missing = true;
            return Ok(c);
        }
        Case::Field(field, max) => (*field, *max),
    };
    let d = if max { Duration::MAX } else { Duration::ZERO };
    let n = if max { u32::MAX } else { 0 };
    match field {
        "max_size" => c.max_size = n,
        "min_idle" => c.min_idle = n,
        "connection_timeout" => c.connection_timeout = d,
        "busy_timeout" => c.busy_timeout = d,
        "validate_after_idle" => c.validate_after_idle = d,
        "max_lifetime" => c.max_lifetime = Some(d),
        "idle_timeout" => c.idle_timeout = Some(d),
        "leak_threshold" => c.leak_threshold = Some(d),
        "create_if_missing" => c.create_if_missing = max,
        "synchronous" => {
            c.synchronous = if max {
                hive_db_core::Synchronous::Extra
            } else {
                hive_db_core::Synchronous::Off
            }
        }
        "cache_size_kib" => c.cache_size_kib = n,
        "foreign_keys" => c.foreign_keys = max,
        "group_commit_max_writers" => c.group_commit_max_writers = n,
        "group_commit_max_age" => c.group_commit_max_age = d,
        other => anyhow::bail!("unknown field {other}"),
    }
    Ok(c)
}

fn config_case(case: Case<'_>, dir: &str) -> anyhow::Result<()> {
    let config = match extreme_config(&case) {
        Ok(config) => config,
        Err(err) => {
            println!("register {}", describe_any(&err));
            println!("reason {err:#}");
            return Ok(());
        }
    };
    let path = std::path::Path::new(dir).join("x.db");
    // `create_if_missing` at zero needs a file to open.
    if !config.create_if_missing {
        Registry::new().register(&DbName::new("maker")?, &path, created())?;
    }
    let registry = Registry::new();
    let db = DbName::new("extreme")?;
    match registry.register(&db, &path, config) {
        Ok(()) => println!("register ok"),
        Err(err) => {
            println!("register {}", describe(&err));
            if let hive_db_core::Error::InvalidConfig { reason, .. } = &err {
                println!("reason {reason}");
            }
            return Ok(());
        }
    }
    std::io::stdout().flush()?;
    println!("use {}", outcome(use_db(&registry, &db)));
    std::io::stdout().flush()?;
    println!(
        "health {:?}",
        registry.health(Duration::from_secs(2)).status
    );
    std::io::stdout().flush()?;
    let closed = registry.close(&db, Duration::from_secs(2));
    println!(
        "close {}",
        closed.map_or_else(|e| describe(&e), |_| "ok".to_owned())
    );
    Ok(())
}

fn timeouts(dir: &str) -> anyhow::Result<()> {
    // The calls under test take timeouts of their own; registering waits for each database's
    // first connection, which on a loaded machine (the whole suite running beside this) took
    // over `quick`'s 2 s once. The parent bounds the whole scenario anyway.
    let config = || DbConfig {
        connection_timeout: Duration::from_secs(10),
        ..created()
    };
    let registry = Registry::new();
    let dir = std::path::Path::new(dir);
    for i in 0..4 {
        registry.register(
            &DbName::new(&format!("t{i}"))?,
            dir.join(format!("t{i}.db")),
            config(),
        )?;
    }
    type Call<'a> = Box<dyn Fn() + 'a>;
    let calls: Vec<(&str, Call<'_>)> = vec![
        (
            "health-zero",
            Box::new(|| drop(registry.health(Duration::ZERO))),
        ),
        (
            "health-max",
            // Healthy, not merely no panic here: the check's threads panicked setting a busy
            // timeout past SQLite's limit, and the report blamed the database.
            Box::new(|| {
                let report = registry.health(Duration::MAX);
                assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
            }),
        ),
        (
            "close-zero",
            Box::new(|| drop(registry.close(&DbName::new("t0").expect("valid"), Duration::ZERO))),
        ),
        (
            "close-max",
            Box::new(|| drop(registry.close(&DbName::new("t1").expect("valid"), Duration::MAX))),
        ),
        (
            "close_all-max",
            Box::new(|| drop(registry.close_all(Duration::MAX))),
        ),
    ];
    for (what, call) in calls {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
        println!("{what} {}", if result.is_ok() { "ok" } else { "panic" });
        std::io::stdout().flush()?;
    }
    let zero = Registry::new();
    zero.register(&DbName::new("z")?, dir.join("z.db"), config())?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(zero.close_all(Duration::ZERO));
    }));
    println!(
        "close_all-zero {}",
        if result.is_ok() { "ok" } else { "panic" }
    );
    Ok(())
}

/// Turns SQLite's memory statistics on, as an application that sets a heap limit must before
/// its first connection (the workspace's SQLite has them off by default, and without them no
/// heap limit is enforced).
#[allow(unsafe_code)]
fn memory_statistics_on() -> anyhow::Result<()> {
    use hive_db_core::rusqlite::ffi;
    // SAFETY: `sqlite3_config` is called before this process opens any connection (SQLite is
    // not initialized yet, so the call is allowed), from its only thread that uses SQLite,
    // with the one `int` argument `SQLITE_CONFIG_MEMSTATUS` takes.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 1 as std::ffi::c_int) };
    anyhow::ensure!(rc == ffi::SQLITE_OK, "sqlite3_config(MEMSTATUS) gave {rc}");
    Ok(())
}

fn oom(path: &str) -> anyhow::Result<()> {
    memory_statistics_on()?;
    let registry = Registry::new();
    let db = DbName::new("oom")?;
    registry.register(&db, path, created())?;
    registry.write(&db, |tx| {
        tx.execute_batch("CREATE TABLE t (v BLOB)")?;
        Ok(())
    })?;
    registry.read(&db, |c| {
        c.execute_batch("PRAGMA hard_heap_limit = 67108864")?;
        Ok(())
    })?;
    let huge = registry.write(&db, |tx| {
        tx.execute("INSERT INTO t VALUES (1)", [])?;
        tx.execute("INSERT INTO t VALUES (randomblob(200000000))", [])?;
        Ok(())
    });
    println!(
        "failed {}",
        if huge.is_ok() {
            "none".to_owned()
        } else {
            outcome(huge)
        }
    );
    let small = registry.write_with(&db, |tx| -> anyhow::Result<_> {
        tx.execute("INSERT INTO t VALUES (2)", [])?;
        Ok(())
    });
    println!("after {}", outcome(small));
    let rows: i64 = registry.read(&db, |c| {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
    })?;
    println!("rows {rows}");
    println!(
        "health {:?}",
        registry.health(Duration::from_secs(2)).status
    );
    registry.close_all(Duration::from_secs(2));
    Ok(())
}

/// Threads of this process now (Linux: `/proc/self/task`).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

fn many(n: &str, dir: &str) -> anyhow::Result<()> {
    let n: usize = n.parse()?;
    let registry = Registry::new();
    let dir = std::path::Path::new(dir);
    for i in 0..n {
        registry.register(
            &DbName::new(&format!("db{i}"))?,
            dir.join(format!("db{i}.db")),
            DbConfig {
                max_size: 1,
                min_idle: 0,
                ..created()
            },
        )?;
    }
    let before = threads();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(threads());
                std::thread::sleep(Duration::from_millis(1));
            }
            peak
        })
    };
    let start = Instant::now();
    let report = registry.health(Duration::from_secs(10));
    let took = start.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    println!("threads-before {before}");
    // The sampler itself is one of the threads counted.
    println!("threads-peak {}", peak.saturating_sub(1));
    println!("health-ms {}", took.as_millis());
    println!("status {:?}", report.status);
    let healthy = report
        .databases
        .iter()
        .filter(|d| d.status == HealthStatus::Healthy)
        .count();
    println!("healthy {healthy}");
    registry.close_all(Duration::from_secs(5));
    Ok(())
}
