//! `Backend`: the engine a registered database runs on.

/// The engine a database runs on.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backend {
    /// A SQLite file on this host. Snapshots of older versions, which knew no other, read as
    /// this.
    #[default]
    Sqlite,
    /// A PostgreSQL database, registered by URL (cargo feature `postgres`).
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`, as snapshots and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
