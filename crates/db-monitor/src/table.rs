//! The report as tables for people.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use hive_db_core::{Backend, PgFacts, ReplicaStatus, ServerFacts};

use crate::file::FileFacts;
use crate::report::{DbReport, Percentiles, Report, Total};
use crate::{fmt, status};

const DASH: &str = "-";
/// Terminal width from which the pool table is one table rather than two: the width it
/// takes with a PostgreSQL database in it.
const WIDE: u16 = 152;

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

/// Pool state, health and rates: the part the live view redraws.
pub(crate) fn pools(report: &Report, width: Option<u16>) -> String {
    let label = report.labeler();
    if report.databases.iter().all(|d| d.pool.is_none()) {
        return files(report, width);
    }
    let mut tables = PoolTables::new(width);
    for d in &report.databases {
        // One pool added up is that pool.
        let pool = d.pool.as_ref().map(|p| Total::of(p, d.rates.as_ref()));
        let p99 = d.rates.as_ref().and_then(|r| r.acquire_wait_p99_ms);
        tables.add(
            label(d),
            engine(d),
            status::word(d.status()),
            pool.as_ref(),
            pool.as_ref().filter(|_| d.rates.is_some()),
            p99.map_or(DASH.to_owned(), fmt::millis),
            health(d),
        );
    }
    if let Some(t) = report.total().filter(|t| t.pools > 1) {
        let has_rates = report.databases.iter().any(|d| d.rates.is_some());
        let rates = Some(&t).filter(|_| has_rates);
        tables.add(
            "total".to_owned(),
            "",
            "",
            Some(&t),
            rates,
            String::new(),
            String::new(),
        );
    }
    tables.render()
}

/// Files only: no pool to show, only how each answered.
fn files(report: &Report, width: Option<u16>) -> String {
    let label = report.labeler();
    let mut t = table(&["db", "status", "health", "note"], width);
    for d in &report.databases {
        t.add_row(vec![
            label(d),
            status::word(d.status()).to_owned(),
            health(d),
            d.findings
                .first()
                .map_or(String::new(), |f| fmt::printable(&f.message).into_owned()),
        ]);
    }
    t.to_string()
}

/// `sqlite`, `postgres`, or a dash when unknown (an endpoint that could not be read).
fn engine(d: &DbReport) -> &'static str {
    d.backend.map_or(DASH, Backend::as_str)
}

fn health(d: &DbReport) -> String {
    d.health
        .as_ref()
        .map_or(DASH.to_owned(), |h| fmt::millis(h.latency_ms))
}

/// The pool tables: on a wide terminal (or none) one table; on a narrow one two, the state
/// with short headings and the rates.
struct PoolTables {
    wide: bool,
    state: Table,
    rates: Table,
}

impl PoolTables {
    const RATES: [&str; 6] = ["acq/s", "waits/s", "tmo/s", "busy/s", "tx/s", "p99 wait"];

    fn new(width: Option<u16>) -> Self {
        let wide = width.is_none_or(|w| w >= WIDE);
        let mut heads: Vec<&str> = if wide {
            vec![
                "db", "engine", "status", "live/max", "active", "idle", "waiting", "maxwait",
                "writer q",
            ]
        } else {
            vec![
                "db", "engine", "status", "live", "act", "idle", "wait", "maxwait", "wq", "health",
            ]
        };
        if wide {
            heads.extend(Self::RATES);
            heads.push("health");
        }
        Self {
            wide,
            state: table(&heads, width),
            rates: table(&[&["db"][..], &Self::RATES[..]].concat(), width),
        }
    }

    /// One row: the database's engine and status, `pool`'s state (dashes without), `rates`'
    /// figures (dashes without) and the interval's p99 wait, and the health check's latency.
    #[expect(clippy::too_many_arguments, reason = "one argument per column group")]
    fn add(
        &mut self,
        label: String,
        engine: &str,
        status: &str,
        pool: Option<&Total>,
        rates: Option<&Total>,
        p99: String,
        health: String,
    ) {
        let state = pool.map_or_else(
            || vec![DASH.to_owned(); 6],
            |p| {
                vec![
                    format!("{}/{}", p.live, p.max),
                    p.active.to_string(),
                    p.idle.to_string(),
                    p.waiting.to_string(),
                    fmt::millis(p.maxwait_ms),
                    p.writer_queue.to_string(),
                ]
            },
        );
        let mut rate_cells = rates.map_or_else(
            || vec![DASH.to_owned(); 5],
            |r| {
                [
                    r.acquires_per_s,
                    r.waits_per_s,
                    r.timeouts_per_s,
                    r.busy_per_s,
                    r.tx_per_s,
                ]
                .map(fmt::rate)
                .to_vec()
            },
        );
        rate_cells.push(p99);
        let mut row = [
            vec![label.clone(), engine.to_owned(), status.to_owned()],
            state,
        ]
        .concat();
        if self.wide {
            row.extend(rate_cells);
            row.push(health);
        } else {
            row.push(health);
            self.rates.add_row([vec![label], rate_cells].concat());
        }
        self.state.add_row(row);
    }

