//! Tests of the harness itself against real servers: one server, and a cluster's
//! replication, replay pause and failover. Each is skipped where PostgreSQL 15 is missing.

mod cluster;
mod server;
