//! `DbConfig`: how one database's pool and connections behave, with defaults and env overrides.
//!
//! (Over 400 lines: about half is the tests of the environment parsing and of the documented
//! defaults.)

use std::time::Duration;

use crate::error::{Error, Result};
use crate::name::DbName;

/// SQLite's `synchronous` setting for every connection of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum Synchronous {
    /// No syncs: fastest, and a power loss can corrupt the database.
    Off,
    /// In WAL mode, durable except for the last transactions before a power loss. The default.
    #[default]
    Normal,
    /// Syncs on every commit.
    Full,
    /// Like `Full`, and syncs the folder after unlinking a journal.
    Extra,
}

impl Synchronous {
    pub(crate) fn as_sql(self) -> &'static str {
        match self {
            Self::Off => "OFF",
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
            Self::Extra => "EXTRA",
        }
    }
}

/// The largest `max_size`: r2d2 reserves room for every connection up front, and each open
/// connection holds file descriptors and a page cache.
const MAX_POOL_SIZE: u32 = 1024;

/// Settings for one registered database. Plain data: build it with struct update syntax from
/// [`DbConfig::default()`] or read it with [`DbConfig::from_env`].
///
/// | field | default | environment variable |
/// |---|---|---|
/// | `max_size` | 10 | `HIVE_DB_MAX_CONNECTIONS` |
/// | `min_idle` | 2 | `HIVE_DB_MIN_IDLE` |
/// | `connection_timeout` | 5 s | `HIVE_DB_CONNECTION_TIMEOUT_MS` |
/// | `busy_timeout` | 5 s | `HIVE_DB_BUSY_TIMEOUT_MS` |
/// | `validate_after_idle` | 500 ms | `HIVE_DB_VALIDATE_AFTER_IDLE_MS` |
/// | `max_lifetime` | 30 min | `HIVE_DB_MAX_LIFETIME_MS` (0 = never) |
/// | `idle_timeout` | 10 min | `HIVE_DB_IDLE_TIMEOUT_MS` (0 = never) |
/// | `leak_threshold` | off | `HIVE_DB_LEAK_THRESHOLD_MS` (0 = off) |
/// | `create_if_missing` | false | `HIVE_DB_CREATE_IF_MISSING` (a boolean) |
/// | `synchronous` | NORMAL | `HIVE_DB_SYNCHRONOUS` (`off`/`normal`/`full`/`extra`) |
/// | `cache_size_kib` | 10240 | `HIVE_DB_CACHE_SIZE_KIB` |
/// | `foreign_keys` | true | `HIVE_DB_FOREIGN_KEYS` (a boolean) |
/// | `group_commit_max_writers` | 32 | `HIVE_DB_GROUP_COMMIT_MAX_WRITERS` (1 = off) |
/// | `group_commit_max_age` | 2 ms | `HIVE_DB_GROUP_COMMIT_MAX_AGE_MS` |
///
/// A boolean takes `true`, `1`, `yes` or `on`, or `false`, `0`, `no` or `off`, in any case.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DbConfig {
    /// Most connections open at once, checked out or idle. Default 10; at least 1, at most
    /// 1024.
    pub max_size: u32,
    /// Idle connections the pool keeps ready: opened at `register`, and opened again within
    /// about a second whenever fewer are idle (while the pool is below `max_size`). Default 2;
    /// at most `max_size`.
    pub min_idle: u32,
    /// Longest wait for a connection, or for the writer lane in `write`. Default 5 s.
    pub connection_timeout: Duration,
    /// SQLite's busy timeout on every connection: how long a statement retries a lock held by
    /// another process. Default 5 s.
    pub busy_timeout: Duration,
    /// A connection not checked out for longer than this is checked with `SELECT 1` before it
    /// is handed out; one used more recently is handed out unchecked (HikariCP's bypass
    /// window). Default 500 ms.
    pub validate_after_idle: Duration,
    /// A connection older than this is closed and replaced. Default 30 min; `None` never; not
    /// zero.
    ///
    /// Checked whenever the connection is checked out, to within the 5 ms coarse clock: a
    /// checkout never gets a connection more than about 5 ms past its lifetime, and closes it
    /// instead. A connection nobody checks out is closed by the pool's sweep, which looks
    /// every second (or, in the rare case it waits in r2d2's own idle list, by r2d2's reaper,
    /// every 30 s).
    pub max_lifetime: Option<Duration>,
    /// A connection idle for longer than this is closed, down to `min_idle` idle ones.
    /// Default 10 min; `None` never; not zero.
    ///
    /// Checked whenever the connection is checked out, to within the 5 ms coarse clock,
    /// counting idle time from its last checkout (so a long hold counts as idle): the
    /// checkout closes it and takes another, unless the pool would then have fewer than
    /// `min_idle` idle connections. Connections nobody checks out are closed by the pool's sweep,
    /// which looks every second.
    pub idle_timeout: Option<Duration>,
    /// A connection held longer than this is reported once as a possible leak, with the place
    /// it was checked out. Default `None` (off).
    pub leak_threshold: Option<Duration>,
    /// Create the file (0600, in a 0700 folder) when it does not exist. Default false.
    pub create_if_missing: bool,
    /// `PRAGMA synchronous`. Default [`Synchronous::Normal`].
    pub synchronous: Synchronous,
    /// Page cache per connection in KiB (written as a negative `PRAGMA cache_size`).
    /// Default 10240 (10 MiB).
    pub cache_size_kib: u32,
    /// `PRAGMA foreign_keys`. Default true.
    pub foreign_keys: bool,
    /// Most `write` calls that share one SQLite transaction when writers queue (group
    /// commit; see [`WriteTx`](crate::WriteTx)). Default 32; 1 gives every `write` its own
    /// transaction; at least 1.
    pub group_commit_max_writers: u32,
    /// A shared write transaction older than this commits instead of taking on the next
    /// queued writer, which bounds how long the first writer in it waits for its commit.
    /// Default 2 ms.
    pub group_commit_max_age: Duration,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            max_size: 10,
            min_idle: 2,
            connection_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            validate_after_idle: Duration::from_millis(500),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            leak_threshold: None,
            create_if_missing: false,
            synchronous: Synchronous::Normal,
            cache_size_kib: 10 * 1024,
            foreign_keys: true,
            group_commit_max_writers: 32,
            group_commit_max_age: Duration::from_millis(2),
        }
    }
}

