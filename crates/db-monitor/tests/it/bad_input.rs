//! Bad input: one line on stderr naming the problem, exit 3, no panic, no file created.

use std::net::TcpListener;

use crate::server::FakeServer;
use crate::{TestResult, files_under, make_db, monitor, run};

/// Runs the monitor with `args` plus `--output` into a fresh folder and checks the common
/// rules: exit `code`, one stderr line containing `want`, nothing on stdout, no file made.
fn refused(args: &[&str], code: i32, want: &str) -> TestResult {
    let dir = tempfile::tempdir()?;
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir)?;
    let output = out_dir.join("report.json");
    let r = run(monitor(dir.path()).args(args).arg("--output").arg(&output))?;
    assert_eq!(r.code, Some(code), "{args:?}: {r:?}");
    let lines = r.stderr_lines();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {}", r.stderr);
    assert!(
        lines[0].contains(want),
        "{args:?}: {:?} does not name {want:?}",
        lines[0]
    );
    assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    assert!(files_under(&out_dir).is_empty(), "{args:?} created a file");
    assert!(
        !dir.path().join("default").exists(),
        "{args:?} created the default database"
    );
    Ok(())
}

/// Bug caught: clap's own exit code 2 (which means unhealthy here) for a usage error, or
/// its multi-line message.
#[test]
fn unknown_flag() -> TestResult {
    refused(&["--no-such-flag"], 3, "--no-such-flag")
}

/// Bug caught: `--db` values without `=`, with an empty path or a bad name accepted.
#[test]
fn malformed_db_specs() -> TestResult {
    refused(&["--db", "inventory"], 3, "NAME=PATH")?;
    refused(&["--db", "inventory="], 3, "no PATH")?;
    refused(&["--db", "bad name!=x.db"], 3, "bad database name")
}

/// Bug caught: two databases under one name, the second silently winning.
#[test]
fn duplicate_name() -> TestResult {
    refused(
        &["--db", "a=/x/1.db", "--db", "a=/x/2.db"],
        3,
        "given twice",
    )
}

/// Bug caught: durations that do not parse, a zero interval (a busy loop), a negative one
/// taken for an unknown flag or accepted, one so long the monitor panicked, or `--duration`
/// without `--continuous` ignored;
/// any of them ending with clap's exit code 2 instead of 3.
#[test]
fn bad_durations() -> TestResult {
    refused(&["--continuous", "--interval", "soon"], 3, "not a duration")?;
    refused(&["--continuous", "--interval", "0s"], 3, "zero")?;
    refused(&["--continuous", "--interval", "0"], 3, "zero")?;
    refused(&["--continuous", "--interval", "-1"], 3, "`-1` is negative")?;
    refused(&["--continuous", "--interval", "0.001"], 3, "too short")?;
    refused(&["--continuous", "--duration", "0"], 3, "zero")?;
    refused(&["--continuous", "--duration", "-30"], 3, "negative")?;
    refused(&["--slow", "fast"], 3, "not a duration")?;
    refused(&["--timeout", "NaN"], 3, "not a number of seconds")?;
    refused(&["--duration", "1s"], 3, "--continuous")?;
    refused(&["--probe", "0"], 3, "zero")?;
    refused(&["--probe", "2h"], 3, "at most 1h")?;
    // These panicked: SQLite's busy timeout and `Instant` arithmetic overflowed.
    refused(&["--timeout", "30d"], 3, "at most 24h")?;
    refused(&["--continuous", "--interval", "1e19"], 3, "too long")?;
    refused(&["--continuous", "--duration", "1e19"], 3, "at most 365d")?;
    refused(&["--continuous", "--probe", "1"], 3, "cannot be used with")
}

/// Bug caught: a config file that is missing, has a bad line, or lists nothing, read as
/// "no databases" and reported healthy.
#[test]
fn bad_config_files() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("none.conf");
    refused(
        &["--config", &missing.display().to_string()],
        3,
        "cannot read config file",
    )?;
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "a = a.db\nthis line is wrong\n")?;
    refused(&["--config", &bad.display().to_string()], 3, "line 2")?;
    let empty = dir.path().join("empty.conf");
    std::fs::write(&empty, "# nothing here\n")?;
    refused(
        &["--config", &empty.display().to_string()],
        3,
        "lists no database",
    )
}

/// Bug caught: a `--config` that is a FIFO (whose open waited for a writer without end) or
/// a device such as `/dev/zero` (read until memory ran out: 4 GB in 6 s), or a huge file.
#[test]
fn config_files_that_never_end() -> TestResult {
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("fifo.conf");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    assert!(made.success());
    refused(
        &["--config", &fifo.display().to_string()],
        3,
        "not a regular file",
    )?;
    refused(&["--config", "/dev/zero"], 3, "not a regular file")?;
    let huge = dir.path().join("huge.conf");
    std::fs::write(&huge, "# padding\n".repeat(200_000))?;
    refused(&["--config", &huge.display().to_string()], 3, "larger than")
}

