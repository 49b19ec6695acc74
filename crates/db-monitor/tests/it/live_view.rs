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
    let socket = dir.path().join("tmux.sock");
    let script = dir.path().join("run.sh");
    std::fs::write(
        &script,
        format!(
            "export HOME='{home}' XDG_DATA_HOME='{home}/xdg' ECOSYSTEMISER_DB_PATH='{home}/none.db'\n\
             '{bin}' --continuous --interval 200ms --db 'inventory={db}'\n\
             echo \"exit=$?\"\n\
             stty -a | tr ' ' '\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '\n\
             echo\n\
             exec sleep 600\n",
            home = dir.path().display(),
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
            "160",
            "-y",
            "40",
            "sh",
            &script.display().to_string(),
        ],
    )?;
    let result = (|| -> TestResult {
        let first = wait_for(&socket, "a first sample", sample_number)?;
        let later = wait_for(&socket, "a later sample", |p| {
            sample_number(p).filter(|n| *n >= first + 2)
        })?;
        assert!(later > first);
        let pane = tmux(&socket, &["capture-pane", "-p", "-t", "mon"])?;
        // Redrawn in place: one header, at the top, and the alternate screen is on.
        assert_eq!(pane.matches("db-monitor live").count(), 1, "{pane}");
        assert!(pane.starts_with("db-monitor live"), "{pane}");
        assert!(pane.contains("inventory"), "{pane}");
        assert_eq!(
            tmux(&socket, &["display", "-p", "-t", "mon", "#{alternate_on}"])?.trim(),
            "1"
        );
        tmux(&socket, &["send-keys", "-t", "mon", "q"])?;
        let pane = wait_for(&socket, "the exit line", |p| {
            p.contains("exit=").then(|| p.to_owned())
        })?;
        assert!(pane.contains("exit=0"), "{pane}");
        assert!(pane.contains("samples over"), "no summary: {pane}");
        // Restored: off the alternate screen, cursor shown, cooked mode with echo.
        let pane = wait_for(&socket, "the terminal modes", |p| {
            p.contains("icanon").then(|| p.to_owned())
        })?;
        assert!(
            pane.contains(" icanon") || pane.contains("\nicanon"),
            "still raw: {pane}"
        );
        assert!(
            !pane.contains("-icanon") && !pane.contains("-echo "),
            "still raw: {pane}"
        );
        assert_eq!(
            tmux(&socket, &["display", "-p", "-t", "mon", "#{alternate_on}"])?.trim(),
            "0"
        );
        assert_eq!(
            tmux(&socket, &["display", "-p", "-t", "mon", "#{cursor_flag}"])?.trim(),
            "1"
        );
        Ok(())
    })();
    let _ = tmux(&socket, &["kill-server"]);
    result
}