/// The longest busy timeout SQLite takes: milliseconds in an `i32`, about 24.8 days (past
/// it rusqlite panics). `validate` refuses more; the calls that set one from elsewhere (the
/// health probe's, a caller's unvalidated settings) cap at it.
pub(crate) const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl DbConfig {
    /// The defaults, overridden by any `HIVE_DB_*` environment variable that is set.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEnv`] naming the first variable whose value does not parse.
    pub fn from_env() -> Result<Self> {
        // A value that is not UTF-8 is read with U+FFFD for what is not, so that it fails to
        // parse by name: `std::env::var(..).ok()` took it for a variable not set, and the
        // default silently stood in for it.
        Self::from_lookup(|var| std::env::var_os(var).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Like [`DbConfig::from_env`], reading variables through `lookup` (for tests and for
    /// configuration that comes from elsewhere).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEnv`] naming the first variable whose value does not parse.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut c = Self::default();
        let get = |var: &'static str| lookup(var).map(|v| (var, v.trim().to_owned()));
        if let Some((var, v)) = get("HIVE_DB_MAX_CONNECTIONS") {
            c.max_size = parse_u32(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_MIN_IDLE") {
            c.min_idle = parse_u32(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_CONNECTION_TIMEOUT_MS") {
            c.connection_timeout = parse_ms(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_BUSY_TIMEOUT_MS") {
            c.busy_timeout = parse_ms(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_VALIDATE_AFTER_IDLE_MS") {
            c.validate_after_idle = parse_ms(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_MAX_LIFETIME_MS") {
            c.max_lifetime = parse_optional_ms(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_IDLE_TIMEOUT_MS") {
            c.idle_timeout = parse_optional_ms(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_LEAK_THRESHOLD_MS") {
            c.leak_threshold = parse_optional_ms(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_CREATE_IF_MISSING") {
            c.create_if_missing = parse_bool(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_SYNCHRONOUS") {
            c.synchronous = match v.to_ascii_lowercase().as_str() {
                "off" => Synchronous::Off,
                "normal" => Synchronous::Normal,
                "full" => Synchronous::Full,
                "extra" => Synchronous::Extra,
                _ => return Err(env_error(var, &v, "expected off, normal, full or extra")),
            };
        }
        if let Some((var, v)) = get("HIVE_DB_CACHE_SIZE_KIB") {
            c.cache_size_kib = parse_u32(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_FOREIGN_KEYS") {
            c.foreign_keys = parse_bool(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_GROUP_COMMIT_MAX_WRITERS") {
            c.group_commit_max_writers = parse_u32(var, &v)?;
        }
        if let Some((var, v)) = get("HIVE_DB_GROUP_COMMIT_MAX_AGE_MS") {
            c.group_commit_max_age = parse_ms(var, &v)?;
        }
        Ok(c)
    }

    /// Checks that a pool can run with these settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming `db` and the first setting that cannot work.
    pub fn validate(&self, db: &DbName) -> Result<()> {
        let reason = if self.max_size == 0 {
            Some("max_size must be at least 1".to_owned())
        } else if self.min_idle > self.max_size {
            Some(format!(
                "min_idle ({}) is larger than max_size ({})",
                self.min_idle, self.max_size
            ))
        } else if self.max_size > MAX_POOL_SIZE {
            Some(format!(
                "max_size ({}) is larger than {MAX_POOL_SIZE}",
                self.max_size
            ))
        } else if self.connection_timeout.is_zero() {
            Some("connection_timeout must be longer than zero".to_owned())
        } else if self.max_lifetime.is_some_and(|t| t.is_zero()) {
            Some("max_lifetime must be longer than zero, or None".to_owned())
        } else if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            Some("idle_timeout must be longer than zero, or None".to_owned())
        } else if self.leak_threshold.is_some_and(|t| t.is_zero()) {
            Some("leak_threshold must be longer than zero, or None".to_owned())
        } else if self.group_commit_max_writers == 0 {
            Some("group_commit_max_writers must be at least 1".to_owned())
        } else if self.busy_timeout > MAX_BUSY_TIMEOUT {
            Some("busy_timeout is longer than SQLite accepts (about 24 days)".to_owned())
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidConfig {
                db: db.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

fn env_error(var: &'static str, value: &str, reason: &'static str) -> Error {
    Error::InvalidEnv {
        var,
        value: value.to_owned(),
        reason,
    }
}

fn parse_u32(var: &'static str, v: &str) -> Result<u32> {
    v.parse()
        .map_err(|_| env_error(var, v, "expected a whole number"))
}

fn parse_ms(var: &'static str, v: &str) -> Result<Duration> {
    v.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| env_error(var, v, "expected a whole number of milliseconds"))
}

fn parse_optional_ms(var: &'static str, v: &str) -> Result<Option<Duration>> {
    parse_ms(var, v).map(|d| (!d.is_zero()).then_some(d))
}

fn parse_bool(var: &'static str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(env_error(
            var,
            v,
            "expected true, 1, yes or on, or false, 0, no or off",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// The rows of the defaults table in [`DbConfig`]'s documentation, read from this file:
    /// (field, default as written, environment variable).
    fn documented_defaults() -> Vec<(String, String, String)> {
        include_str!("config.rs")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("/// | `"))
            .filter_map(|row| {
                let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                let field = cells.first()?.strip_suffix('`')?;
                let var = cells.get(2)?.split('`').nth(1)?;
                Some((
                    field.to_owned(),
                    (*cells.get(1)?).to_owned(),
                    var.to_owned(),
                ))
            })
            .collect()
    }

    /// A documented default ("5 s", "30 min", "off", "NORMAL") as its variable's value.
    fn as_env_value(documented: &str) -> String {
        let ms = |n: &str, unit: u64| n.parse::<u64>().map(|n| (n * unit).to_string());
        match documented.split_once(' ') {
            Some((n, "ms")) => ms(n, 1),
            Some((n, "s")) => ms(n, 1000),
            Some((n, "min")) => ms(n, 60_000),
            _ if documented == "off" => Ok("0".to_owned()),
            _ => Ok(documented.to_ascii_lowercase()),
        }
        .unwrap_or_else(|_| panic!("cannot read the documented default {documented:?}"))
    }

    /// Bug caught: a documented default that is not the code's (the table says 10, the code
    /// says 11), or a field missing from the table. Each documented default, set through its
    /// documented variable, must give back `DbConfig::default()`, and the table must name
    /// every field.
    #[test]
    fn defaults_match_the_documentation() -> Result<()> {
        let rows = documented_defaults();
        let mut fields = serde_json::to_value(DbConfig::default())
            .ok()
            .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
            .unwrap_or_default();
        fields.sort();
        let mut documented: Vec<_> = rows.iter().map(|(f, ..)| f.clone()).collect();
        documented.sort();
        assert_eq!(
            documented, fields,
            "the table and the struct list different fields"
        );
        for (field, default, var) in &rows {
            let value = as_env_value(default);
            let c = DbConfig::from_lookup(|v| (v == var).then(|| value.clone()))?;
            assert_eq!(c, DbConfig::default(), "{field}: documented as {default}");
        }
        Ok(())
    }

    /// Bug caught: an environment variable read under the wrong name or unit.
    #[test]
    fn every_variable_is_read() -> Result<()> {
        let c = DbConfig::from_lookup(lookup(&[
            ("HIVE_DB_MAX_CONNECTIONS", "20"),
            ("HIVE_DB_MIN_IDLE", "3"),
            ("HIVE_DB_CONNECTION_TIMEOUT_MS", "250"),
            ("HIVE_DB_BUSY_TIMEOUT_MS", "1500"),
            ("HIVE_DB_VALIDATE_AFTER_IDLE_MS", "0"),
            ("HIVE_DB_MAX_LIFETIME_MS", "0"),
            ("HIVE_DB_IDLE_TIMEOUT_MS", "60000"),
            ("HIVE_DB_LEAK_THRESHOLD_MS", "2000"),
            ("HIVE_DB_CREATE_IF_MISSING", "true"),
            ("HIVE_DB_SYNCHRONOUS", "FULL"),
            ("HIVE_DB_CACHE_SIZE_KIB", "4096"),
            ("HIVE_DB_FOREIGN_KEYS", "0"),
            ("HIVE_DB_GROUP_COMMIT_MAX_WRITERS", "1"),
            ("HIVE_DB_GROUP_COMMIT_MAX_AGE_MS", "10"),
        ]))?;
        assert_eq!(c.max_size, 20);
        assert_eq!(c.min_idle, 3);
        assert_eq!(c.connection_timeout, Duration::from_millis(250));
        assert_eq!(c.busy_timeout, Duration::from_millis(1500));
        assert_eq!(c.validate_after_idle, Duration::ZERO);
        assert_eq!(c.max_lifetime, None);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.leak_threshold, Some(Duration::from_secs(2)));
        assert!(c.create_if_missing);
        assert_eq!(c.synchronous, Synchronous::Full);
        assert_eq!(c.cache_size_kib, 4096);
        assert!(!c.foreign_keys);
        assert_eq!(c.group_commit_max_writers, 1);
        assert_eq!(c.group_commit_max_age, Duration::from_millis(10));
        Ok(())
    }

    /// Bug caught: a bad value silently replaced by a default instead of reported.
    #[test]
    fn bad_values_name_the_variable() {
        let err = DbConfig::from_lookup(lookup(&[("HIVE_DB_CONNECTION_TIMEOUT_MS", "5s")]));
        assert!(
            matches!(err, Err(Error::InvalidEnv { var: "HIVE_DB_CONNECTION_TIMEOUT_MS", ref value, .. }) if value == "5s")
        );
        let err = DbConfig::from_lookup(lookup(&[("HIVE_DB_SYNCHRONOUS", "sometimes")]));
        assert!(matches!(
            err,
            Err(Error::InvalidEnv {
                var: "HIVE_DB_SYNCHRONOUS",
                ..
            })
        ));
        let err = DbConfig::from_lookup(lookup(&[("HIVE_DB_FOREIGN_KEYS", "maybe")]));
        assert!(matches!(err, Err(Error::InvalidEnv { .. })));
    }

    /// Bug caught: settings that would make r2d2 panic (max_size 0, min_idle > max_size, a
    /// zero max_lifetime or idle_timeout) or abort (a max_size it reserves room for), or
    /// a busy timeout SQLite cannot take (it would be cut silently), let through; or the
    /// longest one it can take refused.
    #[test]
    fn validate_refuses_unworkable_settings() -> Result<()> {
        let db = DbName::new("cfg")?;
        for bad in [
            DbConfig {
                max_size: 0,
                min_idle: 0,
                ..DbConfig::default()
            },
            DbConfig {
                max_size: 2,
                min_idle: 3,
                ..DbConfig::default()
            },
            DbConfig {
                connection_timeout: Duration::ZERO,
                ..DbConfig::default()
            },
            DbConfig {
                max_size: MAX_POOL_SIZE + 1,
                ..DbConfig::default()
            },
            DbConfig {
                max_lifetime: Some(Duration::ZERO),
                ..DbConfig::default()
            },
            DbConfig {
                idle_timeout: Some(Duration::ZERO),
                ..DbConfig::default()
            },
            DbConfig {
                leak_threshold: Some(Duration::ZERO),
                ..DbConfig::default()
            },
            DbConfig {
                group_commit_max_writers: 0,
                ..DbConfig::default()
            },
            DbConfig {
                busy_timeout: Duration::from_millis(i32::MAX as u64 + 1),
                ..DbConfig::default()
            },
        ] {
            assert!(
                matches!(bad.validate(&db), Err(Error::InvalidConfig { db: ref d, .. }) if d == &db),
                "{bad:?} accepted"
            );
        }
        // The largest pool and the longest busy timeout SQLite takes are accepted.
        DbConfig {
            max_size: MAX_POOL_SIZE,
            min_idle: 0,
            ..DbConfig::default()
        }
        .validate(&db)?;
        DbConfig {
            busy_timeout: Duration::from_millis(i32::MAX as u64),
            ..DbConfig::default()
        }
        .validate(&db)?;
        DbConfig::default().validate(&db)
    }
}
