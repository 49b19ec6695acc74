//! Integration tests of ecosystemiser-db: one binary, one module per concern.

#[cfg(feature = "async")]
mod asynch;
mod common;
mod components;
mod concurrency;
mod direct;
mod eco_move;
#[cfg(feature = "async")]
#[path = "../../examples/eco_service.rs"]
mod eco_service;
mod events;
mod hostile_yaml;
mod legacy;
mod parity;
mod pg_schema;
mod runs;
mod schema;
#[cfg(feature = "async")]
mod service;
mod tidy;
