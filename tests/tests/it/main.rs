//! Cross-crate and cross-process integration tests.

mod crash;
mod crash_events;
mod crash_harness;
mod cross_process;
mod dashboard;
mod faults;
mod files;
mod hardening;
mod names;
mod swapped;
mod tidy;
mod wal;
