//! The built db-monitor binary run against temporary databases and registries served inside
//! the test, in every mode.

mod attach;
mod bad_input;
mod continuous;
mod discover;
mod live_view;
mod one_shot;
mod postgres;
mod replay;
mod server;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hive_db_core::rusqlite::Connection;

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A generous bound on any one run of the binary: a run past it is a hang.
pub(crate) const HANG: Duration = Duration::from_secs(60);

/// What a run left.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// stderr's lines, without blank ones.
    pub(crate) fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    pub(crate) fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.stdout)
    }
}

/// The binary, with a home, data folder, default database path and runtime folder of its
/// own under `home`, so no test can reach the real default database or the registries the
/// user (or another test) runs.
pub(crate) fn monitor(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_db-monitor"));
    cmd.env("HOME", home.join("home"))
        .env("XDG_RUNTIME_DIR", runtime_dir(home))
        // The other folder it looks in, `hive-db-UID` in the temporary folder: this test's.
        .env("TMPDIR", home.join("tmp"))
        .env("XDG_DATA_HOME", home.join("xdg"))
        .env("ECOSYSTEMISER_DB_PATH", home.join("default").join("eco.db"))
        .env_remove("DB_MONITOR_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The runtime folder [`monitor`] gives the binary under `home`: registries announced in
/// `runtime_dir(home)/hive-db` are the ones it finds.
pub(crate) fn runtime_dir(home: &Path) -> PathBuf {
    home.join("run")
}

/// Runs `cmd` to its end within [`HANG`], killing it past that.
pub(crate) fn run(cmd: &mut Command) -> Result<Run, Box<dyn std::error::Error>> {
    let child = cmd.spawn()?;
    finish(child)
}

/// Waits for `child` within [`HANG`] and collects its output.
pub(crate) fn finish(mut child: Child) -> Result<Run, Box<dyn std::error::Error>> {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("db-monitor did not end within {HANG:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().map_err(|_| "stdout reader panicked")?;
    let stderr = err_reader.join().map_err(|_| "stderr reader panicked")?;
    assert!(
        !stderr.contains("panicked"),
        "db-monitor panicked: {stderr}"
    );
    Ok(Run {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// A WAL database at `path` with a table of `rows` rows.
pub(crate) fn make_db(path: &Path, rows: u32) -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::open(path)?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.execute_batch("CREATE TABLE item (id INTEGER PRIMARY KEY, label TEXT NOT NULL)")?;
    let tx = conn.unchecked_transaction()?;
    for i in 0..rows {
        tx.execute(
            "INSERT INTO item (label) VALUES (?1)",
            [format!("item number {i:08}")],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Every file under `dir`, recursively, sorted.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
