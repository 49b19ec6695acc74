//! Running the server's programs: as the `postgres` user when this process is root, a
//! temporary folder they own, free loopback ports, and the lifeline that stops every server
//! of a folder and removes it when this process ends, however it ends.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::skip::BIN;

/// Whether this process is root, so the server's programs run as `postgres` (the server
/// refuses to run as root).
pub(crate) fn as_postgres() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    })
}

/// `program` from [`BIN`], run as `postgres` when this process is root.
pub(crate) fn command(program: &str) -> Command {
    let path = Path::new(BIN).join(program);
    if as_postgres() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

/// Runs `command` to its end.
///
/// # Errors
///
/// It could not start, or it failed: the error shows its stderr.
pub(crate) fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    let out = command.stdin(Stdio::null()).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A new temporary folder that the server's programs may write in. It is not removed when
/// dropped: the [`Lifeline`] removes it.
pub(crate) fn temp_folder() -> anyhow::Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix("hive-pg-")
        .tempdir()?
        .keep();
    if as_postgres() {
        let mut chown = Command::new("chown");
        chown.args(["-R", "postgres:postgres"]).arg(&dir);
        run(chown, "chown of the temporary folder")?;
    }
    Ok(dir)
}

/// A loopback port nothing listens on now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Quotes `path` for `sh`.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A shell that waits for its standard input to close, then stops the servers of the data
/// folders it was given (immediate shutdown) and removes the temporary folder. Its input
/// closes when it is dropped, or when this process exits however it exits (a static is
/// never dropped, a failed test's unwinding may not reach a drop).
#[derive(Debug)]
pub(crate) struct Lifeline {
    shell: Child,
}

impl Lifeline {
    /// Starts the shell for the servers of `data` folders inside `dir`.
    pub(crate) fn start(dir: &Path, data: &[&Path]) -> anyhow::Result<Self> {
        let pg_ctl = quoted(&Path::new(BIN).join("pg_ctl"));
        let stops: String = data
            .iter()
            .map(|d| format!("{pg_ctl} stop -m immediate -w -t 10 -D {} ; ", quoted(d)))
            .collect();
        let script = format!("cat >/dev/null; {stops}rm -rf {}", quoted(dir));
        let mut sh = if as_postgres() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        // A process group of its own: a terminal's hang-up (a closed tmux session, say) goes
        // to the foreground group and would end the shell before it cleans up; its input
        // still closes when this process ends, however it ends.
        let shell = sh
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self { shell })
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        drop(self.shell.stdin.take());
        let _ = self.shell.wait();
    }
}