    fn render(&self) -> String {
        if self.wide {
            self.state.to_string()
        } else {
            format!("{}\n{}", self.state, self.rates)
        }
    }
}

/// Every finding, one line each.
pub(crate) fn findings(report: &Report) -> String {
    let label = report.labeler();
    let mut out = String::new();
    for d in &report.databases {
        for f in &d.findings {
            out.push_str(&format!(
                "{:<9} {}: {}\n",
                status::word(f.status).to_uppercase(),
                label(d),
                fmt::printable(&f.message)
            ));
        }
    }
    out
}

/// The one-shot report: pools, counters, latencies, SQLite facts, probes and findings.
pub(crate) fn full(report: &Report, width: Option<u16>) -> String {
    let mut out = format!(
        "db-monitor: {} database(s), status {}\n\n{}\n{}\n",
        report.databases.len(),
        status::word(report.status()).to_uppercase(),
        heading(report),
        pools(report, width)
    );
    let sections = [
        ("PostgreSQL servers", servers(report, width)),
        (
            "Counters since the application started",
            counters(report, width).map(|t| t.to_string()),
        ),
        (
            "Latency since the application started",
            latencies(report, width).map(|t| t.to_string()),
        ),
        ("SQLite", sqlite(report, width).map(|t| t.to_string())),
        ("Probe", probes(report, width).map(|t| t.to_string())),
    ];
    for (title, table) in sections {
        if let Some(t) = table {
            out.push_str(&format!("\n{title}\n{t}\n"));
        }
    }
    let f = findings(report);
    if !f.is_empty() {
        out.push_str(&format!("\nFindings\n{f}"));
    }
    out
}

/// `Pools (rates over the last 2.0s)`, or `Databases` without pools.
fn heading(report: &Report) -> String {
    if report.databases.iter().all(|d| d.pool.is_none()) {
        return "Databases".to_owned();
    }
    let window = report
        .databases
        .iter()
        .find_map(|d| d.rates.as_ref())
        .map_or(String::new(), |r| {
            format!(" (rates over the last {:.1}s)", r.seconds)
        });
    format!("Pools{window}")
}

