//! The Grafana dashboard and the Prometheus alert rules in `docs/grafana/`: they parse, and
//! every metric and label their queries use is one that a real registry's `/metrics`
//! exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use hive_db_core::{DbConfig, DbName, Registry, prometheus_text};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const DASHBOARD: &str = "docs/grafana/hive-db.json";
const ALERTS: &str = "docs/grafana/hive-db-alerts.yml";

/// What PromQL may name besides the exported metrics and labels: its functions, aggregations
/// and keywords, the labels Prometheus adds to every scraped series, and its own `up`; and
/// Grafana's `label_values` of variable queries.
const PROMQL: &[&str] = &[
    "label_values",
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "rate",
    "irate",
    "increase",
    "delta",
    "deriv",
    "histogram_quantile",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "absent",
    "clamp_min",
    "job",
    "instance",
    "up",
];

/// The metric families `docs/grafana/` must cover, one per concern the dashboard is for.
const COVERED: &[&str] = &[
    "hive_db_up",
    "hive_db_connections",
    "hive_db_connections_max",
    "hive_db_connections_pending",
    "hive_db_acquire_wait_seconds_bucket",
    "hive_db_acquire_timeouts_total",
    "hive_db_writer_lane_queued",
    "hive_db_writer_lane_timeouts_total",
    "hive_db_write_transactions_total",
    "hive_db_wal_size_bytes",
    "hive_db_connections_held_past_leak_threshold",
    "hive_db_failed_transactions_total",
];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the workspace")
        .to_path_buf()
}

/// The series names and label names in the Prometheus text of a registry that has done a
/// little of everything: reads, writes, a rollback, a closed database. A histogram counts
/// as its `_bucket`, `_sum` and `_count`.
fn exported() -> Result<(BTreeSet<String>, BTreeSet<String>), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let registry = Registry::new();
    let config = DbConfig {
        create_if_missing: true,
        ..DbConfig::default()
    };
    let (a, b) = (DbName::new("alpha")?, DbName::new("beta")?);
    registry.register(&a, dir.path().join("a.db"), config.clone())?;
    registry.register(&b, dir.path().join("b.db"), config)?;
    registry.write(&a, |tx| tx.execute_batch("CREATE TABLE t (v INTEGER)"))?;
    registry.write(&a, |tx| {
        tx.execute("INSERT INTO t VALUES (1)", []).map(drop)
    })?;
    let _ = registry.write_with(&a, |_| -> anyhow::Result<()> { anyhow::bail!("roll back") });
    registry.read(&a, |c| {
        c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
    })?;
    registry.close(&b, Duration::from_secs(5))?;
    let text = prometheus_text(&registry.stats());

    let mut names = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                return Err(format!("bad TYPE line {line:?}").into());
            };
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            } else {
                names.insert(name.to_owned());
            }
        } else if !line.starts_with('#')
            && let Some((_, rest)) = line.split_once('{')
        {
            let inside = rest.split_once('}').map_or(rest, |(inside, _)| inside);
            for pair in inside.split(',') {
                if let Some((label, _)) = pair.split_once('=') {
                    labels.insert(label.trim().to_owned());
                }
            }
        }
    }
    Ok((names, labels))
}

