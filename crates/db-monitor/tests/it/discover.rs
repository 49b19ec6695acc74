//! With no source named: the registries that child processes serve and announce in the
//! test's own runtime folder, found, followed as they start and stop, and the files there
//! that are not theirs ignored with a warning.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hive_db_core::discovery::{self, Announcement};
use hive_db_core::endpoint::{self, EndpointConfig};
use hive_db_core::{DbConfig, DbName, Registry};

use crate::{HANG, TestResult, make_db, monitor, run, runtime_dir};

/// Set for the child process: the folder its registry keeps its database in.
const CHILD_DIR: &str = "DB_MONITOR_TEST_REGISTRY_DIR";

/// Not a test: the registry a child process serves. The tests below run this binary again
/// with only this function selected, [`CHILD_DIR`] and `XDG_RUNTIME_DIR` set; it serves the
/// database `announced` with the endpoint's default announcement until its stdin closes
/// (at most [`HANG`]).
#[test]
#[ignore = "the child process of the discovery tests; does nothing on its own"]
fn registry_child() -> TestResult {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return Ok(());
    };
    let registry = Registry::new();
    let config = DbConfig {
        create_if_missing: true,
        ..DbConfig::default()
    };
    registry.register(&DbName::new("announced")?, dir.join("announced.db"), config)?;
    let _endpoint = endpoint::serve(&registry, EndpointConfig::default())?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read(&mut [0u8; 1]);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(HANG);
    Ok(())
}

/// A child process serving a registry whose endpoint announces itself under `home`'s
/// runtime folder; killed on drop.
struct ChildRegistry {
    child: Child,
}

impl ChildRegistry {
    fn start(home: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        Self::spawn(home, true)
    }

    /// Without `XDG_RUNTIME_DIR`, as systemd or cron start a service: it announces in
    /// `hive-db-UID` under `home`'s temporary folder.
    fn start_as_a_service(home: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        Self::spawn(home, false)
    }

