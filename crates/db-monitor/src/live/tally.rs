//! What `--continuous` keeps per database over the run: counts, peaks, the worst status and
//! the recent trend of acquires per second, and the summary written from them at the end.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use hive_db_core::HealthStatus;

use crate::report::{DbReport, Report};
use crate::{fmt, status};

/// Samples kept for the trend line.
const TREND: usize = 40;

/// One database over the run.
#[derive(Debug, Default)]
pub(super) struct Tally {
    acquires: u64,
    timeouts: u64,
    seconds: f64,
    peak_waiting: u32,
    peak_maxwait_ms: f64,
    worst: Option<HealthStatus>,
    /// Acquires per second of the last [`TREND`] samples, oldest first.
    pub(super) trend: VecDeque<f64>,
    /// Seen with a pool (an endpoint's database), so the pool figures mean something.
    pool: bool,
}

impl Tally {
    fn add(&mut self, d: &DbReport) {
        self.worst = Some(self.worst.map_or(d.status(), |w| w.max(d.status())));
        if let Some(p) = &d.pool {
            self.pool = true;
            self.peak_waiting = self.peak_waiting.max(p.waiting);
            self.peak_maxwait_ms = self.peak_maxwait_ms.max(p.maxwait_ms);
        }
        if let Some(r) = &d.rates {
            self.acquires += r.acquires;
            self.timeouts += r.timeouts;
            self.seconds += r.seconds;
            if self.trend.len() == TREND {
                self.trend.pop_front();
            }
            self.trend.push_back(r.per_second(r.acquires));
        }
    }

    /// The summary's line for the database `name`.
    fn line(&self, name: &str) -> String {
        let worst = status::word(self.worst.unwrap_or(HealthStatus::Healthy));
        if !self.pool {
            return format!("  {name}: worst {worst}\n");
        }
        let rate = if self.seconds > 0.0 {
            self.acquires as f64 / self.seconds
        } else {
            0.0
        };
        format!(
            "  {name}: {} acquires ({}/s), {} timeouts, peak waiting {}, peak maxwait {}, \
             worst {worst}\n",
            self.acquires,
            fmt::rate(rate),
            self.timeouts,
            self.peak_waiting,
            fmt::millis(self.peak_maxwait_ms),
        )
    }
}

/// Every database seen in the run, by source and name.
#[derive(Debug, Default)]
pub(super) struct Tallies(HashMap<(String, String), Tally>);

impl Tallies {
    /// Counts a sample's report in.
    pub(super) fn add(&mut self, report: &Report) {
        for d in &report.databases {
            self.0
                .entry((d.source.clone(), d.name.clone()))
                .or_default()
                .add(d);
        }
    }

    /// The tally of `d`'s database.
    pub(super) fn of(&self, d: &DbReport) -> Option<&Tally> {
        self.0.get(&(d.source.clone(), d.name.clone()))
    }

    /// The worst status any database had (healthy before any sample).
    pub(super) fn worst(&self) -> HealthStatus {
        self.0
            .values()
            .filter_map(|t| t.worst)
            .max()
            .unwrap_or(HealthStatus::Healthy)
    }

    /// The summary of a run of `samples` samples over `elapsed`.
    pub(super) fn summary(&self, samples: u64, elapsed: Duration) -> String {
        let mut out = format!(
            "db-monitor: {samples} samples over {}, worst status {}\n",
            fmt::duration(Duration::from_millis(
                u64::try_from(elapsed.as_millis()).unwrap_or(0)
            )),
            status::word(self.worst()).to_uppercase()
        );
        let mut keys: Vec<_> = self.0.keys().collect();
        keys.sort();
        // Two registries' databases of one name told apart, as in the tables.
        let many_sources = keys.iter().any(|k| k.0 != keys[0].0);
        for key in keys {
            let label = crate::report::label(&key.1, &key.0, many_sources);
            out.push_str(&self.0[key].line(&label));
        }
        out
    }
}

/// `▁▃▅█`: values scaled to the largest.
pub(super) fn sparkline(values: &VecDeque<f64>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let top = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|v| {
            if top <= 0.0 {
                BARS[0]
            } else {
                BARS[((v / top) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{Finding, FindingKind};

    /// Bug caught: a trend that divides by zero on an idle database or loses its scale.
    #[test]
    fn sparkline_scales_to_the_largest() {
        let v: VecDeque<f64> = [0.0, 5.0, 10.0].into_iter().collect();
        assert_eq!(sparkline(&v), "▁▅█");
        let idle: VecDeque<f64> = [0.0, 0.0].into_iter().collect();
        assert_eq!(sparkline(&idle), "▁▁");
    }

    fn report(status: Option<HealthStatus>) -> Report {
        let findings = status
            .map(|s| Finding::new(s, FindingKind::Health, "health check"))
            .into_iter()
            .collect();
        Report {
            taken_at_unix_ms: 0,
            databases: vec![DbReport {
                source: "file".to_owned(),
                name: "inventory".to_owned(),
                backend: None,
                path: None,
                findings,
                pool: None,
                totals: None,
                latency: None,
                rates: None,
                health: None,
                sqlite: None,
                postgres: None,
                probe: None,
            }],
        }
    }

    /// Bug caught: `--continuous` ending with the status of its last sample (or its first)
    /// instead of the worst it saw, so a degraded spell in the middle exits 0.
    #[test]
    fn worst_of_the_whole_run() {
        let mut tallies = Tallies::default();
        assert_eq!(tallies.worst(), HealthStatus::Healthy);
        tallies.add(&report(None));
        tallies.add(&report(Some(HealthStatus::Degraded)));
        tallies.add(&report(None));
        assert_eq!(tallies.worst(), HealthStatus::Degraded);
        assert!(
            tallies
                .summary(3, Duration::from_secs(3))
                .contains("worst status DEGRADED")
        );
    }
}
