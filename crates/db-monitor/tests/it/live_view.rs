//! The live view in a real terminal: tmux runs it, the test reads the screen.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{TestResult, make_db};

const TMUX: &str = "/usr/bin/tmux";

fn tmux(socket: &Path, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new(TMUX)
        .arg("-S")
        .arg(socket)
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!("tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` on the pane until it returns Some or the hang bound passes.
fn wait_for<T>(
    socket: &Path,
    what: &str,
    check: impl Fn(&str) -> Option<T>,
) -> Result<T, Box<dyn std::error::Error>> {
    let start = Instant::now();
    loop {
        let pane = tmux(socket, &["capture-pane", "-p", "-t", "mon"])?;
        if let Some(v) = check(&pane) {
            return Ok(v);
        }
        if start.elapsed() > crate::HANG {
            return Err(format!("never saw {what}; the pane:\n{pane}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sample number in the live view's header line.
fn sample_number(pane: &str) -> Option<u64> {
    let line = pane.lines().find(|l| l.starts_with("db-monitor live"))?;
    let rest = line.split("sample ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A tmux server of its own running `args` of db-monitor in a shell script that then
/// prints the exit code and the terminal's modes; killed on drop.
struct Session {
    socket: std::path::PathBuf,
}

impl Session {
    fn start(dir: &Path, args: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let socket = dir.join("tmux.sock");
        let script = dir.join("run.sh");
        std::fs::write(
            &script,
            format!(
                "export HOME='{home}' XDG_DATA_HOME='{home}/xdg' XDG_RUNTIME_DIR='{home}/run' TMPDIR='{home}/tmp' ECOSYSTEMISER_DB_PATH='{home}/none.db'\n\
                 '{bin}' {args}\n\
                 echo \"exit=$?\"\n\
                 stty -a | tr ' ' '\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '\n\
                 echo\n\
                 exec sleep 600\n",
                home = dir.display(),
                bin = env!("CARGO_BIN_EXE_db-monitor"),
            ),
        )?;
        tmux(
            &socket,
            &[
                "new-session",
                "-d",
                "-s",
                "mon",
                "-x",
                "160",
                "-y",
                "40",
                "sh",
                &script.display().to_string(),
            ],
        )?;
        Ok(Self { socket })
    }

    fn pane(&self) -> Result<String, Box<dyn std::error::Error>> {
        tmux(&self.socket, &["capture-pane", "-p", "-t", "mon"])
    }

    fn flag(&self, name: &str) -> Result<String, Box<dyn std::error::Error>> {
        Ok(tmux(
            &self.socket,
            &["display", "-p", "-t", "mon", &format!("#{{{name}}}")],
        )?
        .trim()
        .to_owned())
    }

    /// Waits for the script's lines after db-monitor ended and checks the terminal is back
    /// as it was: off the alternate screen, cursor shown, cooked mode with echo. Returns the
    /// pane.
    fn assert_restored(&self) -> Result<String, Box<dyn std::error::Error>> {
        let pane = wait_for(&self.socket, "the terminal modes", |p| {
            (p.contains("exit=") && p.contains("icanon")).then(|| p.to_owned())
        })?;
        let modes = pane.lines().find(|l| l.contains("icanon")).unwrap_or("");
        let modes: Vec<&str> = modes.split_whitespace().collect();
        assert!(
            modes.contains(&"icanon") && modes.contains(&"echo"),
            "still raw: {pane}"
        );
        assert_eq!(self.flag("alternate_on")?, "0", "{pane}");
        assert_eq!(self.flag("cursor_flag")?, "1", "{pane}");
        Ok(pane)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = tmux(&self.socket, &["kill-server"]);
    }
}

/// Bug caught: a live view that scrolls instead of redrawing in place, does not redraw at
/// all, ignores `q`, or leaves the terminal in raw mode or on the alternate screen.
#[test]
fn live_view_redraws_and_q_restores_the_terminal() -> TestResult {
    if !Path::new(TMUX).exists() {
        println!("skipped: {TMUX} is not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("inv.db");
    make_db(&db, 5)?;
    let session = Session::start(
        dir.path(),
        &format!(
            "--continuous --interval 200ms --db 'inventory={}'",
            db.display()
        ),
    )?;
    let first = wait_for(&session.socket, "a first sample", sample_number)?;
    let later = wait_for(&session.socket, "a later sample", |p| {
        sample_number(p).filter(|n| *n >= first + 2)
    })?;
    assert!(later > first);
    let pane = session.pane()?;
    // Redrawn in place: one header, at the top, and the alternate screen is on.
    assert_eq!(pane.matches("db-monitor live").count(), 1, "{pane}");
    assert!(pane.starts_with("db-monitor live"), "{pane}");
    assert!(pane.contains("inventory"), "{pane}");
    assert_eq!(session.flag("alternate_on")?, "1");
    tmux(&session.socket, &["send-keys", "-t", "mon", "q"])?;
    let pane = session.assert_restored()?;
    assert!(pane.contains("exit=0"), "{pane}");
    assert!(pane.contains("samples over"), "no summary: {pane}");
    Ok(())
}

/// Bug caught: an error in the middle of the live view (here the history file cannot be
/// written) leaving the terminal raw and on the alternate screen, or its message lost there.
#[test]
fn live_view_error_restores_the_terminal() -> TestResult {
    let full = Path::new("/dev/full");
    if !Path::new(TMUX).exists() || !full.exists() {
        println!("skipped: {TMUX} or /dev/full is not there");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("inv.db");
    make_db(&db, 5)?;
    let session = Session::start(
        dir.path(),
        &format!(
            "--continuous --interval 200ms --output {} --db 'inventory={}'",
            full.display(),
            db.display()
        ),
    )?;
    let pane = session.assert_restored()?;
    assert!(pane.contains("exit=3"), "{pane}");
    assert!(
        pane.contains("cannot write the history to /dev/full"),
        "{pane}"
    );
    Ok(())
}

/// Starts `db-monitor --continuous` on a database `inv.db` in `dir` in a detached tmux
/// session (100x30) run by a shell script: `before` (lines, ending with the start of the
/// command's line if need be), the command, then `after` on its line. Returns tmux's socket.
fn watch_in_tmux(
    dir: &Path,
    before: &str,
    after: &str,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let db = dir.join("inv.db");
    make_db(&db, 5)?;
    let socket = dir.join("tmux.sock");
    let script = dir.join("run.sh");
    std::fs::write(
        &script,
        format!(
            "export HOME='{home}' XDG_DATA_HOME='{home}/xdg' XDG_RUNTIME_DIR='{home}/run' TMPDIR='{home}/tmp' ECOSYSTEMISER_DB_PATH='{home}/none.db'\n\
             {before}'{bin}' --continuous --interval 200ms --db 'inventory={db}'{after}\n",
            home = dir.display(),
            bin = env!("CARGO_BIN_EXE_db-monitor"),
            db = db.display(),
        ),
    )?;
    tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "mon",
            "-x",
            "100",
            "-y",
            "30",
            "sh",
            &script.display().to_string(),
        ],
    )?;
    Ok(socket)
}

/// Bug caught: the live view spinning forever at full CPU once its terminal is gone (the
/// tmux server killed, an ssh session dropped), because the key reader loops on end of file
/// and never returns to look at the hang-up.
#[test]
fn live_view_ends_when_its_terminal_goes_away() -> TestResult {
    if !Path::new(TMUX).exists() {
        println!("skipped: {TMUX} is not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let pid_file = dir.path().join("pid");
    let socket = watch_in_tmux(
        dir.path(),
        &format!("echo $$ > '{}'\nexec ", pid_file.display()),
        "",
    )?;
    let result = (|| -> TestResult {
        wait_for(&socket, "a first sample", sample_number)?;
        let pid = std::fs::read_to_string(&pid_file)?.trim().to_owned();
        let proc_dir = Path::new("/proc").join(&pid);
        tmux(&socket, &["kill-server"])?;
        let start = Instant::now();
        loop {
            // Gone, or a zombie waiting for its new parent to reap it.
            let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
            let state = state
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            if matches!(state, None | Some("Z" | "X")) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(20) {
                // Leave nothing behind, then fail.
                let _ = Command::new("kill").arg("-9").arg(&pid).status();
                return Err(
                    format!("db-monitor {pid} still running after its terminal went away").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })();
    let _ = tmux(&socket, &["kill-server"]);
    result
}

/// Bug caught: a live view whose terminal hung up (an ssh session dropped, the window
/// closed) ended with exit 3 and "Input/output error" (its writes to the hung-up terminal
/// failing), though the run ends there as on `q`, with the worst status seen: a wrapper
/// that outlives the hang-up (`nohup`, a supervisor) read a failure where every sample was
/// healthy.
#[test]
fn live_view_ends_with_its_status_when_its_terminal_hangs_up() -> TestResult {
    if !Path::new(TMUX).exists() {
        println!("skipped: {TMUX} is not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let exit_file = dir.path().join("exit");
    // The shell ignores the hang-up, so that it outlives the terminal and writes down how
    // db-monitor ended (which handles SIGHUP itself).
    let socket = watch_in_tmux(
        dir.path(),
        "trap '' HUP\n",
        &format!(
            " 2> '{}/stderr'\necho \"exit=$?\" > '{}'",
            dir.path().display(),
            exit_file.display()
        ),
    )?;
    wait_for(&socket, "a first sample", sample_number)?;
    tmux(&socket, &["kill-server"])?;
    let start = Instant::now();
    while !exit_file.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = std::fs::read_to_string(&exit_file).unwrap_or_default();
    if ended.is_empty() {
        // Leave nothing behind, then fail.
        let _ = Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(dir.path().join("inv.db").display().to_string())
            .status();
    }
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    assert_eq!(ended.trim(), "exit=0", "stderr: {stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    Ok(())
}

/// The `sample N/M` of the replay's header.
fn replay_position(pane: &str) -> Option<(usize, usize)> {
    let line = pane.lines().find(|l| l.starts_with("db-monitor replay"))?;
    let (n, m) = line
        .split("sample ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .split_once('/')?;
    Some((n.parse().ok()?, m.parse().ok()?))
}

/// Bug caught: `--replay --continuous` on a terminal not stepping (keys ignored, a step
/// past either end, the live view's clock running instead), or `q` leaving the terminal
/// raw, or no summary after it.
#[test]
fn replay_steps_through_the_samples() -> TestResult {
    if !Path::new(TMUX).exists() {
        println!("skipped: {TMUX} is not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (history, lines) = crate::replay::record(dir.path())?;
    let session = Session::start(
        dir.path(),
        &format!("--replay '{}' --continuous", history.display()),
    )?;
    let total = lines.len();
    let at = |want: usize| {
        wait_for(&session.socket, &format!("sample {want}/{total}"), |p| {
            replay_position(p).filter(|&(n, m)| n == want && m == total)
        })
    };
    at(1)?;
    let key = |k: &str| tmux(&session.socket, &["send-keys", "-t", "mon", k]);
    key("Left")?;
    key("Right")?;
    at(2)?;
    key("Space")?;
    at(3)?;
    key("Left")?;
    at(2)?;
    key("End")?;
    at(total)?;
    key("Right")?;
    key("Home")?;
    at(1)?;
    let pane = session.pane()?;
    assert!(pane.contains("inventory"), "{pane}");
    key("q")?;
    let pane = session.assert_restored()?;
    assert!(pane.contains("exit=0"), "{pane}");
    assert!(
        pane.contains(&format!("{total} samples over")),
        "no summary: {pane}"
    );
    Ok(())
}

/// Bug caught: a file that appears in the announcement folder during the live view warned
/// about on stderr, which the next redraw wipes out, instead of under the view (and again
/// once it ends); or not warned about at all.
#[test]
fn live_view_shows_warnings_under_the_view() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    if !Path::new(TMUX).exists() {
        println!("skipped: {TMUX} is not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    // No source named: the default database, and the registries announced in `run/`.
    make_db(&dir.path().join("none.db"), 5)?;
    let folder = dir.path().join("run").join("hive-db");
    std::fs::create_dir_all(&folder)?;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))?;
    let session = Session::start(dir.path(), "--continuous --interval 100ms")?;
    wait_for(&session.socket, "a first sample", sample_number)?;
    std::fs::write(folder.join("stray.json"), "not an announcement")?;
    let pane = wait_for(&session.socket, "the warning under the view", |p| {
        p.contains("ignoring").then(|| p.to_owned())
    })?;
    assert!(pane.contains("Notes"), "{pane}");
    assert!(
        pane.contains("stray.json: not a hive-db endpoint announcement"),
        "{pane}"
    );
    // Still there a few samples later: not wiped by a redraw.
    let later = wait_for(&session.socket, "later samples", |p| {
        sample_number(p).filter(|n| *n >= 5).map(|_| p.to_owned())
    })?;
    assert!(later.contains("stray.json"), "{later}");
    tmux(&session.socket, &["send-keys", "-t", "mon", "q"])?;
    let pane = session.assert_restored()?;
    assert!(pane.contains("db-monitor: ignoring"), "{pane}");
    Ok(())
}

/// Bug caught: the live view of a registry with a PostgreSQL database without the engine
/// column or the servers table (the one-shot report has them, the redrawn view is drawn
/// apart), or its down replica not carried into the exit code.
#[test]
fn live_view_shows_engines_and_servers() -> TestResult {
    hive_pg_harness::require_postgres!();
    if !Path::new(TMUX).exists() {
        println!("skipped: {TMUX} is not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let replica_port = crate::postgres::closed_port()?;
    let (registry, _) = crate::postgres::mixed_registry(dir.path(), replica_port)?;
    let server = crate::server::serve_registry(&registry)?;
    let session = Session::start(
        dir.path(),
        &format!("--continuous --interval 200ms --attach {}", server.addr()),
    )?;
    let row =
        |pane: &str, parts: &[&str]| pane.lines().any(|l| parts.iter().all(|p| l.contains(p)));
    let replica = format!(":{replica_port}/orders");
    let pane = wait_for(&session.socket, "the engines and servers", |p| {
        (row(p, &["orders", "postgres", "degraded"])
            && row(p, &["inventory", "sqlite", "healthy"])
            && p.contains("PostgreSQL servers")
            && row(p, &["orders", "primary", " up "])
            && row(p, &["orders", "replica", &replica, " down "]))
        .then(|| p.to_owned())
    })?;
    assert!(pane.starts_with("db-monitor live"), "{pane}");
    tmux(&session.socket, &["send-keys", "-t", "mon", "q"])?;
    let pane = session.assert_restored()?;
    assert!(pane.contains("exit=1"), "{pane}");
    Ok(())
}
