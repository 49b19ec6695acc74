//! The command line: sources, modes and thresholds, parsed and checked by clap.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::TypedValueParser;
use hive_db_core::DbName;

const AFTER_HELP: &str = "\
Sources:
  With no --attach, --db or --config, db-monitor reports on every registry of this user on
  this host that serves its endpoint (each announces itself in $XDG_RUNTIME_DIR/hive-db,
  else /tmp/hive-db-UID; with --continuous, registries that start or stop come and go),
  and on the EcoSystemiser database when it exists: ECOSYSTEMISER_DB_PATH when set, else
  $XDG_DATA_HOME/ecosystemiser/ecosystemiser.db, else
  ~/.local/share/ecosystemiser/ecosystemiser.db. It never creates a database.
  A --config file lists one database per line as `NAME = PATH`; `#` starts a comment and a
  relative PATH is taken from the file's folder.

Exit status (the Nagios plugin convention):
  0  healthy
  1  degraded: a connection held past its leak threshold, more connections than the pool's
     maximum, acquire timeouts rising, slow acquires (--slow), SQLITE_BUSY errors rising, a
     slow health check, a database whose write lock is held by another connection, or for
     PostgreSQL a replica not taking reads (lagging, down, not a standby) or a primary its
     registry cannot reach or write to
  2  unhealthy: a database that is closed, missing, not a database, corrupt, or does not
     answer its health check
  3  could not run: bad arguments or config file, an --attach endpoint that cannot be
     reached or is not a hive-db endpoint, or nothing to report on
  --continuous exits with the worst status it saw. A closed output pipe (| head) ends a
  report quietly, with the status it had.

Replay:
  --replay FILE reads the JSON lines that --continuous --output FILE wrote (or the report a
  one-shot --output wrote). Alone it prints the summary and the report of the worst sample
  (--json: that report as JSON, the summary on stderr). With --continuous it steps through
  the samples in the live view on a terminal (right arrow or space: next; left: previous;
  Home, End; q quits), and writes them again as JSON lines elsewhere. It exits with the
  worst status recorded, and with 3 for a file that is truncated or not a recording.

Durations:
  A DURATION is a number of seconds, as `watch -n 1` and `vmstat 1` read it (`1`, `1.5`,
  `30`), or a number with a unit (`500ms`, `2s`, `1m`, `1h 30m`), more than zero;
  --interval and --timeout at least 10ms.";

/// Reads the pool state of hive-db registries, from their endpoints or their database files,
/// and reports it once, as JSON, or live.
#[derive(Debug, Parser)]
#[command(name = "db-monitor", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Read a live registry's endpoint at ADDR (`host:port` or `http://host:port`); repeatable.
    #[arg(long = "attach", value_name = "ADDR", value_parser = parse_attach)]
    pub(crate) attach: Vec<String>,

    /// Open the database file PATH under NAME, read-only; repeatable.
    #[arg(long = "db", value_name = "NAME=PATH", value_parser = clap::builder::OsStringValueParser::new().try_map(|s| parse_db_spec(s.as_bytes())))]
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

    /// Add a performance probe this long (at most 1h): reads per second against --db
    /// sources, /stats round trips against --attach sources.
    #[arg(long, value_name = "DURATION", value_parser = parse_probe, allow_negative_numbers = true, conflicts_with = "continuous")]
    pub(crate) probe: Option<Duration>,

    /// Report again every --interval until --duration ends or `q` / Ctrl-C; with --replay,
    /// step through the samples (JSON lines when stdout is not a terminal).
    #[arg(long)]
    pub(crate) continuous: bool,

    /// Show again the samples that `--continuous --output FILE` recorded: the summary and
    /// the worst interval's report; with --continuous, every sample.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["attach", "db", "config", "output", "probe", "duration", "interval"])]
    pub(crate) replay: Option<PathBuf>,

    /// Time between samples (10ms to 24h), in seconds or with a unit (`1`, `500ms`)
    /// [default: 2 with --continuous; 1 between the two reads of a one-shot report of an
    /// endpoint].
    #[arg(long, value_name = "DURATION", value_parser = parse_interval, allow_negative_numbers = true)]
    pub(crate) interval: Option<Duration>,

    /// How long --continuous runs, in seconds or with a unit (`30`, `10m`) [default: until `q`
    /// or Ctrl-C].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_negative_numbers = true, requires = "continuous")]
    pub(crate) duration: Option<Duration>,

    /// An acquire wait (maxwait, or the p99 of an interval) longer than this is degraded.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration, allow_negative_numbers = true)]
    pub(crate) slow: Duration,

    /// Bound of each health check, HTTP request and quick_check (10ms to 24h).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_interval, allow_negative_numbers = true)]
    pub(crate) timeout: Duration,
}

/// `--db NAME=PATH`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DbSpec {
    pub(crate) name: DbName,
    pub(crate) path: PathBuf,
}

