//! The status of a run and a change of it, shared by every kind of run.

/// The status of a simulation, study, analysis or optimization run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Created, not started.
    Pending,
    /// Started.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped before it finished.
    Cancelled,
}

impl RunStatus {
    /// The text stored in the `status` columns.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// True for the statuses a run ends in (`completed_at` is set then).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status change of a run. `None` fields keep their stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The new status; a final one also sets `completed_at`.
    pub status: RunStatus,
    /// How long the run took.
    pub duration_seconds: Option<f64>,
    /// Where its results are.
    pub results_path: Option<String>,
    /// Why it failed; stored for every kind of run.
    pub error_message: Option<String>,
}

impl StatusUpdate {
    /// A change to `status` and nothing else.
    pub fn to(status: RunStatus) -> Self {
        Self {
            status,
            duration_seconds: None,
            results_path: None,
            error_message: None,
        }
    }
}
