//! `--continuous`: a sample every interval, drawn in place on a terminal or written as one
//! JSON line per sample otherwise, with a summary at the end.

mod replay;
mod screen;
mod tally;

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use serde::{Deserialize, Serialize};

pub(crate) use self::replay::{Settings as ReplaySettings, run as replay};
use self::screen::Screen;
use self::tally::Tallies;
use crate::output::{self, Written};
use crate::report::{self, Report};
use crate::sample::{Depth, Sample, Sampler};
use crate::status;

/// How the loop is set up.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) interval: Duration,
    pub(crate) duration: Option<Duration>,
    pub(crate) slow: Duration,
    /// JSON lines even on a terminal.
    pub(crate) json: bool,
    /// Where the history goes (JSON lines), created once the first sample is read.
    pub(crate) history: Option<PathBuf>,
}

/// One JSON line of `--continuous` (and of its `--output` history, which `--replay` reads):
/// a sample's report (`R` is `&Report` when written, `Report` when read back) with its
/// number and time since the start.
#[derive(Debug, Serialize, Deserialize)]
struct Line<R> {
    sample: u64,
    elapsed_s: f64,
    #[serde(flatten)]
    report: R,
}

/// Runs until `duration`, `q`, Ctrl-C, SIGTERM or a closed stdout, and returns the exit
/// code: the worst status seen.
///
/// # Errors
///
/// An endpoint that cannot be read at the first sample, a terminal that cannot be set up, or
/// a history file that cannot be written.
pub(crate) fn run(sampler: &mut Sampler, settings: Settings) -> Result<u8> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("cannot install the Ctrl-C handler")?;
    }
    let first = sampler.take_first(Depth::full(None))?;
    let mut view = View::new(&settings)?;
    let mut prev: Option<Sample> = None;
    let mut cur = first;
    let mut last = false;
    loop {
        let report = report::build(prev.as_ref(), &cur, settings.slow);
        if view.show(&report)? == Written::PipeClosed {
            // The reader went away (`| head`): stop quietly, with the worst status seen.
            return Ok(status::exit_code(view.tallies.worst()));
        }
        if last {
            break;
        }
        // The next sample is due at the next multiple of the interval; missed ones are
        // skipped, so a slow source does not make samples pile up. The last is due when
        // `--duration` ends, if that comes first: a duration shorter than the interval still
        // gets a second sample, and with it the rates.
        let elapsed = view.start.elapsed();
        let k = elapsed.as_nanos() / settings.interval.as_nanos().max(1) + 1;
        let mut due = settings.interval * u32::try_from(k).unwrap_or(u32::MAX);
        if let Some(end) = settings.duration
            && due >= end
        {
            if elapsed >= end {
                break;
            }
            (due, last) = (end, true);
        }
        if view.wait(&report, due, &stop)? {
            break;
        }
        prev = Some(cur);
        // Registries that started or stopped since the last sample come and go.
        let warnings = sampler.refresh();
        view.warn(warnings);
        cur = sampler.take(Depth::BASIC);
    }
    view.finish()
}

/// Where the samples go (the terminal's live view, or JSON lines on stdout, and the history
/// file) and what the summary needs.
#[derive(Debug)]
struct View {
    interval: Duration,
    start: Instant,
    /// Samples shown so far.
    shown: u64,
    tallies: Tallies,
    /// Warnings given during the live view, shown under it.
    notes: Vec<String>,
    history: Option<(PathBuf, File)>,
    screen: Option<Screen>,
}

impl View {
    fn new(settings: &Settings) -> Result<Self> {
        let history = match &settings.history {
            Some(path) => Some((
                path.clone(),
                crate::output::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            )),
            None => None,
        };
        let live = !settings.json && std::io::stdout().is_terminal();
        Ok(Self {
            interval: settings.interval,
            start: Instant::now(),
            shown: 0,
            tallies: Tallies::default(),
            notes: Vec::new(),
            history,
            screen: if live { Some(Screen::enter()?) } else { None },
        })
    }

