//! Integration tests of hive-db-core's public API, one module per concern.

mod announce;
mod async_limits;
mod asynch;
mod checkpoint;
mod close;
mod concurrency;
mod endpoint;
mod endpoint_idle;
mod errors;
mod group_commit;
mod hygiene;
mod keeper;
mod metrics;
mod model;
mod observability;
mod pg;
mod pg_cluster;
mod pg_roles;
mod session;
mod support;
