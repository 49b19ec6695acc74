//! The PostgreSQL server of `--backend postgres`: the one `--url` names, or a private one
//! (hive-pg-harness) started on first use and stopped when the process ends. Each run makes
//! databases of its own on it, named after the process and the run so that they never
//! hold another run's rows, and drops them afterwards.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hive_db_core::postgres::{Client, NoTls};

/// Where the run's databases are made.
#[derive(Debug, Clone)]
pub(crate) enum Server {
    /// A server the user named: a URL (or `key=value` string) of a database on it whose
    /// user may create databases.
    Given(String),
    /// The private server of this process.
    Private,
}

/// The databases one run made on a server, `ecosystemiser`'s first.
#[derive(Debug)]
pub(crate) struct RunDatabases {
    admin_url: String,
    /// The server's names of the databases, in store order.
    pub(crate) names: Vec<String>,
    /// Their connection strings, in store order.
    pub(crate) urls: Vec<String>,
}

impl Server {
    /// A connection string for a database of the server where the run may create others.
    fn admin_url(&self) -> anyhow::Result<String> {
        match self {
            Server::Given(url) => Ok(url.clone()),
            Server::Private => Ok(hive_pg_harness::server()?.url("postgres")),
        }
    }

    /// Starts the private server if it is the one and not yet running.
    ///
    /// # Errors
    ///
    /// When the server cannot start (its programs missing, say).
    pub(crate) fn start(&self) -> anyhow::Result<()> {
        self.admin_url().map(drop)
    }

    /// Creates `count` empty databases for one run: `ecosystemiser`'s, then the
    /// application databases'.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or refuses to create a database.
    pub(crate) fn create(&self, count: usize) -> anyhow::Result<RunDatabases> {
        static RUN: AtomicU32 = AtomicU32::new(0);
        let admin_url = self.admin_url()?;
        let run = RUN.fetch_add(1, Relaxed);
        let prefix = format!("hive_loadtest_{}_{run}", std::process::id());
        let names: Vec<String> = (0..count)
            .map(|i| match i {
                0 => format!("{prefix}_ecosystemiser"),
                i => format!("{prefix}_app_{i}"),
            })
            .collect();
        let mut admin = connect(&admin_url)?;
        let mut made = RunDatabases {
            urls: Vec::new(),
            names: Vec::new(),
            admin_url: admin_url.clone(),
        };
        // Every URL first: a string that cannot name them fails before anything is made.
        let urls = names
            .iter()
            .map(|name| url_for_db(&admin_url, name))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (name, url) in names.into_iter().zip(urls) {
            // The names are ours (letters, digits, underscores): quoting is for the case.
            if let Err(e) = admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")) {
                // The ones this run made do not outlive a run that could not start.
                let _ = made.drop_all();
                return Err(e).with_context(|| format!("cannot create database {name}"));
            }
            made.urls.push(url);
            made.names.push(name);
        }
        Ok(made)
    }
}

impl RunDatabases {
    /// Sessions the server has open on these databases, other than the asking one's, once
    /// every session that is closing has gone, or after `wait`.
    ///
    /// # Errors
    ///
    /// When the server cannot be asked.
    pub(crate) fn sessions(&self, wait: Duration) -> anyhow::Result<i64> {
        let mut admin = connect(&self.admin_url)?;
        let deadline = Instant::now() + wait;
        loop {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = ANY($1) AND pid <> pg_backend_pid()",
                    &[&self.names],
                )?
                .try_get(0)?;
            // A closed client's server process leaves a moment after its socket closes.
            if n == 0 || Instant::now() >= deadline {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Drops the databases, closing any session still on them.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or refuses.
    pub(crate) fn drop_all(&self) -> anyhow::Result<()> {
        let mut admin = connect(&self.admin_url)?;
        for name in &self.names {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .with_context(|| format!("cannot drop database {name}"))?;
        }
        Ok(())
    }
}

fn connect(url: &str) -> anyhow::Result<Client> {
    Client::connect(url, NoTls).context("cannot connect to the PostgreSQL server")
}

/// `url` with its database replaced by `db`: in a `postgres://` URL, the path; in a
/// `key=value` string, a `dbname` added last (the last of a key wins).
///
/// # Errors
///
/// When `url` is neither.
pub(crate) fn url_for_db(url: &str, db: &str) -> anyhow::Result<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        if url.contains('=') || url.trim().is_empty() {
            return Ok(format!("{url} dbname={db}"));
        }
        bail!("the server's address is neither a postgres:// URL nor key=value pairs");
    };
    if scheme != "postgres" && scheme != "postgresql" {
        bail!("the server's URL has scheme {scheme:?}, not postgres or postgresql");
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query
        .split_once('/')
        .map_or(before_query, |(a, _)| a);
    Ok(match query {
        Some(q) => format!("{scheme}://{authority}/{db}?{q}"),
        None => format!("{scheme}://{authority}/{db}"),
    })
}

#[cfg(test)]
mod tests {
    use super::url_for_db;

    /// Bug caught: the run's databases reached through the wrong database (the URL's own, so
    /// every run shares one and the verifier sees another run's rows), or a URL's options
    /// and credentials lost on the way.
    #[test]
    fn urls_name_the_runs_database() -> anyhow::Result<()> {
        assert_eq!(
            url_for_db("postgres://u:p@h:5433/postgres?sslmode=disable", "x")?,
            "postgres://u:p@h:5433/x?sslmode=disable"
        );
        assert_eq!(url_for_db("postgresql://h", "x")?, "postgresql://h/x");
        assert_eq!(url_for_db("postgres://h:1/", "x")?, "postgres://h:1/x");
        assert_eq!(
            url_for_db("host=h user=u dbname=postgres", "x")?,
            "host=h user=u dbname=postgres dbname=x"
        );
        let parsed: hive_db_core::postgres::Config =
            url_for_db("host=h dbname=postgres", "x")?.parse()?;
        assert_eq!(parsed.get_dbname(), Some("x"));
        assert!(url_for_db("mysql://h/db", "x").is_err());
        assert!(url_for_db("just words", "x").is_err());
        Ok(())
    }
}