    fn spawn(home: &Path, runtime: bool) -> Result<Self, Box<dyn std::error::Error>> {
        let data = home.join(format!("child-{}", std::process::id()));
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(runtime_dir(home))?;
        std::fs::create_dir_all(home.join("tmp"))?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "discover::registry_child",
            "--exact",
            "--ignored",
            "--quiet",
        ])
        .env(CHILD_DIR, &data)
        .env("TMPDIR", home.join("tmp"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if runtime {
            cmd.env("XDG_RUNTIME_DIR", runtime_dir(home));
        } else {
            cmd.env_remove("XDG_RUNTIME_DIR");
        }
        Ok(Self {
            child: cmd.spawn()?,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it, as `kill -9` would: its announcement stays behind.
    fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

impl Drop for ChildRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The announcement folder of `home`.
fn folder(home: &Path) -> PathBuf {
    runtime_dir(home).join("hive-db")
}

/// Waits for the announcement of process `pid` in `home`'s folder.
fn announced(home: &Path, pid: u32) -> Result<Announcement, Box<dyn std::error::Error>> {
    announced_in(&folder(home), pid)
}

/// Waits for the announcement of process `pid` in `folder`.
fn announced_in(folder: &Path, pid: u32) -> Result<Announcement, Box<dyn std::error::Error>> {
    let start = Instant::now();
    loop {
        if let Ok(listing) = discovery::list_in(folder)
            && let Some(a) = listing.live.into_iter().find(|a| a.pid == pid)
        {
            return Ok(a);
        }
        if start.elapsed() > HANG {
            return Err(format!("process {pid} never announced its endpoint").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bug caught: with no arguments, the monitor looking only for the default database (exit
/// 3 while a registry runs), not reading the registries announced in `XDG_RUNTIME_DIR`, or
/// taking a killed registry's announcement for a live one (an unreachable endpoint, exit
/// 2 or 3 with an error, instead of nothing to monitor) and leaving it behind, or removing
/// it without a word (a killed registry then looked like one stopped on purpose).
#[test]
fn no_arguments_finds_the_registry_a_child_serves() -> TestResult {
    let home = tempfile::tempdir()?;
    let mut child = ChildRegistry::start(home.path())?;
    let a = announced(home.path(), child.pid())?;
    let r = run(monitor(home.path()).args(["--json", "--interval", "100ms"]))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let v = r.json()?;
    let dbs = v["databases"].as_array().ok_or("no databases")?;
    assert_eq!(dbs.len(), 1, "{v}");
    assert_eq!(dbs[0]["name"], "announced");
    assert_eq!(dbs[0]["source"], format!("http://{}", a.addr));
    assert!(dbs[0]["rates"]["seconds"].as_f64().is_some(), "{v}");

    child.kill()?;
    let file = folder(home.path()).join(a.file_name());
    assert!(file.exists(), "a killed process removed its announcement");
    let r = run(&mut monitor(home.path()))?;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(r.stderr.contains("nothing to monitor"), "{}", r.stderr);
    assert!(!r.stderr.contains("ignoring"), "{}", r.stderr);
    // The crash is said once, by the run that finds its trace.
    assert!(
        r.stderr.contains(&format!(
            "a registry stopped without closing its endpoint (killed or crashed): {}",
            file.display()
        )),
        "{}",
        r.stderr
    );
    assert!(!file.exists(), "the stale announcement was not pruned");
    let r = run(&mut monitor(home.path()))?;
    assert!(!r.stderr.contains("without closing"), "{}", r.stderr);
    Ok(())
}

/// Bug caught: a registry killed between a one-shot report's two reads left no trace: the
/// failed read found its announcement stale and removed it, and no later listing came to
/// say so (exit 0, nothing on stderr, no database), nor would the next run.
#[test]
fn a_registry_killed_during_a_one_shot_report_is_said() -> TestResult {
    let home = tempfile::tempdir()?;
    let mut child = ChildRegistry::start(home.path())?;
    announced(home.path(), child.pid())?;
    let mon = monitor(home.path())
        .args(["--json", "--interval", "3s"])
        .spawn()?;
    std::thread::sleep(Duration::from_millis(1500));
    child.kill()?;
    let r = crate::finish(mon)?;
    assert!(
        r.stderr
            .contains("a registry stopped without closing its endpoint (killed or crashed)"),
        "{r:?}"
    );
    Ok(())
}

/// Bug caught: the monitor looked in one announcement folder: a registry started as a
/// service (no `XDG_RUNTIME_DIR`, so it announces in `hive-db-UID` in the temporary folder)
/// was never found by a monitor run from a login shell (which looks in the runtime folder):
/// "nothing to monitor", exit 3.
#[test]
fn a_registry_started_as_a_service_is_found_from_a_login_shell() -> TestResult {
    use std::os::unix::fs::MetadataExt;
    let home = tempfile::tempdir()?;
    let child = ChildRegistry::start_as_a_service(home.path())?;
    let uid = std::fs::metadata("/proc/self")?.uid();
    let service_folder = home.path().join("tmp").join(format!("hive-db-{uid}"));
    let a = announced_in(&service_folder, child.pid())?;
    let r = run(monitor(home.path()).args(["--json", "--interval", "100ms"]))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let v = r.json()?;
    let dbs = v["databases"].as_array().ok_or("no databases")?;
    assert_eq!(dbs.len(), 1, "{v}");
    assert_eq!(dbs[0]["source"], format!("http://{}", a.addr));
    Ok(())
}

/// Bug caught: `--continuous` listing the registries once at the start, so one that starts
/// during the run is never shown, or one that stops is still read (an unhealthy row, exit
/// 2) instead of leaving the view.
#[test]
fn continuous_follows_registries_that_start_and_stop() -> TestResult {
    let home = tempfile::tempdir()?;
    // The default database, so that the run has something to report from the start.
    let eco = home.path().join("default").join("eco.db");
    std::fs::create_dir_all(eco.parent().ok_or("no parent")?)?;
    make_db(&eco, 1)?;
    let mut mon = monitor(home.path())
        .args(["--continuous", "--interval", "0.1", "--duration", "30"])
        .spawn()?;
    let stdout = mon.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // The next sample, which must not be unhealthy: a registry that stopped is no failure.
    let mut next = || -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let line = lines.next().ok_or("the monitor ended early")??;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_ne!(v["status"], "unhealthy", "{v}");
        Ok(v)
    };
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["databases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names(&next()?), ["ecosystemiser"]);
    let mut child = ChildRegistry::start(home.path())?;
    announced(home.path(), child.pid())?;
    let start = Instant::now();
    while !names(&next()?).contains(&"announced".to_owned()) {
        assert!(start.elapsed() < HANG, "the new registry never showed");
    }
    child.kill()?;
    let start = Instant::now();
    loop {
        let v = next()?;
        if !names(&v).contains(&"announced".to_owned()) {
            break;
        }
        assert!(start.elapsed() < HANG, "the killed registry never left");
    }
    // A few more samples: the stopped registry stays away, and nothing turned unhealthy.
    for _ in 0..3 {
        let v = next()?;
        assert_eq!(names(&v), ["ecosystemiser"]);
    }
    mon.kill()?;
    crate::finish(mon)?;
    Ok(())
}

/// Bug caught: a file in the folder that is not an announcement, another format's version,
/// or one pointing off loopback followed (the monitor reading a remote address) or
/// ignored in silence; or such files making the monitor fail instead of going on.
#[test]
fn foreign_files_are_ignored_with_a_warning() -> TestResult {
    let home = tempfile::tempdir()?;
    let dir = folder(home.path());
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    std::fs::write(dir.join("garbage.json"), "not json at all")?;
    std::fs::write(dir.join("other.json"), r#"{"format":"something-else"}"#)?;
    let mut v: serde_json::Value =
        serde_json::from_str(&Announcement::of_this_process("127.0.0.1:9".parse()?)?.to_json())?;
    v["addr"] = "192.0.2.7:9187".into();
    std::fs::write(dir.join("remote.json"), v.to_string())?;
    // And a database, so that the run reports something.
    let db = home.path().join("default").join("eco.db");
    std::fs::create_dir_all(db.parent().ok_or("no parent")?)?;
    make_db(&db, 1)?;
    let r = run(monitor(home.path()).arg("--json"))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let warned: Vec<&str> = r
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("ignoring"))
        .collect();
    assert_eq!(warned.len(), 3, "{}", r.stderr);
    for (file, why) in [
        ("garbage.json", "not a hive-db endpoint announcement"),
        ("other.json", "not a hive-db endpoint announcement"),
        ("remote.json", "192.0.2.7:9187, which is not loopback"),
    ] {
        assert!(
            warned.iter().any(|l| l.contains(file) && l.contains(why)),
            "{file}: {}",
            r.stderr
        );
    }
    let v = r.json()?;
    assert_eq!(v["databases"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["databases"][0]["source"], "file");
    // Ignored, not removed: they are not the monitor's to delete.
    assert_eq!(std::fs::read_dir(&dir)?.count(), 3);
    Ok(())
}

/// Bug caught: an announced registry whose process runs but whose endpoint does not answer
/// left out in silence (a hung application would look like one that stopped), instead of
/// reported unhealthy.
#[test]
fn announced_but_not_answering_is_unhealthy() -> TestResult {
    let home = tempfile::tempdir()?;
    let dir = folder(home.path());
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    // This (running) process, on a port nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let a = Announcement::of_this_process(port)?;
    std::fs::write(dir.join(a.file_name()), a.to_json())?;
    let r = run(monitor(home.path()).args(["--json", "--interval", "50ms"]))?;
    assert_eq!(r.code, Some(2), "{r:?}");
    let v = r.json()?;
    assert_eq!(v["databases"][0]["source"], format!("http://{port}"), "{v}");
    assert_eq!(v["databases"][0]["status"], "unhealthy", "{v}");
    Ok(())
}

/// Bug caught: a stale announcement the monitor may not remove (a folder it cannot write)
/// said once by the first listing and again for each failed read of a one-shot report: the
/// failed read queued its own copy, printed past the check that says each warning once.
#[test]
fn a_stale_announcement_that_cannot_be_removed_is_said_once() -> TestResult {
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: dropping privileges needs root (the CI runs as root)");
        return Ok(());
    }
    let home = tempfile::tempdir()?;
    let bin = home.path().join("db-monitor");
    std::fs::copy(env!("CARGO_BIN_EXE_db-monitor"), &bin)?;
    let dir = folder(home.path());
    std::fs::create_dir_all(&dir)?;
    // This process on a port nothing listens on: its reads fail, and each failure lists the
    // folder again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let live = Announcement::of_this_process(port)?;
    std::fs::write(dir.join(live.file_name()), live.to_json())?;
    // A process that has exited.
    let mut gone = Command::new("true").spawn()?;
    gone.wait()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut stale = Announcement::of_this_process(port)?;
    stale.pid = gone.id();
    std::fs::write(dir.join(stale.file_name()), stale.to_json())?;
    // Everything nobody's, the folder read-only to it: the stale file stays.
    let mut stack = vec![home.path().to_path_buf()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, Some(65534), Some(65534))?;
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500))?;
    let template = monitor(home.path());
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(["--json", "--interval", "50ms"]);
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let r = run(&mut cmd);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let r = r?;
    assert_eq!(
        r.stderr.matches("stopped without closing").count(),
        1,
        "{r:?}"
    );
    Ok(())
}
