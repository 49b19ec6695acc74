//! A private PostgreSQL 15 server for the tests: `initdb` in a temporary folder, `postgres` on
//! a free loopback port with its socket folder inside, trust authentication, run as the
//! `postgres` user when the tests run as root. One server per test binary, started on first
//! use; each test gets a database of its own.
//!
//! The server runs under a small shell that stops it (immediate shutdown) and removes its
//! folder when its standard input closes, that is when this process exits however it exits:
//! a static is never dropped.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hive_db_core::postgres::{Client, NoTls};

/// Where Debian's `postgresql-15` puts the server's programs.
pub(crate) const BIN: &str = "/usr/lib/postgresql/15/bin";

/// Longest wait for `initdb` plus the server's start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server.
pub(crate) struct Server {
    pub(crate) port: u16,
    /// The shell that owns the server; its stdin is the lifeline.
    guardian: Mutex<Child>,
    data: PathBuf,
    as_postgres: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let mut guardian = self.guardian.lock().unwrap_or_else(|e| e.into_inner());
        drop(guardian.stdin.take());
        let _ = guardian.wait();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Server {
    /// `program` from [`BIN`], run as `postgres` when this process is root.
    fn command(&self, program: &str) -> Command {
        command(self.as_postgres, program)
    }

    /// Starts a server in a new temporary folder.
    pub(crate) fn start() -> anyhow::Result<Self> {
        let initdb = Path::new(BIN).join("initdb");
        anyhow::ensure!(
            initdb.exists(),
            "PostgreSQL 15's server programs are not in {BIN}: install them (Debian: \
             apt-get install postgresql-15) to run the PostgreSQL tests"
        );
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("hive-pg-")
            .tempdir()?
            .keep();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?;
            anyhow::ensure!(status.success(), "chown of {} failed", dir.display());
        }
        let data = dir.join("data");
        let out = command(as_postgres, "initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let postgres = Path::new(BIN).join("postgres");
        // The guardian: runs the server, and on end of input stops it and removes the folder.
        let script = format!(
            "'{postgres}' -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=200 -c shared_buffers=16MB >'{dir}/log' 2>&1 & pid=$!; \
             cat >/dev/null; kill -QUIT $pid 2>/dev/null; wait $pid; rm -rf '{dir}'",
            postgres = postgres.display(),
            data = data.display(),
            dir = dir.display(),
        );
        let mut sh = if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        let guardian = sh
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Self {
            port,
            guardian: Mutex::new(guardian),
            data,
            as_postgres,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match server.admin() {
                Ok(_) => return Ok(server),
                Err(e) if Instant::now() >= deadline => {
                    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                    anyhow::bail!(
                        "the test server did not start within {START_TIMEOUT:?}: {e}\n{log}"
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The URL of database `db` on this server.
    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A client of the `postgres` database, as the superuser.
    pub(crate) fn admin(&self) -> anyhow::Result<Client> {
        let mut config: hive_db_core::postgres::Config = self.url("postgres").parse()?;
        config.connect_timeout(Duration::from_secs(5));
        Ok(config.connect(NoTls)?)
    }

    /// A new, empty database of its own for one test; its URL.
    pub(crate) fn fresh_db(&self) -> anyhow::Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("t_{}", NEXT.fetch_add(1, Relaxed));
        self.admin()?
            .batch_execute(&format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }
}

fn command(as_postgres: bool, program: &str) -> Command {
    let path = Path::new(BIN).join(program);
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

/// The test binary's server, started on first use.
pub(crate) fn server() -> anyhow::Result<&'static Server> {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| Server::start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}
