//! Cross-crate and cross-process tests of the hive-db workspace. The tests live in `tests/`;
//! this library only holds what they and the helper binaries in `src/bin/` share.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hive_db_core::{DbConfig, DbName, Error, Registry};

mod crash_event;

pub use crash_event::{crash_event, crash_event_id, parse_crash_event_id};

/// A registry with one database `name` at `dir/name.db`, created if missing.
///
/// # Errors
///
/// Any registration error.
pub fn registry_with(
    dir: &Path,
    name: &str,
    config: DbConfig,
) -> anyhow::Result<(Registry, DbName)> {
    let registry = Registry::new();
    let db = DbName::new(name)?;
    registry.register(
        &db,
        dir.join(format!("{name}.db")),
        DbConfig {
            create_if_missing: true,
            ..config
        },
    )?;
    Ok((registry, db))
}

/// A generous bound for "this finishes instead of hanging" checks.
pub const NO_HANG: Duration = Duration::from_secs(20);

/// A small, fast pseudo-random generator (SplitMix64), enough for kill delays and test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `state`: the same state gives the same numbers.
    pub fn new(state: u64) -> Self {
        Self(state)
    }

    /// A generator starting from the clock and the standard library's random hasher keys.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        Self(h.finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A one-word description of a core error, for child processes to print and tests to match:
/// `Open:<cause>`, `Sqlite:<op>:<extended code>`, `Io:<op>:<kind>` or the variant's name.
pub fn describe(err: &Error) -> String {
    match err {
        Error::Open { cause, .. } => format!("Open:{cause:?}"),
        // A failed group-commit transaction carries SQLite's code just as a statement does.
        Error::Sqlite { op, code, .. } | Error::BatchFailed { op, code, .. } => {
            format!("Sqlite:{op}:{}", code.unwrap_or(-1))
        }
        Error::Io { op, source, .. } => format!("Io:{op}:{:?}", source.kind()),
        Error::InvalidConfig { .. } => "InvalidConfig".to_owned(),
        Error::InvalidEnv { var, .. } => format!("InvalidEnv:{var}"),
        Error::InvalidName { .. } => "InvalidName".to_owned(),
        Error::Timeout { .. } => "Timeout".to_owned(),
        Error::WriterLaneTimeout { .. } => "WriterLaneTimeout".to_owned(),
        Error::JournalMode { .. } => "JournalMode".to_owned(),
        Error::ConnectPanicked { .. } => "ConnectPanicked".to_owned(),
        Error::NameConflict { .. } => "NameConflict".to_owned(),
        Error::PathInUse { .. } => "PathInUse".to_owned(),
        Error::UnknownDatabase { .. } => "UnknownDatabase".to_owned(),
        Error::Closed { .. } => "Closed".to_owned(),
        other => format!("Other:{other}"),
    }
}

/// [`describe`] for an `anyhow` error: the core error in its chain, else `Foreign:<message>`.
pub fn describe_any(err: &anyhow::Error) -> String {
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .map_or_else(|| format!("Foreign:{err:#}"), describe)
}

/// What a child process left behind when [`run_bounded`] ended it.
#[derive(Debug)]
pub struct ChildOutcome {
    /// Its exit status; `None` when it was killed for running past the bound.
    pub status: Option<ExitStatus>,
    /// Everything it wrote on standard output.
    pub stdout: String,
    /// Everything it wrote on standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl ChildOutcome {
    /// True when the child ended by itself with exit code 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The lines of standard output whose first word is `key`, with the key and one space
    /// removed.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.stdout
            .lines()
            .filter_map(move |l| match l.strip_prefix(key) {
                Some("") => Some(""),
                Some(rest) => rest.strip_prefix(' '),
                None => None,
            })
    }

    /// The first value of [`ChildOutcome::values`], or `""`.
    pub fn value<'a>(&'a self, prefix: &'a str) -> &'a str {
        self.values(prefix).next().unwrap_or("")
    }
}

/// Runs `cmd` with piped output and no input, killing it (SIGKILL) if it runs longer than
/// `bound`: a hang in the child is reported, never inherited by the test.
///
/// # Errors
///
/// When the command cannot be started or waited for.
pub fn run_bounded(cmd: &mut Command, bound: Duration) -> anyhow::Result<ChildOutcome> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, bound)?;
    Ok(ChildOutcome {
        status,
        stdout: stdout.recv_timeout(NO_HANG).unwrap_or_default(),
        stderr: stderr.recv_timeout(NO_HANG).unwrap_or_default(),
        elapsed: start.elapsed(),
    })
}

/// Waits up to `bound` for `child` to exit; kills and reaps it past that, returning `None`.
///
/// # Errors
///
/// When waiting fails.
pub fn wait_bounded(child: &mut Child, bound: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut out);
        }
        let _ = tx.send(String::from_utf8_lossy(&out).into_owned());
    });
    rx
}

/// Runs `f` on its own thread and waits up to `bound` for it: `None` means it hung (the thread
/// is left behind, blocked); `Some(Err(..))` carries its panic.
pub fn within<T: Send + 'static>(
    bound: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<std::thread::Result<T>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    rx.recv_timeout(bound).ok()
}

/// True when `tool` (a program such as `prlimit` or `setpriv`) can be started; otherwise
/// prints why the calling test is skipped.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("skipped: {tool} is not installed");
    }
    found
}