/// Bug caught: an `--output` that is a FIFO nobody reads: its open waited for a reader
/// without end, and in `--continuous` Ctrl-C and SIGTERM could not stop it (their handler
/// only asks the sampling loop to stop, which had not begun).
#[test]
fn an_output_fifo_nobody_reads_is_refused_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("a.db");
    make_db(&db, 1)?;
    let fifo = dir.path().join("out.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    assert!(made.success());
    let spec = format!("a={}", db.display());
    for continuous in [false, true] {
        let mut cmd = monitor(dir.path());
        cmd.args(["--db", &spec, "--output"]).arg(&fifo);
        if continuous {
            cmd.args(["--continuous", "--duration", "1", "--interval", "0.2"]);
        }
        let r = run(&mut cmd)?;
        assert_eq!(r.code, Some(3), "continuous {continuous}: {r:?}");
        assert!(
            r.stderr.contains("FIFO that no process reads"),
            "continuous {continuous}: {}",
            r.stderr
        );
    }
    Ok(())
}

/// Bug caught: an endpoint that refuses connections reported as an unhealthy database
/// (exit 2) or hanging past the timeout.
#[test]
fn unreachable_endpoint() -> TestResult {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    refused(
        &["--attach", &format!("127.0.0.1:{port}")],
        3,
        "cannot reach",
    )?;
    refused(&["--attach", "localhost"], 3, "no port")
}

/// Bug caught: an endpoint that sends its headers and then trickles the body failed with
/// the HTTP client's bare "timeout: global", not naming what took too long.
#[test]
fn an_answer_that_trickles_past_the_timeout_says_so() -> TestResult {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut w = &stream;
                let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{{");
                for _ in 0..100 {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    if write!(w, " ").is_err() {
                        return;
                    }
                }
            });
        }
    });
    refused(
        &["--timeout", "0.5", "--attach", &addr.to_string()],
        3,
        "not all of it came within",
    )
}

/// Bug caught: any HTTP server taken for a hive-db endpoint, failing later with a serde
/// message or reporting an empty registry as healthy; an error answer's reason dropped.
#[test]
fn not_a_hive_endpoint() -> TestResult {
    let html = FakeServer::start(|_| (200, "<html>hello</html>".to_owned()))?;
    refused(&["--attach", &html.url()], 3, "not a hive-db endpoint")?;
    let other_json = FakeServer::start(|_| (200, r#"{"databases": []}"#.to_owned()))?;
    refused(&["--attach", &other_json.url()], 3, "no schema_version")?;
    let missing = FakeServer::start(|_| (404, "not found".to_owned()))?;
    refused(&["--attach", &missing.url()], 3, "HTTP 404: not found")?;
    // An endpoint's 500 says why, and the message passes it on.
    let failing = FakeServer::start(|_| {
        (
            500,
            "cannot encode the answer: path contains invalid UTF-8 characters\n".to_owned(),
        )
    })?;
    refused(
        &["--attach", &failing.url()],
        3,
        "HTTP 500: cannot encode the answer",
    )?;
    let newer = FakeServer::start(|_| (200, r#"{"schema_version": 99}"#.to_owned()))?;
    refused(&["--attach", &newer.url()], 3, "version 99")
}

/// Bug caught: a default path rule that takes an empty ECOSYSTEMISER_DB_PATH as the
/// working folder.
#[test]
fn empty_default_path_variable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let r = run(monitor(dir.path()).env("ECOSYSTEMISER_DB_PATH", ""))?;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(
        r.stderr.contains("ECOSYSTEMISER_DB_PATH is set but empty"),
        "{}",
        r.stderr
    );
    Ok(())
}

/// Bug caught: `--help` or `--version` mapped to exit 3 with the other clap errors, or the
/// exit codes or the way to write a duration missing from the help.
#[test]
fn help_and_version_exit_zero() -> TestResult {
    let dir = tempfile::tempdir()?;
    let r = run(monitor(dir.path()).arg("--help"))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    for want in [
        "Exit status",
        "0  healthy",
        "1  degraded",
        "2  unhealthy",
        "3  could not run",
        "A DURATION is a number of seconds",
    ] {
        assert!(
            r.stdout.contains(want),
            "help lacks {want:?}:\n{}",
            r.stdout
        );
    }
    let r = run(monitor(dir.path()).arg("--version"))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("db-monitor "), "{}", r.stdout);
    Ok(())
}

/// Bug caught: a report written to stdout panicking on a closed pipe (Rust ignores SIGPIPE,
/// so the write fails) instead of ending quietly with 0.
#[test]
fn closed_pipe_one_shot_ends_quietly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("inv.db");
    make_db(&db, 5)?;
    // The reader is gone before anything is written (dropping the parent's end after the
    // spawn left a window in which a short report fit in the pipe before it closed).
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let child = monitor(dir.path())
        .stdout(writer)
        .arg("--db")
        .arg(format!("inventory={}", db.display()))
        .spawn()?;
    let r = crate::finish(child)?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    Ok(())
}

/// Bug caught: a closed pipe ended the report with 0 whatever its status, so a check that
/// piped it (`db-monitor | head -3`) saw "healthy" for an unhealthy database whenever the
/// report was longer than the pipe took, and the status it saw depended on the report's
/// length. One-shot and `--continuous` alike.
#[test]
fn a_closed_pipe_keeps_the_exit_status() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing.db");
    for continuous in [false, true] {
        let mut cmd = monitor(dir.path());
        if continuous {
            cmd.args(["--continuous", "--interval", "50ms"]);
        }
        // A pipe whose reader is gone before the monitor starts: every write to it fails,
        // however short the report.
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let child = cmd
            .stdout(writer)
            .arg("--db")
            .arg(format!("inventory={}", missing.display()))
            .spawn()?;
        let r = crate::finish(child)?;
        assert_eq!(r.code, Some(2), "continuous {continuous}: {r:?}");
    }
    Ok(())
}
