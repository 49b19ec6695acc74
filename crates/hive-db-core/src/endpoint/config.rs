//! How the endpoint listens ([`EndpointConfig`], its limits and checks) and why it could
//! not start ([`EndpointError`]).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Largest accepted value of each timeout in [`EndpointConfig`].
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Largest accepted [`EndpointConfig::threads`].
const MAX_THREADS: usize = 64;
/// Largest accepted [`EndpointConfig::max_connections`].
const MAX_CONNECTIONS: usize = 4096;

/// How [`serve`](super::serve) listens. Every field has a safe default; change them with
/// struct update syntax:
/// `EndpointConfig { addr: "127.0.0.1:9187".parse()?, ..EndpointConfig::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Address to listen on. Default `127.0.0.1:0`: loopback, on a port the system picks
    /// ([`Endpoint::addr`](super::Endpoint::addr) tells which). An address that is not
    /// loopback is refused unless [`allow_non_loopback`](Self::allow_non_loopback) is set.
    pub addr: SocketAddr,
    /// Listen on an address other hosts can reach (`0.0.0.0`, a LAN address). Default
    /// `false`. The endpoint has no authentication; open it only behind a firewall or proxy.
    pub allow_non_loopback: bool,
    /// Worker threads that build answers (a snapshot, its JSON, a health check), besides the
    /// one thread that accepts, reads and writes every connection. Default 2, at most 64.
    /// One health check runs at a time, so with two or more a slow check never holds up
    /// `/metrics`; with one, `/metrics` and `/stats` wait behind it.
    pub threads: usize,
    /// Connections open at once: waiting for their request, being answered or written to.
    /// Each costs a file descriptor and at most [`MAX_REQUEST_HEAD`](super::MAX_REQUEST_HEAD)
    /// bytes, not a thread. When one more arrives, the oldest connection that has sent
    /// nothing yet is answered `503` and closed to make room (if every one has sent
    /// something, the oldest still sending its request head); when every one is being
    /// answered, the new one is answered `503` and closed. Default 32, from 1 to 4096.
    pub max_connections: usize,
    /// Time a client has to send its whole request head once connected; then it gets `408`.
    /// Default 5 s, at most 1 h.
    pub request_timeout: Duration,
    /// Time a client has to take the whole response; then the connection is dropped.
    /// Default 5 s, at most 1 h.
    pub write_timeout: Duration,
    /// Timeout of the health check behind `/health`
    /// ([`Registry::health`](crate::Registry::health)). Default 1 s, at most 1 h.
    pub health_timeout: Duration,
    /// How long one health check's result answers `/health` before a new one runs, so that
    /// scrapes cannot load the writer lane. Default 1 s, at most 1 h; zero checks on every
    /// request (one at a time).
    pub health_cache: Duration,
    /// Show database file paths. Default `false`: `/stats` sends every `path` empty and
    /// `/health` replaces paths in its error messages with `<path>`. `/metrics` never shows
    /// them.
    pub expose_paths: bool,
    /// Where the endpoint announces itself so that `db-monitor` finds it without being told
    /// its address. Default [`Announce::RuntimeFolder`].
    pub announce: Announce,
}

/// Where [`serve`](super::serve) announces the endpoint: a file of `0600` naming this
/// process and the address, in a folder of `0700` (see
/// [`discovery`](crate::discovery)), removed when the endpoint stops. An announcement that
/// cannot be written is logged as a warning; the endpoint serves anyway.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Announce {
    /// Do not announce: only those told the address find the endpoint.
    Off,
    /// In this user's folder, [`discovery::folder`](crate::discovery::folder): where
    /// `db-monitor` looks.
    #[default]
    RuntimeFolder,
    /// In this folder, created if missing (its parent must exist), under the same rules.
    Folder(PathBuf),
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_non_loopback: false,
            threads: 2,
            max_connections: 32,
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            health_timeout: Duration::from_secs(1),
            health_cache: Duration::from_secs(1),
            expose_paths: false,
            announce: Announce::RuntimeFolder,
        }
    }
}

impl EndpointConfig {
    pub(super) fn validate(&self) -> Result<(), EndpointError> {
        let invalid = |field: &'static str, reason: String| {
            Err(EndpointError::InvalidConfig { field, reason })
        };
        if self.threads == 0 || self.threads > MAX_THREADS {
            return invalid("threads", format!("must be from 1 to {MAX_THREADS}"));
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return invalid(
                "max_connections",
                format!("must be from 1 to {MAX_CONNECTIONS}"),
            );
        }
        for (field, value, zero_ok) in [
            ("request_timeout", self.request_timeout, false),
            ("write_timeout", self.write_timeout, false),
            ("health_timeout", self.health_timeout, false),
            ("health_cache", self.health_cache, true),
        ] {
            if (value.is_zero() && !zero_ok) || value > MAX_TIMEOUT {
                let low = if zero_ok { "" } else { "above zero and " };
                return invalid(field, format!("must be {low}at most {MAX_TIMEOUT:?}"));
            }
        }
        if !self.addr.ip().is_loopback() && !self.allow_non_loopback {
            return Err(EndpointError::NotLoopback { addr: self.addr });
        }
        Ok(())
    }
}

/// Why [`serve`](super::serve) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The address is not loopback and [`EndpointConfig::allow_non_loopback`] is off.
    #[error(
        "refusing to serve on {addr}: not a loopback address (set allow_non_loopback to open it)"
    )]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// A configuration value the endpoint cannot run with.
    #[error("invalid endpoint configuration: {field} {reason}")]
    InvalidConfig {
        /// The field of [`EndpointConfig`].
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The address could not be bound (in use, not local, not permitted).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The operating system refused the poller (epoll) that watches the sockets.
    #[error("cannot set up polling for the endpoint's sockets")]
    Poll {
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The operating system refused a thread.
    #[error("cannot start an endpoint thread")]
    Spawn {
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug caught: a zero, huge or non-loopback setting accepted and failing later (a
    /// deadline overflow panics; zero threads serve nothing).
    #[test]
    fn config_extremes_are_refused_naming_the_field() {
        let field = |c: EndpointConfig| match c.validate() {
            Err(EndpointError::InvalidConfig { field, .. }) => Some(field),
            _ => None,
        };
        let d = EndpointConfig::default;
        assert!(d().validate().is_ok());
        assert_eq!(field(EndpointConfig { threads: 0, ..d() }), Some("threads"));
        let huge = EndpointConfig {
            max_connections: usize::MAX,
            ..d()
        };
        assert_eq!(field(huge), Some("max_connections"));
        let forever = EndpointConfig {
            request_timeout: Duration::MAX,
            ..d()
        };
        assert_eq!(field(forever), Some("request_timeout"));
        let zero = EndpointConfig {
            write_timeout: Duration::ZERO,
            ..d()
        };
        assert_eq!(field(zero), Some("write_timeout"));
        let no_cache = EndpointConfig {
            health_cache: Duration::ZERO,
            ..d()
        };
        assert!(no_cache.validate().is_ok());
        let open = EndpointConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            ..d()
        };
        assert!(matches!(
            open.validate(),
            Err(EndpointError::NotLoopback { .. })
        ));
        let opted_in = EndpointConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            allow_non_loopback: true,
            ..d()
        };
        assert!(opted_in.validate().is_ok());
        let v6 = EndpointConfig {
            addr: "[::1]:0".parse().expect("address"),
            ..d()
        };
        assert!(v6.validate().is_ok());
    }
}
