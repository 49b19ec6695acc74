//! One PostgreSQL server of a [`crate::Server`] or a [`crate::Cluster`]: its data folder, port
//! and postmaster, and the controls a test needs (stop, start, restart, kill -9, promote,
//! replay pause, catching up).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use crate::process::{command, free_port, run};

/// Longest wait for a server to accept connections after its start, or for a promotion.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One server: its data folder in a temporary folder that its owner (a `Server` or a
/// `Cluster`) removes, a loopback port that stays the same across restarts, and its
/// postmaster while it runs.
#[derive(Debug)]
pub struct Node {
    name: String,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    /// The postmaster, or `runuser` running it, while it runs.
    postmaster: Mutex<Option<Child>>,
}

impl Node {
    /// A new data folder `dir/name` made by `initdb`, with `settings` (lines of
    /// `postgresql.conf`) after the ones every node has. Not started.
    pub(crate) fn init(dir: &Path, name: &str, settings: &[&str]) -> anyhow::Result<Self> {
        let node = Self::new(dir, name)?;
        let mut initdb = command("initdb");
        initdb
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
            .arg(&node.data);
        run(initdb, "initdb")?;
        node.configure(settings)?;
        Ok(node)
    }

    /// A standby of `primary` in a new data folder `dir/name`, copied by `pg_basebackup -R`
    /// (so it streams from `primary`), with `settings` after the primary's. Not started.
    pub(crate) fn standby_of(
        primary: &Node,
        dir: &Path,
        name: &str,
        settings: &[&str],
    ) -> anyhow::Result<Self> {
        let node = Self::new(dir, name)?;
        let mut backup = command("pg_basebackup");
        backup
            .args([
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
                "-h",
                "127.0.0.1",
            ])
            .args(["-U", "postgres", "-p", &primary.port.to_string(), "-D"])
            .arg(&node.data);
        run(backup, "pg_basebackup")?;
        node.configure(settings)?;
        Ok(node)
    }

    fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            port: free_port()?,
            data: dir.join(name),
            log: dir.join(format!("{name}.log")),
            postmaster: Mutex::new(None),
        })
    }

    /// Appends this node's own settings to `postgresql.conf` (a later line wins over a
    /// copied one): loopback only, its port, its socket in the temporary folder, no fsync.
    fn configure(&self, settings: &[&str]) -> anyhow::Result<()> {
        let socket_dir = self.data.parent().unwrap_or(&self.data);
        let mut conf = OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?;
        writeln!(
            conf,
            "\n# hive-pg-harness\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{}'\ncluster_name = '{}'\nfsync = off\n\
             shared_buffers = 16MB",
            self.port,
            socket_dir.display(),
            self.name
        )?;
        for line in settings {
            writeln!(conf, "{line}")?;
        }
        Ok(())
    }

    /// The node's name: its folder's, and its `cluster_name` (a standby's
    /// `application_name` on its primary).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its loopback port, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data folder.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The URL of database `db` on this node, as the superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A client of the `postgres` database, as the superuser.
    ///
    /// # Errors
    ///
    /// The node does not accept connections within 5 s.
    pub fn admin(&self) -> anyhow::Result<Client> {
        let mut config: postgres::Config = self.url("postgres").parse()?;
        config.connect_timeout(Duration::from_secs(5));
        Ok(config.connect(NoTls)?)
    }

    fn postmaster(&self) -> MutexGuard<'_, Option<Child>> {
        self.postmaster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the postmaster and waits until it accepts connections (a standby: once it is
    /// consistent). Does nothing if it runs.
    ///
    /// # Errors
    ///
    /// It exited, or did not accept connections within 60 s; the error shows its log.
    pub fn start(&self) -> anyhow::Result<()> {
        let mut postmaster = self.postmaster();
        if postmaster.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut child = self.spawn()?;
        loop {
            match self.admin() {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    anyhow::bail!(
                        "{} did not accept connections within {START_TIMEOUT:?}: {e}\n{}",
                        self.name,
                        self.log_tail()
                    );
                }
                Err(_) => {}
            }
            if child.try_wait()?.is_some() {
                // After a kill -9 its old backends may still hold the shared memory for a
                // moment: the postmaster refuses to start then, so try again.
                std::thread::sleep(Duration::from_millis(100));
                child = self.spawn()?;
            } else {
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        *postmaster = Some(child);
        Ok(())
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        Ok(command("postgres")
            .arg("-D")
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?)
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops the node (fast shutdown: sessions ended, a checkpoint) and waits for its
    /// postmaster to exit. Does nothing if it is stopped.
    ///
    /// # Errors
    ///
    /// `pg_ctl stop` failed.
    pub fn stop(&self) -> anyhow::Result<()> {
        let mut postmaster = self.postmaster();
        let Some(mut child) = postmaster.take() else {
            return Ok(());
        };
        let mut stop = command("pg_ctl");
        stop.args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(&self.data);
        let stopped = run(stop, "pg_ctl stop");
        if stopped.is_err() {
            let _ = child.kill();
        }
        child.wait()?;
        stopped
    }

    /// Stops the node and starts it again, on the same port and data.
    ///
    /// # Errors
    ///
    /// As [`Node::stop`] and [`Node::start`].
    pub fn restart(&self) -> anyhow::Result<()> {
        self.stop()?;
        self.start()
    }

    /// Kills the postmaster with SIGKILL (its pid read from `postmaster.pid`), a crash: no
    /// shutdown checkpoint, its backends exit when they notice. Waits for it to exit.
    ///
    /// # Errors
    ///
    /// The node is not running, or the signal could not be sent.
    pub fn kill9(&self) -> anyhow::Result<()> {
        let mut postmaster = self.postmaster();
        let Some(mut child) = postmaster.take() else {
            anyhow::bail!("{} is not running", self.name);
        };
        signal(&self.postmaster_pid()?, "-KILL")?;
        child.wait()?;
        Ok(())
    }

    /// The postmaster's process id, from `postmaster.pid`.
    fn postmaster_pid(&self) -> anyhow::Result<String> {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid"))?;
        pid_file
            .lines()
            .next()
            .map(str::trim)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("{}: postmaster.pid has no pid", self.name))
    }

    /// Stops the postmaster with SIGSTOP, a hung server: its kernel still accepts
    /// connections and acknowledges what is sent, and nothing answers. [`Node::thaw`] undoes
    /// it (also before the node is stopped or dropped: a stopped server cannot shut down).
    ///
    /// # Errors
    ///
    /// The node is not running, or the signal could not be sent.
    pub fn freeze(&self) -> anyhow::Result<()> {
        signal(&self.postmaster_pid()?, "-STOP")
    }

    /// Resumes a postmaster [`Node::freeze`] stopped, and the `runuser` that started it when
    /// running as root: `runuser` stops itself when its child stops, and stopped it would
    /// never reap the postmaster (a later stop of the node waited for good).
    ///
    /// # Errors
    ///
    /// The node is not running, or the signal could not be sent.
    pub fn thaw(&self) -> anyhow::Result<()> {
        signal(&self.postmaster_pid()?, "-CONT")?;
        if let Some(child) = self.postmaster().as_ref() {
            signal(&child.id().to_string(), "-CONT")?;
        }
        Ok(())
    }

    /// Promotes a standby to a primary (`pg_ctl promote -w`), returning once it accepts
    /// writes.
    ///
    /// # Errors
    ///
    /// It is no standby, or the promotion did not end within 60 s.
    pub fn promote(&self) -> anyhow::Result<()> {
        let mut promote = command("pg_ctl");
        promote
            .args(["promote", "-w", "-t", "60", "-D"])
            .arg(&self.data);
        run(promote, "pg_ctl promote")
    }

    /// Pauses the replay of WAL on a standby: it still receives WAL, but shows no newer data.
    ///
    /// # Errors
    ///
    /// It is no standby, or it is unreachable.
    pub fn pause_replay(&self) -> anyhow::Result<()> {
        self.admin()?
            .batch_execute("SELECT pg_wal_replay_pause()")?;
        Ok(())
    }

    /// Resumes the replay of WAL on a standby.
    ///
    /// # Errors
    ///
    /// It is no standby, or it is unreachable.
    pub fn resume_replay(&self) -> anyhow::Result<()> {
        self.admin()?
            .batch_execute("SELECT pg_wal_replay_resume()")?;
        Ok(())
    }

    /// Whether the node is a standby (in recovery).
    ///
    /// # Errors
    ///
    /// It is unreachable.
    pub fn in_recovery(&self) -> anyhow::Result<bool> {
        Ok(self
            .admin()?
            .query_one("SELECT pg_is_in_recovery()", &[])?
            .try_get(0)?)
    }

    /// The WAL position this node (a primary) has written up to.
    ///
    /// # Errors
    ///
    /// It is unreachable, or a standby.
    pub fn current_lsn(&self) -> anyhow::Result<String> {
        Ok(self
            .admin()?
            .query_one("SELECT pg_current_wal_lsn()::text", &[])?
            .try_get(0)?)
    }

    /// Waits until this standby has received WAL up to `lsn` (received, not necessarily
    /// replayed: what a paused standby still does).
    ///
    /// # Errors
    ///
    /// It did not within `timeout`, or it is unreachable.
    pub fn wait_received(&self, lsn: &str, timeout: Duration) -> anyhow::Result<()> {
        self.wait_lsn("pg_last_wal_receive_lsn()", lsn, timeout)
    }

    /// Waits until this standby has replayed the WAL `upstream` had written when called, so
    /// it shows what `upstream` had committed.
    ///
    /// # Errors
    ///
    /// It did not within `timeout` (its replay paused, say), or a node is unreachable.
    pub fn wait_caught_up(&self, upstream: &Node, timeout: Duration) -> anyhow::Result<()> {
        let lsn = upstream.current_lsn()?;
        self.wait_lsn("pg_last_wal_replay_lsn()", &lsn, timeout)
    }

    fn wait_lsn(&self, position: &str, lsn: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let sql = format!("SELECT coalesce({position} >= $1::text::pg_lsn, false)");
        let mut client = self.admin()?;
        loop {
            let reached: bool = client.query_one(&sql, &[&lsn])?.try_get(0)?;
            if reached {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: {position} did not reach {lsn} within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sets `name` to `value` with `ALTER SYSTEM` and reloads the configuration: how a test
    /// re-points a node after a failover (`primary_conninfo` of a standby,
    /// `synchronous_standby_names` of a new primary).
    ///
    /// # Errors
    ///
    /// The setting is refused, or the node is unreachable.
    pub fn set(&self, name: &str, value: &str) -> anyhow::Result<()> {
        let value = value.replace('\'', "''");
        let mut client = self.admin()?;
        // Two statements: ALTER SYSTEM refuses to run in the implicit transaction of one.
        client.batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))?;
        client.batch_execute("SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// Makes this standby stream from `primary` instead (its `primary_conninfo`).
    ///
    /// # Errors
    ///
    /// As [`Node::set`].
    pub fn follow(&self, primary: &Node) -> anyhow::Result<()> {
        self.set(
            "primary_conninfo",
            &format!(
                "host=127.0.0.1 port={} user=postgres application_name={}",
                primary.port, self.name
            ),
        )
    }
}

impl Drop for Node {
    /// Stops the node at once (immediate shutdown) if it runs, ignoring failures, and waits
    /// for its postmaster to exit; the owner's lifeline then removes its folder.
    fn drop(&mut self) {
        if let Some(mut child) = self.postmaster().take() {
            let mut stop = command("pg_ctl");
            stop.args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
                .arg(&self.data);
            if run(stop, "pg_ctl stop").is_err() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Sends `signal` (`-KILL`, `-STOP`, `-CONT`) to process `pid`.
fn signal(pid: &str, signal: &str) -> anyhow::Result<()> {
    let mut kill = std::process::Command::new("kill");
    kill.args([signal, pid]);
    run(kill, "kill")
}
