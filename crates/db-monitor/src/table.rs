//! The report as tables for people.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};

use crate::rates::Rates;
use crate::report::{DbReport, Percentiles, Pool, Report};
use crate::{fmt, status};

const DASH: &str = "-";
/// Terminal width from which the pool table is one table rather than two.
const WIDE: u16 = 140;

fn table(header: &[&str], width: Option<u16>) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    if let Some(w) = width {
        t.set_width(w);
    }
    t
}

/// The label of a database in tables: its name, and its endpoint when there are several
/// sources.
fn label(d: &DbReport, many_sources: bool) -> String {
    if many_sources && d.source != "file" {
        format!("{} @{}", d.name, d.source.trim_start_matches("http://"))
    } else {
        d.name.clone()
    }
}

/// Pool state, health and rates: the part the live view redraws.
pub(crate) fn pools(report: &Report, width: Option<u16>) -> String {
    let many = report
        .databases
        .iter()
        .map(|d| &d.source)
        .collect::<std::collections::HashSet<_>>()
        .len()
        > 1;
    let any_pool = report.databases.iter().any(|d| d.pool.is_some());
    if !any_pool {
        // Files only: no pool to show, only how each answered.
        let mut t = table(&["db", "status", "health", "note"], width);
        for d in &report.databases {
            t.add_row(vec![
                label(d, many),
                status::word(d.status()).to_owned(),
                d.health
                    .as_ref()
                    .map_or(DASH.to_owned(), |h| fmt::millis(h.latency_ms)),
                d.findings
                    .first()
                    .map_or(String::new(), |f| f.message.clone()),
            ]);
        }
        return t.to_string();
    }
    // A wide terminal (or none) gets one table; a narrow one two, with short headings.
    let wide = width.is_none_or(|w| w >= WIDE);
    let state_heads: &[&str] = if wide {
        &[
            "db", "status", "live/max", "active", "idle", "waiting", "maxwait", "writer q",
        ]
    } else {
        &[
            "db", "status", "live", "act", "idle", "wait", "maxwait", "wq", "health",
        ]
    };
    let rate_heads = ["acq/s", "waits/s", "tmo/s", "busy/s", "tx/s", "p99 wait"];
    let mut heads = state_heads.to_vec();
    if wide {
        heads.extend(rate_heads);
        heads.push("health");
    }
    let mut state = table(&heads, width);
    let mut rates = table(&[&["db"][..], &rate_heads[..]].concat(), width);
    for d in &report.databases {
        let pool = d.pool.as_ref();
        let n = |f: fn(&Pool) -> u32| pool.map_or(DASH.to_owned(), |p| f(p).to_string());
        let health = d
            .health
            .as_ref()
            .map_or(DASH.to_owned(), |h| fmt::millis(h.latency_ms));
        let mut row = vec![
            label(d, many),
            status::word(d.status()).to_owned(),
            pool.map_or(DASH.to_owned(), |p| format!("{}/{}", p.live, p.max)),
            n(|p| p.active),
            n(|p| p.idle),
            n(|p| p.waiting),
            pool.map_or(DASH.to_owned(), |p| fmt::millis(p.maxwait_ms)),
            n(|p| p.writer_queue),
        ];
        let r = d.rates.as_ref();
        let rate = |f: fn(&Rates) -> f64| r.map_or(DASH.to_owned(), |r| fmt::rate(f(r)));
        let rate_cells = vec![
            rate(|r| r.acquires_per_s),
            rate(|r| r.waits_per_s),
            rate(|r| r.timeouts_per_s),
            rate(|r| r.busy_per_s),
            rate(|r| r.tx_per_s),
            r.and_then(|r| r.acquire_wait_p99_ms)
                .map_or(DASH.to_owned(), fmt::millis),
        ];
        if wide {
            row.extend(rate_cells);
            row.push(health);
        } else {
            row.push(health);
            rates.add_row([vec![label(d, many)], rate_cells].concat());
        }
        state.add_row(row);
    }
    if let Some(t) = report.total().filter(|t| t.pools > 1) {
        let mut row = vec![
            "total".to_owned(),
            String::new(),
            format!("{}/{}", t.live, t.max),
            t.active.to_string(),
            t.idle.to_string(),
            t.waiting.to_string(),
            fmt::millis(t.maxwait_ms),
            t.writer_queue.to_string(),
        ];
        let has_rates = report.databases.iter().any(|d| d.rates.is_some());
        let rate = |v: f64| {
            if has_rates {
                fmt::rate(v)
            } else {
                DASH.to_owned()
            }
        };
        let rate_cells = vec![
            rate(t.acquires_per_s),
            rate(t.waits_per_s),
            rate(t.timeouts_per_s),
            rate(t.busy_per_s),
            rate(t.tx_per_s),
            String::new(),
        ];
        if wide {
            row.extend(rate_cells);
            row.push(String::new());
        } else {
            row.push(String::new());
            rates.add_row([vec!["total".to_owned()], rate_cells].concat());
        }
        state.add_row(row);
    }
    if wide {
        state.to_string()
    } else {
        format!("{state}\n{rates}")
    }
}

