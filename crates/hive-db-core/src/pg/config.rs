//! `PgConfig`, and the parsing of a PostgreSQL connection string into the client's config
//! with the pool's bounds applied, and into the form shown to people (never a password).

use std::time::Duration;

use crate::config::DbConfig;
use crate::error::{Error, Result};
use crate::name::DbName;

/// Settings for one PostgreSQL database: the pool's, shared with SQLite, the write retries,
/// and its read replicas. Plain data: build it with struct update syntax from
/// [`PgConfig::default()`].
#[derive(Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// The pool: `max_size`, `min_idle`, `connection_timeout` (also the connect timeout,
    /// unless the URL sets a shorter `connect_timeout`), `validate_after_idle`,
    /// `max_lifetime`, `idle_timeout` and `leak_threshold`, as for SQLite. Its SQLite-only
    /// fields (`busy_timeout`, `synchronous`, `cache_size_kib`, `foreign_keys`,
    /// `create_if_missing`, group commit) do not apply. Each replica gets a pool of its own
    /// with the same settings. Default [`DbConfig::default()`].
    pub pool: DbConfig,
    /// How many times a `write` is re-run after the server failed its transaction for a
    /// serialization failure or a deadlock (SQLSTATE 40001, 40P01). Default 3; 0 never.
    pub write_retries: u32,
    /// The pause before the first re-run; each later one doubles it. Each pause is drawn at
    /// random between half and one and a half times that (jitter), so writers that
    /// conflicted do not meet again. Default 5 ms.
    pub retry_backoff: Duration,
    /// Connection strings of read replicas (standbys of the primary, streaming from it):
    /// `read` goes to one of them while its lag is within `max_replica_lag`. Shown, like the
    /// primary's, without passwords. Default none.
    pub replicas: Vec<String>,
    /// The most a replica may lag behind the primary and still take reads. Default 1 s. It
    /// bounds what a read there can miss: the lag last measured plus the time since that
    /// measure (so keep `monitor_interval` well under it, or the replica sits out part of
    /// each interval).
    pub max_replica_lag: Duration,
    /// How often the registry measures its servers (facts, replica lag), on one connection
    /// per server outside the pools. Default 250 ms.
    pub monitor_interval: Duration,
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            pool: DbConfig::default(),
            write_retries: 3,
            retry_backoff: Duration::from_millis(5),
            replicas: Vec::new(),
            max_replica_lag: Duration::from_secs(1),
            monitor_interval: Duration::from_millis(250),
        }
    }
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the replicas' connection strings: they may hold passwords.
        f.debug_struct("PgConfig")
            .field("pool", &self.pool)
            .field("write_retries", &self.write_retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("replicas", &self.replicas.len())
            .field("max_replica_lag", &self.max_replica_lag)
            .field("monitor_interval", &self.monitor_interval)
            .finish()
    }
}

impl PgConfig {
    /// Checks the settings a database cannot run with.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming `db`.
    pub(super) fn validate(&self, db: &DbName) -> Result<()> {
        self.pool.validate(db)?;
        let invalid = |reason: &str| Error::InvalidConfig {
            db: db.clone(),
            reason: reason.to_owned(),
        };
        if self.monitor_interval < Duration::from_millis(10)
            || self.monitor_interval > Duration::from_secs(60)
        {
            return Err(invalid("monitor_interval must be between 10 ms and 60 s"));
        }
        if self.max_replica_lag.is_zero() {
            return Err(invalid("max_replica_lag must be above zero"));
        }
        if self.replicas.len() > 64 {
            return Err(invalid("at most 64 replicas"));
        }
        Ok(())
    }
}

/// A parsed connection string: the client's config, and how to show it.
pub(super) struct Target {
    pub(super) config: postgres::Config,
    /// `postgres://user@host:port/dbname`, without the password.
    pub(super) shown: String,
}

