//! The client of a registry's endpoint: `/stats` and `/health` over plain HTTP, each request
//! bounded by one overall timeout.

use std::time::{Duration, Instant};

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
            // Never a proxy from the environment: endpoints are on loopback, and one named by
            // an announcement must be reached there, not through another host.
            .proxy(None)
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

    /// GET `path`: the status and the body. An endpoint at its connection cap answers 503
    /// with `Retry-After` (it evicted this connection to make room): asked again after that
    /// many seconds while the timeout allows, since such an answer says nothing about the
    /// registry.
    fn get(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let deadline = Instant::now() + self.timeout;
        loop {
            // The whole exchange, retries included, within the timeout.
            let left = deadline.saturating_duration_since(Instant::now());
            let mut response = self
                .agent
                .get(&url)
                .header("Accept", "application/json")
                .config()
                .timeout_global(Some(left.max(Duration::from_millis(1))))
                .build()
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
            let retry_after = (status == 503)
                .then(|| response.headers().get("Retry-After"))
                .flatten()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                // At least 100 ms between tries: `Retry-After: 0` must not make a tight loop.
                .map(|s| Duration::from_secs(s.min(60)).max(Duration::from_millis(100)));
            if let Some(wait) = retry_after {
                if wait >= deadline.saturating_duration_since(Instant::now()) {
                    bail!(
                        "{url} is busy: the endpoint is at its connection limit (HTTP 503, \
                         retry after {}) and did not answer within {}",
                        crate::fmt::duration(wait),
                        crate::fmt::duration(self.timeout)
                    );
                }
                std::thread::sleep(wait);
                continue;
            }
            let body = response
                .body_mut()
                .with_config()
                .limit(BODY_LIMIT)
                .read_to_string()
                .map_err(|e| match e {
                    // ureq says only "timeout: global", as for the call above.
                    ureq::Error::Timeout(_) => anyhow!(
                        "cannot read the answer of {url}: not all of it came within {}",
                        crate::fmt::duration(self.timeout)
                    ),
                    e => anyhow!("cannot read the answer of {url}: {e}"),
                })?;
            return Ok((status, body));
        }
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
