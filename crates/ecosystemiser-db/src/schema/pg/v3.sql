-- Version 3 on PostgreSQL: the history indexes, partial as on SQLite (most events carry only
-- one of a simulation, analysis or optimization id), each ending with seq, which a
-- PostgreSQL index does not carry by itself; and correlation histories in seq order.

CREATE INDEX IF NOT EXISTS idx_events_simulation
    ON ecosystemiser_events (simulation_id, seq) WHERE simulation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_events_analysis
    ON ecosystemiser_events (analysis_id, seq) WHERE analysis_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_events_optimization
    ON ecosystemiser_events (optimization_id, seq) WHERE optimization_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_events_correlation_seq
    ON ecosystemiser_events (correlation_id, seq);