/// The counters of each database that has them (endpoints only).
fn counters(report: &Report, width: Option<u16>) -> Option<Table> {
    let label = report.labeler();
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
    for d in &report.databases {
        let (Some(tot), Some(lat)) = (&d.totals, &d.latency) else {
            continue;
        };
        t.add_row(vec![
            label(d),
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
    (t.row_count() > 0).then_some(t)
}

/// The latency histograms of each database that has counters (endpoints only).
fn latencies(report: &Report, width: Option<u16>) -> Option<Table> {
    let label = report.labeler();
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
    for d in &report.databases {
        let Some(lat) = d.latency.as_ref().filter(|_| d.totals.is_some()) else {
            continue;
        };
        for (what, p) in [
            ("acquire wait", &lat.acquire_wait),
            ("hold time", &lat.hold_time),
            ("writer wait", &lat.writer_wait),
        ] {
            t.add_row(latency_row(&label(d), what, p));
        }
    }
    (t.row_count() > 0).then_some(t)
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

/// Every SQLite database's file and what SQLite says about it; `None` when every database
/// is a PostgreSQL one.
fn sqlite(report: &Report, width: Option<u16>) -> Option<Table> {
    let label = report.labeler();
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
    let postgres = |d: &&DbReport| d.backend == Some(Backend::Postgres);
    for d in report.databases.iter().filter(|d| !postgres(d)) {
        let path = d.path.as_ref().map_or(DASH.to_owned(), |p| {
            fmt::printable(&p.display().to_string()).into_owned()
        });
        let mut row = vec![label(d), path];
        match &d.sqlite {
            Some(s) => row.extend(sqlite_cells(s)),
            None => row.resize(9, DASH.to_owned()),
        }
        t.add_row(row);
    }
    let all_postgres =
        !report.databases.is_empty() && report.databases.iter().all(|d| postgres(&d));
    (!all_postgres).then_some(t)
}

/// The servers of each PostgreSQL database: its primary (version, a standby or not, client
/// connections of `max_connections`) and each replica (status, lag, reads served), then the
/// reads that fell back to the primary. `None` without PostgreSQL databases.
pub(crate) fn servers(report: &Report, width: Option<u16>) -> Option<String> {
    let mut t = table(
        &[
            "db", "role", "server", "status", "version", "conns", "lag", "reads",
        ],
        width,
    );
    let mut fallbacks = String::new();
    for d in &report.databases {
        let Some(pg) = &d.postgres else { continue };
        let target = d.path.as_ref().map_or(DASH.to_owned(), |p| server(p));
        // The registry keeps a primary's last facts when it cannot reach it: they are
        // shown only while they are current (reached, or reached and refusing writes).
        let refuses_writes = pg
            .primary
            .as_ref()
            .is_some_and(|f| f.in_recovery || f.read_only);
        let (status, facts) = match (&pg.primary, &pg.primary_error) {
            (Some(f), Some(_)) if refuses_writes => ("no writes", Some(f)),
            (_, Some(_)) => ("unreachable", None),
            (Some(f), None) => ("up", Some(f)),
            (None, None) => (DASH, None),
        };
        // A primary that says it is a standby, or refuses writes, takes no writes: said
        // where its role is.
        let role = match &pg.primary {
            Some(f) if f.in_recovery => "primary, standby",
            Some(f) if f.read_only => "primary, read-only",
            _ => "primary",
        };
        t.add_row(server_row(
            &d.name,
            role,
            target,
            status,
            facts,
            DASH.to_owned(),
            DASH.to_owned(),
        ));
        for r in &pg.replicas {
            t.add_row(server_row(
                &d.name,
                "replica",
                server(&r.target),
                status::replica(r.status),
                // What a down server said of itself before is no longer so.
                r.server
                    .as_ref()
                    .filter(|_| r.status != ReplicaStatus::Down),
                r.lag_ms
                    .map_or(DASH.to_owned(), |ms| fmt::millis(ms as f64)),
                r.reads.to_string(),
            ));
        }
        fallbacks.push_str(&fallback_line(&d.name, pg));
    }
    (t.row_count() > 0).then(|| format!("{t}\n{fallbacks}").trim_end().to_owned())
}

/// `host:port/db` of `postgres://user@host:port/db`: what tells servers apart, narrow
/// enough for the table (the JSON keeps the whole target).
fn server(target: &std::path::Path) -> String {
    let url = target.to_string_lossy();
    let rest = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .unwrap_or(&url);
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let start = rest[..authority_end].rfind('@').map_or(0, |at| at + 1);
    fmt::printable(&rest[start..]).into_owned()
}

/// One server's row: `status` is its registry's view of it; the version and connections (of
/// `max_connections`) are what it said of itself (dashes until measured).
fn server_row(
    db: &str,
    role: &str,
    target: String,
    status: &str,
    facts: Option<&ServerFacts>,
    lag: String,
    reads: String,
) -> Vec<String> {
    let (version, connections) = facts.map_or_else(
        || (DASH.to_owned(), DASH.to_owned()),
        |f| {
            (
                // `15.10 (Debian 15.10-0+deb12u1)`: the number says enough here.
                f.version
                    .split_whitespace()
                    .next()
                    .unwrap_or(DASH)
                    .to_owned(),
                format!("{}/{}", f.connections, f.max_connections),
            )
        },
    );
    vec![
        db.to_owned(),
        role.to_owned(),
        target,
        status.to_owned(),
        version,
        connections,
        lag,
        reads,
    ]
}

/// `orders: 3 replica fallbacks (reads sent to the primary)`, for a database with replicas
/// or fallbacks; empty otherwise.
fn fallback_line(db: &str, pg: &PgFacts) -> String {
    if pg.replicas.is_empty() && pg.replica_fallbacks == 0 {
        return String::new();
    }
    format!(
        "{db}: {} replica fallbacks (reads meant for a replica, sent to the primary)\n",
        pg.replica_fallbacks
    )
}

/// Size, WAL, page size, pages, free pages, journal mode, quick_check; a dash for what was
/// not read (an endpoint's file on another host has sizes only).
fn sqlite_cells(s: &FileFacts) -> Vec<String> {
    let read = s.page_size != 0;
    let or_dash = |known: bool, v: String| if known { v } else { DASH.to_owned() };
    vec![
        fmt::bytes(s.file_bytes),
        fmt::bytes(s.wal_bytes),
        or_dash(read, s.page_size.to_string()),
        or_dash(s.page_count != 0, s.page_count.to_string()),
        or_dash(read, s.freelist_count.to_string()),
        or_dash(!s.journal_mode.is_empty(), s.journal_mode.clone()),
        s.quick_check.clone().unwrap_or_else(|| DASH.to_owned()),
    ]
}

/// The `--probe` results.
fn probes(report: &Report, width: Option<u16>) -> Option<Table> {
    let label = report.labeler();
    let mut t = table(
        &["db", "probe", "ops/s", "ops", "errors", "p50", "p99", "max"],
        width,
    );
    for d in &report.databases {
        let Some(p) = &d.probe else { continue };
        t.add_row(vec![
            label(d),
            format!("{} for {:.1}s", p.what, p.seconds),
            fmt::rate(p.per_second()),
            p.ops.to_string(),
            p.errors.to_string(),
            fmt::millis(p.p50_ms),
            fmt::millis(p.p99_ms),
            fmt::millis(p.max_ms),
        ]);
    }
    (t.row_count() > 0).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a server shown with its scheme and user (the table too wide for a
    /// terminal), or cut wrong: an `@` in the database name taken for the user's end, a
    /// multi-host target losing a host.
    #[test]
    fn servers_are_host_port_and_database() {
        let short = |t: &str| server(std::path::Path::new(t));
        assert_eq!(short("postgres://app@db1:5432/orders"), "db1:5432/orders");
        assert_eq!(short("postgresql://db1:5432/orders"), "db1:5432/orders");
        assert_eq!(
            short("postgres://app@h1:5432,h2:5433/o@x"),
            "h1:5432,h2:5433/o@x"
        );
        assert_eq!(short("db1:5432"), "db1:5432");
    }
}