/// Option names a parse error may quote: nothing else of the string is ever repeated (a
/// malformed string may have a password where a name was expected).
const OPTIONS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Parses `url` (`postgres://`, `postgresql://` or libpq's `key=value` pairs) for database
/// `db`: the connect timeout is at most `connection_timeout`, unacknowledged writes to a dead
/// server give up after it too (`tcp_user_timeout`), and the server sees the database's name
/// as `application_name` unless the string sets one.
pub(super) fn parse(db: &DbName, url: &str, pool: &DbConfig) -> Result<Target> {
    let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
        let message = e.to_string();
        let quoted_ok = message
            .split('`')
            .skip(1)
            .step_by(2)
            .all(|quoted| OPTIONS.contains(&quoted));
        Error::InvalidUrl {
            db: db.clone(),
            reason: if quoted_ok && !message.contains("got") {
                message
            } else {
                "it does not parse (details withheld: they would quote the string)".to_owned()
            },
        }
    })?;
    if config.get_ssl_mode() == postgres::config::SslMode::Require {
        return Err(Error::InvalidUrl {
            db: db.clone(),
            reason: "sslmode=require: the registry does not speak TLS yet (connect over a \
                     trusted network, or through a TLS-terminating proxy)"
                .to_owned(),
        });
    }
    if config.get_hosts().is_empty() {
        return Err(Error::InvalidUrl {
            db: db.clone(),
            reason: "no host".to_owned(),
        });
    }
    // A password holding an `@` not written as `%40` splits at its first `@`, as libpq
    // splits it: the rest of the password becomes the host, which is shown in the
    // snapshot, the health report and `PgHandle::target`. No host name holds an `@`.
    let at_in_host = config
        .get_hosts()
        .iter()
        .any(|h| matches!(h, postgres::config::Host::Tcp(h) if h.contains('@')));
    if at_in_host {
        return Err(Error::InvalidUrl {
            db: db.clone(),
            reason: "a host holds '@': write an '@' in the user name or password as %40 \
                     (details withheld: they would quote the string)"
                .to_owned(),
        });
    }
    // Counts the client checks only when it connects: a string that can never connect
    // would register, and every call would wait out its timeout.
    let (hosts, ports) = (config.get_hosts().len(), config.get_ports().len());
    if ports > 1 && ports != hosts {
        return Err(Error::InvalidUrl {
            db: db.clone(),
            reason: format!("{ports} ports for {hosts} hosts: give one port, or one per host"),
        });
    }
    let hostaddrs = config.get_hostaddrs().len();
    if hostaddrs > 0 && hostaddrs != hosts {
        return Err(Error::InvalidUrl {
            db: db.clone(),
            reason: format!("{hostaddrs} hostaddrs for {hosts} hosts: give one per host"),
        });
    }
    let timeout = pool.connection_timeout;
    if config
        .get_connect_timeout()
        .is_none_or(|t| t.is_zero() || *t > timeout)
    {
        config.connect_timeout(timeout);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(timeout);
    }
    // TCP keepalives within about the same bound, unless the string sets them: the
    // client's default first probe comes after two hours, so a server host that went away
    // while a statement ran (nothing unacknowledged in flight for `tcp_user_timeout` to see)
    // held the call that long. A live server's kernel answers the probes, however long its
    // statement runs.
    if config.get_keepalives() && config.get_keepalives_idle() == KEEPALIVES_IDLE_DEFAULT {
        config.keepalives_idle(timeout.clamp(Duration::from_secs(1), KEEPALIVES_IDLE_DEFAULT));
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(Duration::from_secs(1));
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(3);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(db.as_str());
    }
    let shown = shown(&config);
    Ok(Target { config, shown })
}

/// The client's own `keepalives_idle` when the string sets none.
const KEEPALIVES_IDLE_DEFAULT: Duration = Duration::from_secs(2 * 60 * 60);

