//! `--replay FILE`: the samples `--continuous --output FILE` recorded, shown again: the
//! summary and the worst interval's tables, or with `--continuous` the live view stepped
//! through on a terminal and JSON lines elsewhere.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use super::Line;
use super::screen::{self, Screen};
use super::tally::Tallies;
use crate::output::{self, Written};
use crate::report::{REPORT_VERSION, Report};
use crate::{status, table};

/// How the recording is shown.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Step through the samples (on a terminal) or write them as JSON lines.
    pub(crate) continuous: bool,
    /// JSON even on a terminal.
    pub(crate) json: bool,
}

/// Shows the recording in `path`, and returns the exit code of the worst status it holds
/// (also when stdout was closed).
///
/// # Errors
///
/// A file that cannot be read, is empty, truncated, or not a db-monitor recording of this
/// report version; a terminal that cannot be set up.
pub(crate) fn run(path: &Path, settings: Settings) -> Result<u8> {
    // A device or FIFO has no end to read to (`/dev/zero` filled memory until it ran out).
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        anyhow::bail!(
            "cannot read the recording {}: not a regular file",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the recording {}", path.display()))?;
    let samples = parse(&text).with_context(|| format!("cannot replay {}", path.display()))?;
    let mut tallies = Tallies::default();
    for s in &samples {
        tallies.add(&s.report);
    }
    let code = status::exit_code(tallies.worst());
    let terminal = std::io::stdout().is_terminal() && !settings.json;
    let written = match (settings.continuous, terminal) {
        (true, true) => step(path, &samples)?,
        (true, false) => {
            let mut written = Written::Yes;
            for s in &samples {
                let line = serde_json::to_string(&Line {
                    sample: s.sample,
                    elapsed_s: s.elapsed_s,
                    report: &s.report,
                })
                .context("cannot encode a sample as JSON")?;
                written = output::stdout(&format!("{line}\n")).context("cannot write to stdout")?;
                if written == Written::PipeClosed {
                    break;
                }
            }
            let _ = std::io::stderr()
                .lock()
                .write_all(summary(&tallies, &samples).as_bytes());
            written
        }
        (false, _) => {
            let worst = worst(&samples);
            let text = if settings.json {
                let json = serde_json::to_string_pretty(&worst.report)
                    .context("cannot encode the report")?;
                let _ = std::io::stderr()
                    .lock()
                    .write_all(summary(&tallies, &samples).as_bytes());
                format!("{json}\n")
            } else {
                let width = terminal
                    .then(|| crossterm::terminal::size().ok().map(|(w, _)| w))
                    .flatten();
                format!(
                    "{}\nWorst interval: sample {} at {} elapsed\n\n{}",
                    summary(&tallies, &samples),
                    worst.sample,
                    elapsed(worst),
                    table::full(&worst.report, width)
                )
            };
            output::stdout(&text).context("cannot write to stdout")?
        }
    };
    // A closed pipe ends the replay quietly, with the recording's status all the same.
    let _: Written = written;
    Ok(code)
}

fn elapsed(s: &Line<Report>) -> String {
    humantime::format_duration(Duration::from_millis((s.elapsed_s * 1e3) as u64)).to_string()
}

/// The summary of the whole recording, as `--continuous` wrote it at its end.
fn summary(tallies: &Tallies, samples: &[Line<Report>]) -> String {
    let last = samples.last().map_or(0.0, |s| s.elapsed_s);
    tallies.summary(
        samples.len() as u64,
        Duration::try_from_secs_f64(last).unwrap_or_default(),
    )
}

/// The worst interval: the sample with the worst status, then the most findings, then the
/// longest acquire wait (the oldest waiter's, or the interval's p99); the first of equals.
/// The first sample has no interval before it, so it is chosen only when alone.
fn worst(samples: &[Line<Report>]) -> &Line<Report> {
    let key = |s: &Line<Report>| {
        let r = &s.report;
        let findings: usize = r.databases.iter().map(|d| d.findings.len()).sum();
        let wait = r
            .databases
            .iter()
            .flat_map(|d| {
                let maxwait = d.pool.as_ref().map(|p| p.maxwait_ms);
                let p99 = d.rates.as_ref().and_then(|r| r.acquire_wait_p99_ms);
                maxwait.into_iter().chain(p99)
            })
            .fold(0.0, f64::max);
        (r.status(), findings, wait)
    };
    let candidates = if samples.len() > 1 {
        &samples[1..]
    } else {
        samples
    };
    let mut best = &candidates[0];
    for s in &candidates[1..] {
        let (k, b) = (key(s), key(best));
        if (k.0, k.1)
            .cmp(&(b.0, b.1))
            .then(k.2.total_cmp(&b.2))
            .is_gt()
        {
            best = s;
        }
    }
    best
}

/// The samples of a recording: JSON lines as `--continuous` writes them (or the one JSON
/// report a one-shot `--output` writes).
///
/// # Errors
///
/// An empty file, a line that is not JSON (the last one: the file was cut off while being
/// written), or JSON that is not a db-monitor sample of [`REPORT_VERSION`].
fn parse(text: &str) -> Result<Vec<Line<Report>>> {
    // A one-shot report: one pretty-printed JSON object.
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text)
        && value.get("sample").is_none()
    {
        check_version(&value, "the file")?;
        let report =
            serde_json::from_value(value).context("the file is not a db-monitor report")?;
        return Ok(vec![Line {
            sample: 0,
            elapsed_s: 0.0,
            report,
        }]);
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut samples = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) if e.is_eof() && n == lines.len() && !text.ends_with('\n') => bail!(
                "it is truncated: line {n}, the last, ends in the middle of a sample (was the \
                 recording cut off?)"
            ),
            Err(_) => bail!("line {n} is not JSON: not a db-monitor recording"),
        };
        let place = format!("line {n}");
        check_version(&value, &place)?;
        if value
            .get("sample")
            .and_then(serde_json::Value::as_u64)
            .is_none()
        {
            bail!("{place} is not a db-monitor sample (no sample number)");
        }
        let sample: Line<Report> = serde_json::from_value(value)
            .with_context(|| format!("{place} is not a db-monitor sample"))?;
        samples.push(sample);
    }
    if samples.is_empty() {
        bail!("it holds no samples");
    }
    Ok(samples)
}