/// Splits `NAME=PATH` at the first `=`; the name must be a valid database name. Bytes, not
/// text: a Unix file name may be any bytes, and such a PATH is taken as it is.
pub(crate) fn parse_db_spec(s: &[u8]) -> Result<DbSpec, String> {
    let shown = String::from_utf8_lossy(s);
    let Some(at) = s.iter().position(|&b| b == b'=') else {
        return Err(format!("`{shown}` is not NAME=PATH"));
    };
    let (name, path) = (s[..at].trim_ascii(), s[at + 1..].trim_ascii());
    if path.is_empty() {
        return Err(format!("`{shown}` has no PATH after `=`"));
    }
    let name = std::str::from_utf8(name)
        .map_err(|_| format!("bad database name in `{shown}`: not UTF-8"))?;
    let name = DbName::new(name).map_err(|e| format!("bad database name `{name}`: {e}"))?;
    Ok(DbSpec {
        name,
        path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
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
    // An IPv6 address goes in brackets (`[::1]:9187`); bare, its colons leave the port
    // unclear, and the HTTP client refuses it later with "invalid authority".
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "`{s}`: write an IPv6 address in brackets, as `[{host}]:{port}`"
        ));
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

/// A duration more than zero: a bare number of seconds (`1`, `1.5`), as `watch -n`,
/// `vmstat` and `iostat` read it, or a number with units (`500ms`, `2s`, `1m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.trim().parse::<f64>() {
        Ok(seconds) if seconds < 0.0 => {
            return Err(format!(
                "`{s}` is negative: a duration must be more than zero"
            ));
        }
        Ok(seconds) => Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{s}` is not a number of seconds"))?,
        Err(_) => humantime::parse_duration(s).map_err(|e| {
            format!("`{s}` is not a duration ({e}); try 2 (seconds), 1.5, 500ms or 1m")
        })?,
    };
    if d.is_zero() {
        return Err(format!("`{s}` is zero: a duration must be more than zero"));
    }
    // Deadlines are the clock plus a duration: a year keeps every sum far from overflowing.
    if d > MAX_DURATION {
        return Err(format!("`{s}` is too long (at most 365d)"));
    }
    Ok(d)
}

/// The longest duration any option takes.
const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// The longest period or bound: SQLite's busy timeout counts milliseconds in an `i32`
/// (about 24.8 days), and a day is far past any useful bound.
const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

/// A duration of at least 10ms and at most a day: a loop's period or a bound on a request.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err(format!("`{s}` is too short (at least 10ms)"));
    }
    if d > MAX_INTERVAL {
        return Err(format!("`{s}` is too long (at most 24h)"));
    }
    Ok(d)
}

/// A probe's length: at most an hour.
fn parse_probe(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(3600) {
        return Err(format!("`{s}` is too long for a probe (at most 1h)"));
    }
    Ok(d)
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
        let spec = parse_db_spec(b"inv=/tmp/a=b.db").unwrap();
        assert_eq!(spec.name.as_str(), "inv");
        assert_eq!(spec.path, PathBuf::from("/tmp/a=b.db"));
        assert!(parse_db_spec(b"inv").is_err());
        assert!(parse_db_spec(b"inv=").is_err());
        assert!(parse_db_spec(b"=x.db").is_err());
        assert!(parse_db_spec(b"bad name!=x.db").is_err());
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
        // Bug caught: a bare IPv6 address taken, to fail later with "invalid authority".
        assert_eq!(parse_attach("[::1]:9187").unwrap(), "http://[::1]:9187");
        let bare = parse_attach("::1:9187").unwrap_err();
        assert!(bare.contains("[::1]:9187"), "{bare}");
    }

    /// Bug caught: a bare number refused (`--interval 1` as `watch -n 1` takes it) or read as
    /// milliseconds, fractions of a second lost, or units no longer read.
    #[test]
    fn durations_as_seconds_or_with_units() -> Result<(), String> {
        assert_eq!(parse_duration("1")?, Duration::from_secs(1));
        assert_eq!(parse_duration("30")?, Duration::from_secs(30));
        assert_eq!(parse_duration("1.5")?, Duration::from_millis(1500));
        assert_eq!(parse_duration("0.25")?, Duration::from_millis(250));
        assert_eq!(parse_duration("500ms")?, Duration::from_millis(500));
        assert_eq!(parse_duration("2s")?, Duration::from_secs(2));
        assert_eq!(parse_duration("1m")?, Duration::from_secs(60));
        assert_eq!(parse_interval("0.5")?, Duration::from_millis(500));
        assert_eq!(parse_probe("2")?, Duration::from_secs(2));
        Ok(())
    }

    /// Bug caught: zero (a busy loop), a negative number, a number that is no duration
    /// (`inf`, `NaN`) or words accepted, or refused without saying why; a duration so long
    /// that the monitor panicked (`--timeout 30d`, `--interval 1e19`) accepted.
    #[test]
    fn durations_refused_with_the_reason() {
        let refused = |s: &str, why: &str| {
            let err = parse_duration(s).expect_err(s);
            assert!(err.contains(why), "{s}: {err}");
        };
        refused("0", "zero");
        refused("0.0", "zero");
        refused("0s", "zero");
        refused("-1", "negative");
        refused("-0.5", "negative");
        refused("inf", "not a number of seconds");
        refused("NaN", "not a number of seconds");
        refused("soon", "not a duration");
        refused("1 parsec", "not a duration");
        refused("", "not a duration");
        assert!(parse_interval("0.001").is_err_and(|e| e.contains("too short")));
        // Past these, a busy timeout panicked in rusqlite ("too big") and a deadline
        // overflowed `Instant` ("overflow when adding duration to instant").
        assert!(parse_interval("25d").is_err_and(|e| e.contains("too long")));
        assert!(parse_interval("1e19").is_err_and(|e| e.contains("too long")));
        assert!(parse_duration("1e19").is_err_and(|e| e.contains("too long")));
        assert_eq!(parse_interval("24h"), Ok(MAX_INTERVAL));
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        assert!(parse_probe("2h").is_err_and(|e| e.contains("too long")));
    }
}
