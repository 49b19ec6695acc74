//! Cross-crate and cross-process integration tests.

mod cross_process;
mod tidy;