    /// Counts `report` in, saves it to the history, and draws it or writes its JSON line.
    fn show(&mut self, report: &Report) -> Result<Written> {
        let n = self.shown;
        self.shown += 1;
        self.tallies.add(report);
        let line = serde_json::to_string(&Line {
            sample: n,
            elapsed_s: self.start.elapsed().as_secs_f64(),
            report,
        })
        .context("cannot encode a sample as JSON")?;
        if let Some((path, file)) = &mut self.history {
            writeln!(file, "{line}")
                .and_then(|()| file.flush())
                .with_context(|| format!("cannot write the history to {}", path.display()))?;
        }
        if self.screen.is_some() {
            return match self.draw(report) {
                Ok(()) => Ok(Written::Yes),
                // The terminal hung up: the run ends as on `q`.
                Err(e) if output::gone(&e, true) => Ok(Written::PipeClosed),
                Err(e) => Err(e),
            };
        }
        output::stdout(&format!("{line}\n")).context("cannot write to stdout")
    }

    /// Warnings that arose during the run: on stderr, or under the live view, which
    /// stderr would be drawn over.
    fn warn(&mut self, warnings: Vec<String>) {
        if self.screen.is_some() {
            self.notes.extend(warnings);
        } else {
            for w in warnings {
                output::diag(&w);
            }
        }
    }

    /// Draws `report`, the last sample shown, on the live view if there is one.
    fn draw(&mut self, report: &Report) -> Result<()> {
        let n = self.shown.saturating_sub(1);
        let header = screen::header(
            "live",
            &n.to_string(),
            self.start.elapsed(),
            self.interval,
            report,
            "q quits",
        );
        match &mut self.screen {
            Some(s) => s.draw(&header, report, &self.tallies, &self.notes),
            None => Ok(()),
        }
    }

    /// Waits until `due` after the start, drawing `report` again when the terminal changes
    /// size. True when the run is to end.
    /// A terminal that hung up ends the run too.
    fn wait(&mut self, report: &Report, due: Duration, stop: &AtomicBool) -> Result<bool> {
        let live = self.screen.is_some();
        let ended = |e: anyhow::Error| {
            if live && output::gone(&e, true) {
                Ok(true)
            } else {
                Err(e)
            }
        };
        loop {
            match wait_until(self.start + due, stop, live) {
                Ok(Wake::Due) => return Ok(stop.load(Ordering::Relaxed)),
                Ok(Wake::Quit) => return Ok(true),
                Ok(Wake::Resized) => {
                    if let Err(e) = self.draw(report) {
                        return ended(e);
                    }
                }
                Err(e) => return ended(e),
            }
        }
    }

    /// Leaves the live view and writes the summary (on stdout after a live view, else on
    /// stderr, so that stdout stays JSON lines). The exit code of the worst status seen.
    fn finish(mut self) -> Result<u8> {
        let was_live = self.screen.take().is_some();
        // What was shown under the live view stays on the terminal once it is gone.
        for note in self.notes.drain(..) {
            output::diag(&note);
        }
        let text = self.tallies.summary(self.shown, self.start.elapsed());
        if was_live {
            let _: Written = output::stdout(&text).context("cannot write to stdout")?;
        } else {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
        Ok(status::exit_code(self.tallies.worst()))
    }
}

/// Why [`wait_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The time came, or SIGINT / SIGTERM arrived (the caller looks at the flag).
    Due,
    /// `q`, Esc, or Ctrl-C in raw mode.
    Quit,
    /// The terminal changed size: draw again.
    Resized,
}

/// Waits until `until`; on a terminal, reads keys meanwhile.
fn wait_until(until: Instant, stop: &AtomicBool, keys: bool) -> Result<Wake> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(Wake::Due);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Wake::Due);
        }
        let step = left.min(Duration::from_millis(50));
        if !keys {
            std::thread::sleep(step);
            continue;
        }
        if !event::poll(step).context("cannot read the terminal")? {
            continue;
        }
        match event::read().context("cannot read the terminal")? {
            Event::Key(k) => {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                if k.kind != KeyEventKind::Release
                    && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
                {
                    return Ok(Wake::Quit);
                }
            }
            Event::Resize(..) => return Ok(Wake::Resized),
            _ => {}
        }
    }
}
