//! The async API (cargo feature `async`): futures for reads and writes that run on the
//! database's own threads, on any executor, with no runtime of their own. See
//! docs/ARCHITECTURE.md, "How a future reaches a connection and back".

mod call;
mod handle;
mod oneshot;
mod readers;
mod side;
mod writer;

pub use handle::AsyncHandle;
pub use oneshot::DbFuture;
pub use side::AsyncConfig;
pub(crate) use side::AsyncDb;