/// `postgres://user@host:port,host2:port2/dbname`, from the parsed config: no password, and no
/// option that could carry one.
fn shown(config: &postgres::Config) -> String {
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                postgres::config::Host::Tcp(h) => h.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let dbname = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{dbname}", hosts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = anyhow::Result<()>;

    /// Bug caught: a password (in a URL, in key=value pairs, or where a malformed string puts
    /// it) repeated in what the registry shows or in the error of a string that does not
    /// parse.
    #[test]
    fn a_password_is_never_shown() -> TestResult {
        let db = DbName::new("pw")?;
        let pool = DbConfig::default();
        for url in [
            "postgres://app:s3cret-pw@db.example:6543/shop",
            "postgresql://app:s3cret-pw@db.example/shop?sslmode=disable",
            "host=db.example user=app password=s3cret-pw dbname=shop",
        ] {
            let target = parse(&db, url, &pool)?;
            assert!(!target.shown.contains("s3cret"), "{}", target.shown);
            assert!(target.shown.starts_with("postgres://app@db.example:"));
            assert!(target.shown.ends_with("/shop"), "{}", target.shown);
        }
        for bad in [
            "host=db.example password=s3cret pw",
            "host=db.example password=s3cret s3cret-key=1",
            "postgres://app:s3cret@db.example:notaport/shop",
            "host='db.example password=s3cret",
            // An `@` in the password not written as %40: the rest of it became the host.
            "postgres://app:s3cr@t-tail@db.example:6543/shop",
            "postgres://app:s3cret@@db.example/shop",
        ] {
            let Err(err) = parse(&db, bad, &pool) else {
                panic!("{bad} parsed");
            };
            assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
            let text = crate::error::error_chain(&err);
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("database pw"), "{text}");
        }
        Ok(())
    }

    /// Bug caught: strings that can never connect (more ports than one and not one per
    /// host, hostaddrs not one per host) registered, and every call waited out its timeout
    /// and failed with the client's "invalid number of ports" as a connect error.
    #[test]
    fn host_port_and_hostaddr_counts_must_match() -> TestResult {
        let db = DbName::new("counts")?;
        let pool = DbConfig::default();
        for bad in [
            "host=h1,h2,h3 port=5432,5433",
            "host=h1 port=5432,5433",
            "host=h1 hostaddr=127.0.0.1,127.0.0.2",
            "postgres://h1:5432,h2:5433,h3/d?port=1,2",
        ] {
            let got = parse(&db, bad, &pool).map(|t| t.shown);
            assert!(
                matches!(got, Err(Error::InvalidUrl { .. })),
                "{bad}: {got:?}"
            );
        }
        for good in [
            "host=h1,h2 port=5432",
            "host=h1,h2 port=5432,5433",
            "host=h1,h2 hostaddr=127.0.0.1,127.0.0.2",
            "postgres://h1:5432,h2:5433/d",
            "postgres://h1,h2/d",
        ] {
            parse(&db, good, &pool)?;
        }
        Ok(())
    }

    /// Bug caught: keepalives left at the client's two hours, so a call whose server host
    /// went away mid-statement waited that long; or a string's own keepalives overridden.
    #[test]
    fn keepalives_follow_the_pools_timeout_unless_set() -> TestResult {
        let db = DbName::new("ka")?;
        let pool = DbConfig {
            connection_timeout: Duration::from_secs(3),
            ..DbConfig::default()
        };
        let config = parse(&db, "postgres://h/d", &pool)?.config;
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(3));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(config.get_keepalives_retries(), Some(3));
        let own = parse(
            &db,
            "host=h keepalives_idle=600 keepalives_retries=9",
            &pool,
        )?
        .config;
        assert_eq!(own.get_keepalives_idle(), Duration::from_secs(600));
        assert_eq!(own.get_keepalives_retries(), Some(9));
        let off = parse(&db, "host=h keepalives=0", &pool)?.config;
        assert!(!off.get_keepalives());
        Ok(())
    }

    /// Bug caught: a URL without its own `connect_timeout` (or with a longer one) connecting
    /// with no bound, so a checkout against a silent server outlives `connection_timeout`.
    #[test]
    fn the_connect_timeout_is_bounded_by_the_pools() -> TestResult {
        let db = DbName::new("ct")?;
        let pool = DbConfig {
            connection_timeout: Duration::from_secs(2),
            ..DbConfig::default()
        };
        for (url, expected) in [
            ("postgres://h/d", 2),
            ("postgres://h/d?connect_timeout=60", 2),
            ("postgres://h/d?connect_timeout=1", 1),
        ] {
            let target = parse(&db, url, &pool)?;
            assert_eq!(
                target.config.get_connect_timeout(),
                Some(&Duration::from_secs(expected)),
                "{url}"
            );
        }
        Ok(())
    }
}