/// Every finding, one line each.
pub(crate) fn findings(report: &Report) -> String {
    let mut out = String::new();
    for d in &report.databases {
        for f in &d.findings {
            out.push_str(&format!(
                "{:<9} {}: {}\n",
                status::word(f.status).to_uppercase(),
                d.name,
                f.message
            ));
        }
    }
    out
}

/// The one-shot report: pools, counters, latencies, SQLite facts, probes and findings.
pub(crate) fn full(report: &Report, width: Option<u16>) -> String {
    let heading = if report.databases.iter().any(|d| d.pool.is_some()) {
        let window = report
            .databases
            .iter()
            .find_map(|d| d.rates.as_ref())
            .map_or(String::new(), |r| {
                format!(" (rates over the last {:.1}s)", r.seconds)
            });
        format!("Pools{window}")
    } else {
        "Databases".to_owned()
    };
    let mut out = format!(
        "db-monitor: {} database(s), status {}\n\n{heading}\n{}\n",
        report.databases.len(),
        status::word(report.status()).to_uppercase(),
        pools(report, width)
    );
    let with_totals: Vec<_> = report
        .databases
        .iter()
        .filter_map(|d| Some((d, d.totals.as_ref()?, d.latency.as_ref()?)))
        .collect();
    if !with_totals.is_empty() {
        let mut t = table(
            &[
                "db",
                "acquires",
                "waited",
                "timeouts",
                "busy",
                "leaks",
                "commits",
                "rollbacks",
                "write tx",
                "checkpoints",
                "opened",
                "closed",
            ],
            width,
        );
        for (d, tot, lat) in &with_totals {
            t.add_row(vec![
                d.name.clone(),
                lat.acquire_wait.count.to_string(),
                tot.acquires_waited.to_string(),
                tot.acquire_timeouts.to_string(),
                tot.busy_errors.to_string(),
                tot.leaks.to_string(),
                tot.commits.to_string(),
                tot.rollbacks.to_string(),
                tot.write_transactions.to_string(),
                tot.checkpoints.to_string(),
                tot.connections_created.to_string(),
                tot.connections_closed.total().to_string(),
            ]);
        }
        out.push_str(&format!("\nCounters since the application started\n{t}\n"));
        let mut t = table(
            &[
                "db",
                "histogram",
                "count",
                "mean",
                "p50",
                "p99",
                "p99.9",
                "max",
            ],
            width,
        );
        for (d, _, lat) in &with_totals {
            for (what, p) in [
                ("acquire wait", &lat.acquire_wait),
                ("hold time", &lat.hold_time),
                ("writer wait", &lat.writer_wait),
            ] {
                t.add_row(latency_row(&d.name, what, p));
            }
        }
        out.push_str(&format!("\nLatency since the application started\n{t}\n"));
    }
    let mut t = table(
        &[
            "db",
            "file",
            "size",
            "WAL",
            "page",
            "pages",
            "free",
            "journal",
            "quick_check",
        ],
        width,
    );
    for d in &report.databases {
        let path = d
            .path
            .as_ref()
            .map_or(DASH.to_owned(), |p| p.display().to_string());
        match &d.sqlite {
            Some(s) => {
                let page = |v: u64| {
                    if v == 0 {
                        DASH.to_owned()
                    } else {
                        v.to_string()
                    }
                };
                t.add_row(vec![
                    d.name.clone(),
                    path,
                    fmt::bytes(s.file_bytes),
                    fmt::bytes(s.wal_bytes),
                    page(s.page_size),
                    page(s.page_count),
                    if s.page_size == 0 {
                        DASH.to_owned()
                    } else {
                        s.freelist_count.to_string()
                    },
                    if s.journal_mode.is_empty() {
                        DASH.to_owned()
                    } else {
                        s.journal_mode.clone()
                    },
                    s.quick_check.clone().unwrap_or_else(|| DASH.to_owned()),
                ]);
            }
            None => {
                let mut row = vec![d.name.clone(), path];
                row.resize(9, DASH.to_owned());
                t.add_row(row);
            }
        }
    }
    out.push_str(&format!("\nSQLite\n{t}\n"));
    let probes: Vec<_> = report
        .databases
        .iter()
        .filter_map(|d| Some((d, d.probe.as_ref()?)))
        .collect();
    if !probes.is_empty() {
        let mut t = table(
            &["db", "probe", "ops/s", "ops", "errors", "p50", "p99", "max"],
            width,
        );
        for (d, p) in probes {
            t.add_row(vec![
                d.name.clone(),
                format!("{} for {:.1}s", p.what, p.seconds),
                fmt::rate(p.per_second),
                p.ops.to_string(),
                p.errors.to_string(),
                fmt::millis(p.p50_ms),
                fmt::millis(p.p99_ms),
                fmt::millis(p.max_ms),
            ]);
        }
        out.push_str(&format!("\nProbe\n{t}\n"));
    }
    let f = findings(report);
    if !f.is_empty() {
        out.push_str(&format!("\nFindings\n{f}"));
    }
    out
}

fn latency_row(name: &str, what: &str, p: &Percentiles) -> Vec<String> {
    vec![
        name.to_owned(),
        what.to_owned(),
        p.count.to_string(),
        fmt::millis(p.mean_ms),
        fmt::millis(p.p50_ms),
        fmt::millis(p.p99_ms),
        fmt::millis(p.p999_ms),
        fmt::millis(p.max_ms),
    ]
}