/// The identifiers of a PromQL expression outside strings, ranges and label matchers, and
/// the label names its matchers use.
fn promql_names(expr: &str) -> (Vec<String>, Vec<String>) {
    let chars: Vec<char> = expr.chars().collect();
    let (mut idents, mut labels) = (Vec::new(), Vec::new());
    let mut i = 0;
    let skip_string = |i: &mut usize| {
        let quote = chars[*i];
        *i += 1;
        while *i < chars.len() && chars[*i] != quote {
            if chars[*i] == '\\' {
                *i += 1;
            }
            *i += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            skip_string(&mut i);
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            i += 1;
            let mut label = String::new();
            while i < chars.len() && chars[i] != '}' {
                match chars[i] {
                    '"' | '\'' | '`' => {
                        skip_string(&mut i);
                        continue;
                    }
                    '=' | '!' | '~' => {
                        if !label.trim().is_empty() {
                            labels.push(label.trim().to_owned());
                        }
                        label.clear();
                    }
                    ',' => label.clear(),
                    ch => label.push(ch),
                }
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            idents.push(chars[start..i].iter().collect());
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    (idents, labels)
}

/// What is wrong with `expr` (from `place`) given the exported series and labels; adds
/// the metrics it uses to `used`.
fn check_expr(
    place: &str,
    expr: &str,
    (names, labels): &(BTreeSet<String>, BTreeSet<String>),
    used: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let (idents, matchers) = promql_names(expr);
    if !idents
        .iter()
        .any(|i| i.starts_with("hive_db_") || i == "up")
    {
        problems.push(format!("{place}: `{expr}` uses no metric"));
    }
    for ident in idents {
        if names.contains(&ident) {
            used.insert(ident);
        } else if !labels.contains(&ident) && !PROMQL.contains(&ident.as_str()) {
            problems.push(format!("{place}: `{ident}` is not exported (in `{expr}`)"));
        }
    }
    for label in matchers {
        if !labels.contains(&label) && !["job", "instance"].contains(&label.as_str()) {
            problems.push(format!(
                "{place}: label `{label}` is not exported (in `{expr}`)"
            ));
        }
    }
    problems
}

/// Every panel, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Bug caught: a dashboard Grafana cannot import as it is (not JSON, no Prometheus
/// datasource input, no `db` variable), or a panel querying a metric or label the endpoint
/// does not export (a renamed metric, a typo, `_total` missing): an empty panel nobody
/// notices; or a panel that ignores the `db` variable.
#[test]
fn dashboard_queries_only_exported_metrics() -> TestResult {
    let exported = exported()?;
    let text = std::fs::read_to_string(workspace().join(DASHBOARD))?;
    let dashboard: Value = serde_json::from_str(&text)?;
    let inputs = dashboard["__inputs"].as_array().ok_or("no __inputs")?;
    let input = inputs
        .iter()
        .find(|i| i["type"] == "datasource" && i["pluginId"] == "prometheus")
        .ok_or("no Prometheus datasource input")?;
    let datasource = format!(
        "${{{}}}",
        input["name"].as_str().ok_or("input without name")?
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .ok_or("no templating")?;
    let db = variables
        .iter()
        .find(|v| v["name"] == "db")
        .ok_or("no `db` variable")?;
    assert_eq!(db["datasource"]["uid"], datasource.as_str());
    let mut problems = check_expr(
        "variable db",
        db["query"]["query"].as_str().ok_or("db has no query")?,
        &exported,
        &mut BTreeSet::new(),
    );
    let mut used = BTreeSet::new();
    let mut targets = 0;
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        if panel["type"] == "row" {
            continue;
        }
        if panel["datasource"]["uid"] != datasource.as_str() {
            problems.push(format!("{title}: not on the {datasource} datasource"));
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            targets += 1;
            let expr = target["expr"].as_str().unwrap_or("");
            problems.extend(check_expr(title, expr, &exported, &mut used));
            if !expr.contains(r#"db=~"$db""#) {
                problems.push(format!("{title}: `{expr}` ignores the db variable"));
            }
        }
    }
    assert!(targets > 20, "only {targets} queries");
    for family in COVERED {
        if !used.contains(*family) {
            problems.push(format!("no panel shows {family}"));
        }
    }
    assert!(problems.is_empty(), "{DASHBOARD}:\n{}", problems.join("\n"));
    Ok(())
}

/// Bug caught: an alert rules file Prometheus would refuse (not YAML, a rule without
/// `alert` or `expr`), an alert on a metric or label the endpoint does not export (it
/// would never fire), one of the alerts the runbook names missing, or an alert without a
/// severity and summary for its notification.
#[test]
fn alert_rules_use_only_exported_metrics() -> TestResult {
    let exported = exported()?;
    let text = std::fs::read_to_string(workspace().join(ALERTS))?;
    let rules: Value = serde_saphyr::from_str(&text)?;
    let mut problems = Vec::new();
    let mut alerts = BTreeSet::new();
    let mut used = BTreeSet::new();
    for group in rules["groups"].as_array().ok_or("no groups")? {
        for rule in group["rules"].as_array().ok_or("a group without rules")? {
            let name = rule["alert"].as_str().ok_or("a rule without `alert`")?;
            let expr = rule["expr"].as_str().ok_or("a rule without `expr`")?;
            alerts.insert(name.to_owned());
            problems.extend(check_expr(name, expr, &exported, &mut used));
            if !["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or(""))
            {
                problems.push(format!("{name}: no severity"));
            }
            if rule["annotations"]["summary"].as_str().is_none() {
                problems.push(format!("{name}: no summary"));
            }
        }
    }
    for want in [
        "HiveDbRegistryDown",
        "HiveDbClosed",
        "HiveDbCommitsFailing",
        "HiveDbPoolExhausted",
        "HiveDbAcquireTimeoutsRising",
        "HiveDbWriterLaneTimeouts",
        "HiveDbConnectionLeaked",
        "HiveDbWalLarge",
    ] {
        if !alerts.contains(want) {
            problems.push(format!("no alert {want}"));
        }
    }
    assert!(problems.is_empty(), "{ALERTS}:\n{}", problems.join("\n"));
    Ok(())
}

/// Bug caught: the name check passing everything (a tokenizer that finds no names, or one
/// that reads label values, ranges or strings as names), so the tests above could never
/// fail.
#[test]
fn the_name_check_finds_unknown_names() {
    let names: BTreeSet<String> = ["hive_db_up", "hive_db_acquires_total"]
        .map(str::to_owned)
        .into();
    let labels: BTreeSet<String> = ["db", "state"].map(str::to_owned).into();
    let exported = (names, labels);
    let mut used = BTreeSet::new();
    let fine = r#"sum by (job, db) (rate(hive_db_acquires_total{db=~"$db", state!="x y"}[$__rate_interval])) and hive_db_up > 0.5"#;
    assert_eq!(
        check_expr("ok", fine, &exported, &mut used),
        Vec::<String>::new()
    );
    assert_eq!(used.len(), 2);
    assert_eq!(
        check_expr(
            "typo",
            "rate(hive_db_acquire_total[5m])",
            &exported,
            &mut used
        )
        .len(),
        1
    );
    assert_eq!(
        check_expr("label", r#"hive_db_up{dbname="x"}"#, &exported, &mut used).len(),
        1
    );
    assert_eq!(
        check_expr("other", "node_load1 > 1", &exported, &mut used).len(),
        2
    );
}
