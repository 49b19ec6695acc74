//! The command line: sources, modes and thresholds, parsed and checked by clap.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hive_db_core::DbName;

const AFTER_HELP: &str = "\
Sources:
  With no --attach, --db or --config, db-monitor reports on the EcoSystemiser database:
  ECOSYSTEMISER_DB_PATH when set, else $XDG_DATA_HOME/ecosystemiser/ecosystemiser.db, else
  ~/.local/share/ecosystemiser/ecosystemiser.db. It never creates a database.
  A --config file lists one database per line as `NAME = PATH`; `#` starts a comment and a
  relative PATH is taken from the file's folder.

Exit status (the Nagios plugin convention):
  0  healthy
  1  degraded: a connection held past its leak threshold, more connections than the pool's
     maximum, acquire timeouts rising, slow acquires (--slow), a slow health check, or a
     database whose write lock is held by another connection
  2  unhealthy: a database that is closed, missing, not a database, corrupt, or does not
     answer its health check
  3  could not run: bad arguments or config file, an endpoint that cannot be reached or is
     not a hive-db endpoint, or no database to report on
  --continuous exits with the worst status it saw. A closed output pipe ends it with 0.";

/// Reads the pool state of hive-db registries, from their endpoints or their database files,
/// and reports it once, as JSON, or live.
#[derive(Debug, Parser)]
#[command(name = "db-monitor", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Read a live registry's endpoint at ADDR (`host:port` or `http://host:port`); repeatable.
    #[arg(long = "attach", value_name = "ADDR", value_parser = parse_attach)]
    pub(crate) attach: Vec<String>,

    /// Open the database file PATH under NAME, read-only; repeatable.
    #[arg(long = "db", value_name = "NAME=PATH", value_parser = parse_db_spec)]
    pub(crate) db: Vec<DbSpec>,

    /// Open the databases listed in FILE (`NAME = PATH` lines).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub(crate) json: bool,

    /// Also save the report (JSON) to FILE; with --continuous, one JSON line per sample.
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    /// Add a performance probe of SECONDS: reads per second against --db sources, /stats
    /// round trips against --attach sources.
    #[arg(long, value_name = "SECONDS", value_parser = parse_probe_seconds, conflicts_with = "continuous")]
    pub(crate) probe: Option<f64>,

    /// Report again every --interval until --duration ends or `q` / Ctrl-C.
    #[arg(long)]
    pub(crate) continuous: bool,

    /// Time between samples [default: 2s with --continuous; 1s between the two reads of a
    /// one-shot report of an endpoint].
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub(crate) interval: Option<Duration>,

    /// How long --continuous runs [default: until `q` or Ctrl-C].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "continuous")]
    pub(crate) duration: Option<Duration>,

    /// An acquire wait (maxwait, or the p99 of an interval) longer than this is degraded.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub(crate) slow: Duration,

    /// Bound of each health check, HTTP request and quick_check.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_interval)]
    pub(crate) timeout: Duration,
}

/// `--db NAME=PATH`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DbSpec {
    pub(crate) name: DbName,
    pub(crate) path: PathBuf,
}

/// Splits `NAME=PATH` at the first `=`; the name must be a valid database name.
pub(crate) fn parse_db_spec(s: &str) -> Result<DbSpec, String> {
    let Some((name, path)) = s.split_once('=') else {
        return Err(format!("`{s}` is not NAME=PATH"));
    };
    let (name, path) = (name.trim(), path.trim());
    if path.is_empty() {
        return Err(format!("`{s}` has no PATH after `=`"));
    }
    let name = DbName::new(name).map_err(|e| format!("bad database name `{name}`: {e}"))?;
    Ok(DbSpec {
        name,
        path: PathBuf::from(path),
    })
}

/// `host:port` or `http://host:port[/]`, returned as `http://host:port`.
pub(crate) fn parse_attach(s: &str) -> Result<String, String> {
    let rest = if let Some(rest) = s.strip_prefix("http://") {
        rest
    } else if s.starts_with("https://") {
        return Err("https is not supported: the endpoint serves plain HTTP".to_owned());
    } else if s.contains("://") {
        return Err(format!("`{s}`: only http:// endpoints are supported"));
    } else {
        s
    };
    let authority = rest.trim_end_matches('/');
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(format!("`{s}` has no port (expected host:port)"));
    };
    if host.is_empty() || authority.contains('/') {
        return Err(format!("`{s}` is not host:port"));
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{s}`: `{port}` is not a port number"))?;
    Ok(format!("http://{authority}"))
}

/// The first paragraph of a clap error, on one line, without `error: `: it names the problem;
/// the rest is usage and tips.
pub(crate) fn first_paragraph(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first: Vec<&str> = rendered
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let first = first.join(" ");
    first.strip_prefix("error: ").unwrap_or(&first).to_owned()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); try 2s or 500ms"))
}

/// A duration that must not be zero.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!("`{s}` is too short (at least 10ms)"));
    }
    Ok(d)
}

fn parse_probe_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of seconds between 0 and 3600"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Bug caught: a clap attribute mistake (two args with one name, a `requires` naming no
    /// argument) that would only panic at run time.
    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Bug caught: `--db` split at the wrong `=` (paths may contain one), an empty path or a
    /// bad name accepted.
    #[test]
    fn db_spec_parsing() {
        let spec = parse_db_spec("inv=/tmp/a=b.db").unwrap();
        assert_eq!(spec.name.as_str(), "inv");
        assert_eq!(spec.path, PathBuf::from("/tmp/a=b.db"));
        assert!(parse_db_spec("inv").is_err());
        assert!(parse_db_spec("inv=").is_err());
        assert!(parse_db_spec("=x.db").is_err());
        assert!(parse_db_spec("bad name!=x.db").is_err());
    }

    /// Bug caught: addresses without a port, with a path, or with https accepted and failing
    /// later with a less clear message.
    #[test]
    fn attach_parsing() {
        assert_eq!(
            parse_attach("127.0.0.1:9187").unwrap(),
            "http://127.0.0.1:9187"
        );
        assert_eq!(
            parse_attach("http://localhost:80/").unwrap(),
            "http://localhost:80"
        );
        assert!(parse_attach("localhost").is_err());
        assert!(parse_attach("https://localhost:1").is_err());
        assert!(parse_attach("localhost:0").is_err());
        assert!(parse_attach("localhost:x").is_err());
        assert!(parse_attach("http://h:1/stats").is_err());
    }
}
