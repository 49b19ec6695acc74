-- Version 2 on PostgreSQL: the indexes the repositories' queries need beyond the original
-- ones, and at most one default spec per component type.

CREATE INDEX IF NOT EXISTS idx_events_type_seq ON ecosystemiser_events (event_type, seq);
CREATE UNIQUE INDEX IF NOT EXISTS idx_component_specs_one_default
    ON component_specs (component_type_id) WHERE is_default;
CREATE INDEX IF NOT EXISTS idx_version_history_spec ON version_history (component_spec_id, id);
