//! The client of a registry's endpoint: `/stats` and `/health` over plain HTTP, each request
//! bounded by one overall timeout.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hive_db_core::{HealthReport, RegistrySnapshot, SNAPSHOT_SCHEMA_VERSION};

/// Largest body read from an endpoint: a snapshot of hundreds of databases fits many times.
const BODY_LIMIT: u64 = 32 * 1024 * 1024;

/// One endpoint, `http://host:port`.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    base: String,
    agent: ureq::Agent,
    timeout: Duration,
}

impl Endpoint {
    /// A client of `base` whose every request ends within `timeout`.
    pub(crate) fn new(base: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Self {
            base: base.to_owned(),
            agent,
            timeout,
        }
    }

    /// `http://host:port`.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// GET `path`: the status and the body.
    fn get(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .agent
            .get(&url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| match e {
                // ureq says only "timeout: global".
                ureq::Error::Timeout(_) => anyhow!(
                    "cannot reach {url}: no answer within {}",
                    crate::fmt::duration(self.timeout)
                ),
                e => anyhow!("cannot reach {url}: {e}"),
            })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| anyhow!("cannot read the answer of {url}: {e}"))?;
        Ok((status, body))
    }

    /// The registry's snapshot from `/stats`.
    ///
    /// # Errors
    ///
    /// The endpoint cannot be reached, or is not a hive-db endpoint (an error status, a body
    /// that is not JSON, JSON without `schema_version`), or speaks another schema version.
    pub(crate) fn stats(&self) -> Result<RegistrySnapshot> {
        let (status, body) = self.get("/stats")?;
        if status != 200 {
            bail!(
                "{} is not a hive-db endpoint: /stats answered HTTP {status}{}",
                self.base,
                reason(&body)
            );
        }
        let value = hive_json(&self.base, "/stats", &body)?;
        match value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
        {
            None => bail!(
                "{} is not a hive-db endpoint: /stats has no schema_version",
                self.base
            ),
            Some(v) if v != u64::from(SNAPSHOT_SCHEMA_VERSION) => bail!(
                "{} serves snapshot schema version {v}; this db-monitor reads version {SNAPSHOT_SCHEMA_VERSION}",
                self.base
            ),
            Some(_) => {}
        }
        serde_json::from_value(value).with_context(|| {
            format!(
                "{} is not a hive-db endpoint: /stats is not a registry snapshot",
                self.base
            )
        })
    }

    /// The registry's health from `/health` (200 healthy or degraded, 503 unhealthy).
    ///
    /// # Errors
    ///
    /// As [`Endpoint::stats`].
    pub(crate) fn health(&self) -> Result<HealthReport> {
        let (status, body) = self.get("/health")?;
        if status != 200 && status != 503 {
            bail!(
                "{} is not a hive-db endpoint: /health answered HTTP {status}{}",
                self.base,
                reason(&body)
            );
        }
        let value = hive_json(&self.base, "/health", &body)?;
        serde_json::from_value(value).with_context(|| {
            format!(
                "{} is not a hive-db endpoint: /health is not a health report",
                self.base
            )
        })
    }
}

fn hive_json(base: &str, path: &str, body: &str) -> Result<serde_json::Value> {
    serde_json::from_str(body)
        .map_err(|_| anyhow!("{base} is not a hive-db endpoint: {path} did not answer JSON"))
}

/// What an error answer says, for the message: `: ` and its body's first line (at most 200
/// characters, control characters escaped), or nothing for an empty body. A hive-db
/// endpoint's 500 says why (a snapshot it could not encode, say).
fn reason(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return String::new();
    }
    let shown: String = line
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect();
    format!(": {shown}")
}
