//! `--continuous` when stdout is not a terminal: JSON lines, the history file, the bounded
//! loop, and a closed pipe.

use std::io::{BufRead, BufReader};

use crate::{TestResult, make_db, monitor, run};

fn lines(stdout: &str) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    stdout.lines().map(serde_json::from_str).collect()
}

/// Bug caught: a table or escape codes on a pipe instead of JSON lines, samples that are
/// not numbered in order, `--duration` ignored, bare numbers not read as seconds (`1` and
/// `0.2`, as `vmstat 1` reads them), or the history thrown away instead of kept in
/// `--output`.
#[test]
fn json_lines_when_piped_and_history_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("inv.db");
    make_db(&db, 5)?;
    let history = dir.path().join("history.jsonl");
    let r = run(monitor(dir.path())
        .args([
            "--continuous",
            "--duration",
            "1",
            "--interval",
            "0.2",
            "--output",
        ])
        .arg(&history)
        .arg("--db")
        .arg(format!("inventory={}", db.display())))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let got = lines(&r.stdout)?;
    // Samples at 0, 200, ..., 1000 ms: six, fewer on a loaded machine (late ticks are
    // skipped), never more.
    assert!(
        (2..=6).contains(&got.len()),
        "{} lines:\n{}",
        got.len(),
        r.stdout
    );
    for (i, line) in got.iter().enumerate() {
        assert_eq!(line["sample"], i as u64);
        assert_eq!(line["status"], "healthy");
        assert_eq!(line["databases"][0]["name"], "inventory");
    }
    let kept = lines(&std::fs::read_to_string(&history)?)?;
    assert_eq!(kept, got);
    // The summary goes to stderr, away from the data.
    assert!(r.stderr.contains("samples over"), "{}", r.stderr);
    Ok(())
}

/// Bug caught: a `--duration` shorter than `--interval` ending the run after its first
/// sample (no rates, "1 samples over 0ns") instead of taking the last one when the
/// duration ends.
#[test]
fn a_duration_shorter_than_the_interval_still_samples_at_its_end() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("inv.db");
    make_db(&db, 5)?;
    let start = std::time::Instant::now();
    let r = run(monitor(dir.path())
        .args([
            "--continuous",
            "--duration",
            "0.5",
            "--interval",
            "30",
            "--db",
        ])
        .arg(format!("inventory={}", db.display())))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let got = lines(&r.stdout)?;
    assert_eq!(got.len(), 2, "{}", r.stdout);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "waited for the interval, past the duration"
    );
    assert!(r.stderr.contains("2 samples over"), "{}", r.stderr);
    Ok(())
}

/// Bug caught: the error path of the loop spinning without waiting for the next interval
/// (thousands of lines a second), or an error ending the run instead of being reported.
#[test]
fn errors_wait_for_the_next_interval() -> TestResult {
    let dir = tempfile::tempdir()?;
    let r = run(monitor(dir.path())
        .args([
            "--continuous",
            "--duration",
            "1s",
            "--interval",
            "200ms",
            "--db",
        ])
        .arg(format!("gone={}", dir.path().join("gone.db").display())))?;
    assert_eq!(r.code, Some(2), "{r:?}");
    let got = lines(&r.stdout)?;
    assert!((2..=6).contains(&got.len()), "{} lines", got.len());
    assert!(got.iter().all(|l| l["status"] == "unhealthy"));
    Ok(())
}

/// Bug caught: a closed pipe (`| head -1`) making the monitor panic, print an error, or run
/// on forever, instead of ending quietly with 0.
#[test]
fn closed_pipe_ends_quietly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("inv.db");
    make_db(&db, 5)?;
    let mut child = monitor(dir.path())
        .args(["--continuous", "--interval", "50ms", "--db"])
        .arg(format!("inventory={}", db.display()))
        .spawn()?;
    {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        assert!(first.starts_with("{\"sample\":0"), "{first}");
        // Dropping the reader closes the pipe, as `head -1` does.
    }
    let r = crate::finish(child)?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    Ok(())
}
