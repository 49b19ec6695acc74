//! One private server for tests and benchmarks, and the one a process shares.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use postgres::Client;

use crate::node::Node;
use crate::process::{Lifeline, temp_folder};
use crate::skip::installed;

/// A private PostgreSQL 15 server: `initdb` in a temporary folder, the postmaster on a free
/// loopback port with its socket inside that folder, trust authentication, run as the
/// `postgres` user when this process is root. Tuned for tests, not durability (`fsync`,
/// `synchronous_commit` and `full_page_writes` off). Stopped, and its folder removed, when it
/// is dropped or this process exits.
#[derive(Debug)]
pub struct Server {
    node: Node,
    // Dropped after `node` (which halts its postmaster): removes the folder.
    _lifeline: Lifeline,
}

impl Server {
    /// Starts a server in a new temporary folder.
    ///
    /// # Errors
    ///
    /// The server's programs are missing, `initdb` failed, or the server did not accept
    /// connections within 60 s.
    pub fn start() -> anyhow::Result<Self> {
        installed()?;
        let dir = temp_folder()?;
        let data = dir.join("data");
        let lifeline = Lifeline::start(&dir, &[&data])?;
        let node = Node::init(
            &dir,
            "data",
            &[
                "synchronous_commit = off",
                "full_page_writes = off",
                "max_connections = 200",
            ],
        )?;
        node.start()?;
        Ok(Self {
            node,
            _lifeline: lifeline,
        })
    }

    /// The server's loopback port.
    pub fn port(&self) -> u16 {
        self.node.port()
    }

    /// The server, to stop, restart or kill it.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The URL of database `db` on this server, as the superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        self.node.url(db)
    }

    /// A client of the `postgres` database, as the superuser.
    ///
    /// # Errors
    ///
    /// The server does not accept connections within 5 s.
    pub fn admin(&self) -> anyhow::Result<Client> {
        self.node.admin()
    }

    /// A new, empty database of its own (for one test); its URL.
    ///
    /// # Errors
    ///
    /// The server is unreachable, or refused the `CREATE DATABASE`.
    pub fn fresh_db(&self) -> anyhow::Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("t_{}", NEXT.fetch_add(1, Relaxed));
        self.admin()?
            .batch_execute(&format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }
}

/// The process's shared server, started on first use; its lifeline stops it when the
/// process exits.
///
/// # Errors
///
/// The first start failed (every later call reports the same failure).
pub fn server() -> anyhow::Result<&'static Server> {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| Server::start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}
