//! The live view on a terminal: the alternate screen in raw mode, drawn in place each
//! sample, and put back on drop and on panic.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use crossterm::{cursor, queue, terminal};

use super::tally::{Tallies, sparkline};
use crate::report::Report;
use crate::{fmt, status, table};

/// The terminal in the live view's state (alternate screen, raw mode, hidden cursor), put
/// back on drop and on panic.
#[derive(Debug)]
pub(super) struct Screen {
    out: std::io::Stdout,
}

/// Puts the terminal back; safe to call more than once.
fn restore_terminal() {
    let mut out = std::io::stdout();
    let _ = terminal::disable_raw_mode();
    let _ = crossterm::execute!(out, cursor::Show, terminal::LeaveAlternateScreen);
}

impl Screen {
    pub(super) fn enter() -> Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Restore first, or the message lands on the alternate screen in raw mode.
            restore_terminal();
            previous(info);
        }));
        let mut out = std::io::stdout();
        terminal::enable_raw_mode().context("cannot set up the terminal")?;
        // From here on, Drop restores.
        let screen = Self {
            out: std::io::stdout(),
        };
        crossterm::execute!(out, terminal::EnterAlternateScreen, cursor::Hide)
            .context("cannot set up the terminal")?;
        Ok(screen)
    }

    /// Draws `report` under `header` (a sample's number, time and status), with the trend
    /// from `tallies`, and `notes` (warnings) at the end.
    pub(super) fn draw(
        &mut self,
        header: &str,
        report: &Report,
        tallies: &Tallies,
        notes: &[String],
    ) -> Result<()> {
        let (width, height) = terminal::size().unwrap_or((100, 30));
        let mut text = format!("{header}\n\n{}", body(report, width, tallies));
        if !notes.is_empty() {
            text.push_str("\nNotes\n");
            for n in notes {
                text.push_str(&format!("db-monitor: {n}\n"));
            }
        }
        queue!(self.out, cursor::MoveTo(0, 0))?;
        // Long lines (findings) wrap; the last row stays empty so nothing scrolls.
        let width = usize::from(width.max(1));
        let rows = text.lines().flat_map(|line| {
            let chars: Vec<char> = line.chars().collect();
            if chars.is_empty() {
                vec![String::new()]
            } else {
                chars.chunks(width).map(|c| c.iter().collect()).collect()
            }
        });
        for row in rows.take(usize::from(height.saturating_sub(1))) {
            queue!(
                self.out,
                crossterm::style::Print(row),
                terminal::Clear(terminal::ClearType::UntilNewLine),
                crossterm::style::Print("\r\n")
            )?;
        }
        queue!(
            self.out,
            terminal::Clear(terminal::ClearType::FromCursorDown)
        )?;
        self.out.flush().context("cannot draw the live view")?;
        Ok(())
    }
}

/// The pools, each pool's trend of acquires per second, and the findings.
/// The header of a sample: its number, the time since the start, the interval and the
/// overall status, then `keys`.
pub(super) fn header(
    what: &str,
    n: &str,
    elapsed: Duration,
    interval: Duration,
    report: &Report,
    keys: &str,
) -> String {
    format!(
        "db-monitor {what}  sample {n}  {} elapsed  every {}  {}  ({keys})",
        humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
        humantime::format_duration(interval),
        status::word(report.status()).to_uppercase()
    )
}

fn body(report: &Report, width: u16, tallies: &Tallies) -> String {
    let label = report.labeler();
    if report.databases.is_empty() {
        // Every registry found earlier has stopped; one that starts shows at the next sample.
        return "No database now: no registry of this user is running here. Waiting for one \
                to start."
            .to_owned();
    }
    let mut text = table::pools(report, Some(width));
    if let Some(servers) = table::servers(report, Some(width)) {
        text.push_str(&format!("\n\nPostgreSQL servers\n{servers}"));
    }
    text.push_str("\n\nacquires/s, last samples\n");
    for d in report.databases.iter().filter(|d| d.pool.is_some()) {
        if let Some(t) = tallies.of(d) {
            let last = t.trend.back().copied().unwrap_or(0.0);
            text.push_str(&format!(
                "  {:<16} {} {}/s\n",
                label(d),
                sparkline(&t.trend),
                fmt::rate(last)
            ));
        }
    }
    let findings = table::findings(report);
    if !findings.is_empty() {
        text.push_str("\nFindings\n");
        text.push_str(&findings);
    }
    text
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore_terminal();
    }
}
