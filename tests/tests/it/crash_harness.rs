//! The kill-and-verify loop the crash tests share: run a child that prints `ready` and then an
//! `ack ...` line after each acknowledged write, SIGKILL it at a random moment, and check the
//! database against every acknowledgement so far.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hive_tests::{NO_HANG, Rng, run_bounded};

/// One acknowledged write: `(run, thread, k)`.
pub(crate) type Key = (i64, i64, i64);

/// A child program to crash and how to judge what it left.
pub(crate) struct Target {
    /// The child binary; its arguments are `PATH SYNC RUN THREADS COUNT` then `extra_args`
    /// (`COUNT` 0: until killed).
    pub(crate) bin: &'static str,
    /// What the child is, for messages: "writer", "publisher".
    pub(crate) what: &'static str,
    /// What an acknowledgement stands for, for messages: "commits", "events".
    pub(crate) acked: &'static str,
    /// The database's file name in each round's folder.
    pub(crate) file: &'static str,
    /// Arguments after `COUNT`.
    pub(crate) extra_args: &'static [&'static str],
    /// Kill rounds on one database before starting a fresh one.
    pub(crate) rounds_per_database: usize,
    /// The key of the text after `ack `.
    pub(crate) parse_ack: fn(&str) -> Option<Key>,
    /// Reopens the database (no manual step) and checks it against every acknowledgement.
    pub(crate) verify: fn(&Path, &HashSet<Key>) -> anyhow::Result<usize>,
}

impl Target {
    fn command(&self, path: &Path, sync: &str, run: i64, threads: &str, count: &str) -> Command {
        let mut cmd = Command::new(self.bin);
        cmd.args([
            &path.display().to_string(),
            sync,
            &run.to_string(),
            threads,
            count,
        ])
        .args(self.extra_args);
        cmd
    }

    /// Runs the child until `kill_after`, then SIGKILLs it; returns the acknowledgements it
    /// printed as whole lines (a line cut by the kill is not an acknowledgement).
    fn kill_round(
        &self,
        path: &Path,
        sync: &str,
        run: i64,
        kill_after: Duration,
        wait_ready: bool,
    ) -> anyhow::Result<Vec<Key>> {
        let mut child = self
            .command(path, sync, run, "4", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                if line.ends_with(b"\n") {
                    let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_owned());
                }
                line.clear();
            }
        });
        if wait_ready {
            let ready = rx.recv_timeout(NO_HANG)?;
            anyhow::ensure!(
                ready == "ready",
                "{} said {ready:?} before ready",
                self.what
            );
        }
        std::thread::sleep(kill_after);
        child.kill()?; // SIGKILL
        let status = child.wait()?;
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)?;
        anyhow::ensure!(
            status.code().is_none(),
            "the {} ended by itself before the kill ({status}): {stderr}",
            self.what
        );
        let mut acks = Vec::new();
        for line in rx.try_iter() {
            if line == "ready" {
                continue;
            }
            let key = line
                .strip_prefix("ack ")
                .and_then(self.parse_ack)
                .ok_or_else(|| anyhow::anyhow!("unexpected {} output {line:?}", self.what))?;
            acks.push(key);
        }
        Ok(acks)
    }

    /// `rounds` kill rounds with `synchronous` = `sync`, on a fresh database every
    /// `rounds_per_database` rounds, each crashing the file the last one recovered.
    pub(crate) fn crash_rounds(&self, sync: &str, rounds: usize) -> anyhow::Result<()> {
        let mut rng = Rng::from_entropy();
        let mut total_acks = 0;
        let mut round = 0;
        while round < rounds {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join(self.file);
            // Run 0 prepares the database and writes a little, to the end.
            let setup = run_bounded(&mut self.command(&path, sync, 0, "2", "5"), NO_HANG)?;
            anyhow::ensure!(setup.success(), "setup run failed: {}", setup.stderr);
            let mut acked: HashSet<Key> = (0..2)
                .flat_map(|t| (0..5).map(move |k| (0, t, k)))
                .collect();
            for run in 1..=self.rounds_per_database.min(rounds - round) {
                round += 1;
                // Mostly mid-stream; one round in ten during start-up (open, recovery).
                let (delay, wait_ready) = if rng.range(0, 10) == 0 {
                    (Duration::from_millis(rng.range(0, 30)), false)
                } else {
                    (Duration::from_millis(rng.range(1, 200)), true)
                };
                let acks = self.kill_round(&path, sync, i64::try_from(run)?, delay, wait_ready)?;
                total_acks += acks.len();
                acked.extend(acks);
                (self.verify)(&path, &acked).map_err(|e| {
                    anyhow::anyhow!("{sync} round {round} (kill after {delay:?}): {e:#}")
                })?;
            }
        }
        eprintln!(
            "{sync}: {rounds} rounds, {total_acks} acknowledged {} checked",
            self.acked
        );
        anyhow::ensure!(
            total_acks > rounds,
            "the {} was killed before it acknowledged anything in most rounds",
            self.what
        );
        Ok(())
    }
}