fn check_version(value: &serde_json::Value, place: &str) -> Result<()> {
    match value
        .get("report_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if v == u64::from(REPORT_VERSION) => Ok(()),
        Some(v) => {
            bail!("{place} is report version {v}; this db-monitor reads version {REPORT_VERSION}")
        }
        None => bail!("{place} is not a db-monitor report (no report_version)"),
    }
}

/// The live view, one sample at a time: → / space / ↓ next, ← / ↑ previous, Home / End the
/// first and last, `q` / Esc / Ctrl-C quits. The summary follows on stdout.
fn step(path: &Path, samples: &[Line<Report>]) -> Result<Written> {
    let total = samples.len();
    let interval = if total > 1 {
        Duration::try_from_secs_f64(
            (samples[total - 1].elapsed_s - samples[0].elapsed_s) / (total - 1) as f64,
        )
        .unwrap_or_default()
    } else {
        Duration::ZERO
    };
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut screen = Screen::enter()?;
    let mut at = 0usize;
    loop {
        // The trend and tallies as they stood at this sample.
        let mut tallies = Tallies::default();
        for s in &samples[..=at] {
            tallies.add(&s.report);
        }
        let s = &samples[at];
        let header = screen::header(
            &format!("replay {name}"),
            &format!("{}/{total}", at + 1),
            Duration::try_from_secs_f64(s.elapsed_s).unwrap_or_default(),
            interval,
            &s.report,
            "←/→ step, q quits",
        );
        match screen.draw(&header, &s.report, &tallies, &[]) {
            Ok(()) => {}
            // The terminal hung up: nothing more to show, nor a summary to show it on.
            Err(e) if output::gone(&e, true) => return Ok(Written::PipeClosed),
            Err(e) => return Err(e),
        }
        match next_key()? {
            Step::Next => at = (at + 1).min(total - 1),
            Step::Previous => at = at.saturating_sub(1),
            Step::First => at = 0,
            Step::Last => at = total - 1,
            Step::Redraw => {}
            Step::Quit => break,
        }
    }
    drop(screen);
    let mut tallies = Tallies::default();
    for s in samples {
        tallies.add(&s.report);
    }
    output::stdout(&summary(&tallies, samples)).context("cannot write to stdout")
}

/// What a key asks of the stepper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Next,
    Previous,
    First,
    Last,
    Redraw,
    Quit,
}

/// Waits for a key (or a resize, or the terminal going away, which quits).
fn next_key() -> Result<Step> {
    loop {
        let ev = match event::read() {
            Ok(ev) => ev,
            // The terminal went away: nothing more to show.
            Err(_) => return Ok(Step::Quit),
        };
        match ev {
            Event::Key(k) if k.kind != KeyEventKind::Release => {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                return Ok(match k.code {
                    _ if ctrl_c => Step::Quit,
                    KeyCode::Char('q') | KeyCode::Esc => Step::Quit,
                    KeyCode::Right
                    | KeyCode::Down
                    | KeyCode::PageDown
                    | KeyCode::Enter
                    | KeyCode::Char(' ' | 'l' | 'j' | 'n') => Step::Next,
                    KeyCode::Left
                    | KeyCode::Up
                    | KeyCode::PageUp
                    | KeyCode::Backspace
                    | KeyCode::Char('h' | 'k' | 'p') => Step::Previous,
                    KeyCode::Home | KeyCode::Char('g') => Step::First,
                    KeyCode::End | KeyCode::Char('G') => Step::Last,
                    _ => continue,
                });
            }
            Event::Resize(..) => return Ok(Step::Redraw),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a cut-off last line replayed as if whole or reported as foreign, a
    /// foreign or other-version file replayed as empty samples, or an empty file accepted.
    #[test]
    fn parse_refuses_with_the_reason() {
        let line = r#"{"sample":0,"elapsed_s":0.0,"report_version":1,"taken_at_unix_ms":1,"status":"healthy","exit_code":0,"databases":[],"total":null}"#;
        assert_eq!(parse(&format!("{line}\n")).map(|s| s.len()).ok(), Some(1));
        let err = |text: &str| format!("{:#}", parse(text).expect_err(text));
        assert!(err(&format!("{line}\n{}", &line[..40])).contains("truncated"));
        assert!(err("hello\nworld\n").contains("not JSON"));
        assert!(err("{\"a\":1}\n{\"b\":2}\n").contains("no report_version"));
        assert!(
            err(&line.replace("\"report_version\":1", "\"report_version\":7"))
                .contains("version 7")
        );
        assert!(err("").contains("no samples"));
    }
}
