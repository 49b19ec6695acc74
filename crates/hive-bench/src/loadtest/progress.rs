//! Live progress on standard error: a progress bar with ops/s and errors on a terminal, one
//! plain line per second otherwise (a bar redrawn into a pipe or a log is noise).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counters the workers bump and the progress thread reads.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Operations finished, failed ones included.
    pub(crate) ops: AtomicU64,
    /// Operations failed.
    pub(crate) errors: AtomicU64,
}

/// How far the run is: by time or by operation count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Goal {
    /// Runs for this long.
    Time(Duration),
    /// Runs this many operations in all.
    Ops(u64),
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Nothing (tests, and `--compare`'s baselines).
    Quiet,
    /// A bar when standard error is a terminal, else a line per second.
    Auto,
}

/// Shows progress of `label` until `done` is set.
pub(crate) fn show(label: &str, live: &Live, goal: Goal, style: Style, done: &AtomicBool) {
    if style == Style::Quiet {
        return;
    }
    if std::io::stderr().is_terminal() {
        bar(label, live, goal, done);
    } else {
        lines(label, live, goal, done);
    }
}

fn bar(label: &str, live: &Live, goal: Goal, done: &AtomicBool) {
    let (len, unit) = match goal {
        Goal::Time(d) => (d.as_millis() as u64, "{elapsed_precise}"),
        Goal::Ops(n) => (n, "{pos}/{len} ops"),
    };
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = format!("{{prefix}} [{{bar:30}}] {unit} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(label.to_owned());
    let start = Instant::now();
    let mut last = (start, 0u64);
    while !done.load(Relaxed) {
        std::thread::park_timeout(Duration::from_millis(100));
        let ops = live.ops.load(Relaxed);
        let now = Instant::now();
        if now.duration_since(last.0) >= Duration::from_millis(500) {
            let rate = (ops - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            pb.set_message(format!(
                "{rate:.0} ops/s, {} errors",
                live.errors.load(Relaxed)
            ));
            last = (now, ops);
        }
        pb.set_position(match goal {
            Goal::Time(_) => (start.elapsed().as_millis() as u64).min(len),
            Goal::Ops(_) => ops.min(len),
        });
    }
    pb.finish_and_clear();
}

fn lines(label: &str, live: &Live, goal: Goal, done: &AtomicBool) {
    let start = Instant::now();
    let mut last = (start, 0u64);
    let mut next = start + Duration::from_secs(1);
    while !done.load(Relaxed) {
        std::thread::park_timeout(Duration::from_millis(50));
        let now = Instant::now();
        if now < next {
            continue;
        }
        next += Duration::from_secs(1);
        let ops = live.ops.load(Relaxed);
        let rate = (ops - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, ops);
        let of = match goal {
            Goal::Time(d) => format!("of {:.0} s", d.as_secs_f64()),
            Goal::Ops(n) => format!("{ops} of {n} ops"),
        };
        eprintln!(
            "{label}: {:.0} s {of}, {rate:.0} ops/s, {} errors",
            start.elapsed().as_secs_f64(),
            live.errors.load(Relaxed)
        );
    }
}
