//! One event, as published and as read back, with its builders; and which events a history
//! reads.

use serde_json::Value;

use crate::clock;

/// One event, as published and as read back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Unique id. [`Event::new`] makes one; any unique text will do.
    pub event_id: String,
    /// The event's type, dotted by convention (`simulation.completed`).
    pub event_type: String,
    /// Who published it (the original's `source_agent` / `source_component`).
    pub source: String,
    /// When, as text; [`Event::new`] writes RFC 3339 UTC. Kept exactly as given.
    pub timestamp: String,
    /// Ties the events of one workflow together.
    pub correlation_id: Option<String>,
    /// The simulation it is about.
    pub simulation_id: Option<String>,
    /// The analysis run it is about.
    pub analysis_id: Option<String>,
    /// The optimization run it is about.
    pub optimization_id: Option<String>,
    /// The event's data.
    pub payload: Value,
    /// Extra data about the event; `None` is stored as NULL.
    pub metadata: Option<Value>,
}

impl Event {
    /// An event of `event_type` from `source` with `payload`, a new id and the time now.
    pub fn new(event_type: impl Into<String>, source: impl Into<String>, payload: Value) -> Self {
        Self {
            event_id: clock::new_event_id(),
            event_type: event_type.into(),
            source: source.into(),
            timestamp: clock::now_rfc3339(),
            correlation_id: None,
            simulation_id: None,
            analysis_id: None,
            optimization_id: None,
            payload,
            metadata: None,
        }
    }

    /// With `correlation_id`.
    #[must_use]
    pub fn correlated(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// About simulation `id`.
    #[must_use]
    pub fn for_simulation(mut self, id: impl Into<String>) -> Self {
        self.simulation_id = Some(id.into());
        self
    }

    /// About analysis run `id`.
    #[must_use]
    pub fn for_analysis(mut self, id: impl Into<String>) -> Self {
        self.analysis_id = Some(id.into());
        self
    }

    /// About optimization run `id`.
    #[must_use]
    pub fn for_optimization(mut self, id: impl Into<String>) -> Self {
        self.optimization_id = Some(id.into());
        self
    }
}

/// Where the history of [`EventStore::history`](super::EventStore::history) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryOf<'a> {
    /// Events of one simulation.
    Simulation(&'a str),
    /// Events of one analysis run.
    Analysis(&'a str),
    /// Events of one optimization run.
    Optimization(&'a str),
    /// Events of one type.
    Type(&'a str),
    /// Events with one correlation id.
    Correlation(&'a str),
}
