//! `--replay FILE`: a recording made with `--continuous --output FILE`, shown again as a
//! summary and the worst interval, as JSON lines, and refused when cut off or foreign.

use std::path::{Path, PathBuf};

use hive_db_core::{DbConfig, DbName, Registry};

use crate::server::serve_registry;
use crate::{TestResult, monitor, run};

/// Records `--continuous --output` of a registry served in the test for about 1.5 s;
/// returns the recording and its lines.
pub(crate) fn record(
    dir: &Path,
) -> Result<(PathBuf, Vec<serde_json::Value>), Box<dyn std::error::Error>> {
    let registry = Registry::new();
    let name = DbName::new("inventory")?;
    let config = DbConfig {
        create_if_missing: true,
        ..DbConfig::default()
    };
    registry.register(&name, dir.join("inv.db"), config)?;
    for _ in 0..10 {
        drop(registry.get(&name)?);
    }
    let server = serve_registry(&registry)?;
    let history = dir.join("history.jsonl");
    let r = run(monitor(dir)
        .args([
            "--continuous",
            "--duration",
            "1",
            "--interval",
            "0.2",
            "--output",
        ])
        .arg(&history)
        .arg("--attach")
        .arg(server.addr().to_string()))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let lines = std::fs::read_to_string(&history)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<serde_json::Value>, _>>()?;
    // Up to 8 (0, 200, ..., 1400 ms); fewer when late ticks are skipped.
    assert!(lines.len() >= 4, "{} samples recorded", lines.len());
    Ok((history, lines))
}

fn write_lines(path: &Path, lines: &[serde_json::Value]) -> std::io::Result<()> {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text)
}

/// Bug caught: a replay that does not read the recording back (no summary, a wrong sample
/// count), that picks the last or first sample instead of the worst one, or exits with the
/// status of another sample than the worst.
#[test]
fn replay_shows_the_summary_and_the_worst_interval() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (history, mut lines) = record(dir.path())?;
    let r = run(monitor(dir.path()).arg("--replay").arg(&history))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("db-monitor: {} samples over", lines.len())),
        "{}",
        r.stdout
    );
    // An interval: not the first sample, which has none before it.
    let worst: usize = r
        .stdout
        .split("Worst interval: sample ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or("no worst interval")?;
    assert!((1..lines.len()).contains(&worst), "{}", r.stdout);
    assert!(r.stdout.contains("inventory"), "{}", r.stdout);
    assert!(r.stdout.contains("acq/s"), "{}", r.stdout);

    // Two samples in the middle turned degraded, the second with more findings: that one
    // is shown (neither the first interval nor the last sample), and its status is the exit
    // code.
    let leak = serde_json::json!(
        {"status": "degraded", "kind": "leak", "message": "1 connection(s) held past leak_threshold now"}
    );
    lines[1]["databases"][0]["findings"] = serde_json::json!([leak.clone()]);
    lines[2]["databases"][0]["findings"] = serde_json::json!([leak.clone(), leak]);
    let edited = dir.path().join("edited.jsonl");
    write_lines(&edited, &lines)?;
    let r = run(monitor(dir.path()).arg("--replay").arg(&edited))?;
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout.contains("Worst interval: sample 2 "),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("worst status DEGRADED"), "{}", r.stdout);
    assert!(
        r.stdout.contains("held past leak_threshold"),
        "{}",
        r.stdout
    );
    Ok(())
}

/// Bug caught: `--replay --continuous` on a pipe drawing the live view, dropping or
/// reordering samples, or changing what they say (a replay must give back the lines that
/// were recorded); or the summary mixed into the JSON on stdout.
#[test]
fn replay_piped_gives_the_json_lines_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (history, lines) = record(dir.path())?;
    let r = run(monitor(dir.path())
        .args(["--continuous", "--replay"])
        .arg(&history))?;
    assert_eq!(r.code, Some(0), "{r:?}");
    let got = r
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<serde_json::Value>, _>>()?;
    assert_eq!(got, lines);
    assert!(r.stderr.contains("samples over"), "{}", r.stderr);
    Ok(())
}

/// Bug caught: a recording cut off in the middle of a line (the monitor killed while
/// writing) replayed as if whole or refused without saying so; a file that is not a
/// recording (another program's JSON, text, a newer report version) replayed as empty
/// samples instead of exit 3 with what is wrong; a device read without end.
#[test]
fn truncated_and_foreign_files_exit_3() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A device: read to its end, it filled memory until the process was killed.
    let r = run(monitor(dir.path()).arg("--replay").arg("/dev/zero"))?;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);

    let (history, lines) = record(dir.path())?;
    let text = std::fs::read_to_string(&history)?;
    let cut = dir.path().join("cut.jsonl");
    std::fs::write(&cut, &text[..text.len() - 20])?;
    let r = run(monitor(dir.path()).arg("--replay").arg(&cut))?;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert_eq!(r.stderr_lines().len(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("cut.jsonl") && r.stderr.contains("truncated"),
        "{}",
        r.stderr
    );

    let mut newer = lines.clone();
    newer[0]["report_version"] = 99.into();
    let cases = [
        ("text.jsonl", "hello\nworld\n".to_owned(), "not JSON"),
        (
            "other.json",
            "{\"name\":\"x\"}\n{\"name\":\"y\"}\n".to_owned(),
            "not a db-monitor report",
        ),
        (
            "newer.jsonl",
            newer.iter().map(|l| format!("{l}\n")).collect(),
            "report version 99",
        ),
        ("empty.jsonl", String::new(), "no samples"),
    ];
    for (name, content, why) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content)?;
        let r = run(monitor(dir.path()).arg("--replay").arg(&path))?;
        assert_eq!(r.code, Some(3), "{name}: {r:?}");
        assert!(
            r.stderr.contains(name) && r.stderr.contains(why),
            "{name}: {}",
            r.stderr
        );
    }
    let r = run(monitor(dir.path())
        .arg("--replay")
        .arg(dir.path().join("missing.jsonl")))?;
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(
        r.stderr.contains("cannot read the recording"),
        "{}",
        r.stderr
    );
    Ok(())
}
