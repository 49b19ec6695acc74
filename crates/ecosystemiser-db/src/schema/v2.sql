-- Version 2: the indexes the repositories' queries need beyond the original ones. Histories
-- are read newest first by seq; "latest" specs by insertion order; at most one default spec
-- per component type (duplicates left by earlier code were resolved by the hook before this).

CREATE INDEX IF NOT EXISTS idx_events_simulation_seq ON ecosystemiser_events (simulation_id, seq);
CREATE INDEX IF NOT EXISTS idx_events_analysis_seq ON ecosystemiser_events (analysis_id, seq);
CREATE INDEX IF NOT EXISTS idx_events_optimization_seq
    ON ecosystemiser_events (optimization_id, seq);
CREATE INDEX IF NOT EXISTS idx_events_type_seq ON ecosystemiser_events (event_type, seq);
CREATE INDEX IF NOT EXISTS idx_events_correlation_seq
    ON ecosystemiser_events (correlation_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS idx_component_specs_one_default
    ON component_specs (component_type_id) WHERE is_default = 1;
CREATE INDEX IF NOT EXISTS idx_version_history_spec ON version_history (component_spec_id, id);
