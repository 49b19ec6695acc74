-- Version 3: smaller event indexes, so a publish writes fewer pages.
--
-- seq is the rowid, and every index ends with the rowid, so an index on (x) already keeps
-- x's events in seq order: (correlation_id, seq) repeated the original (correlation_id)
-- index entry for entry. Most events carry only one of a simulation, analysis or
-- optimization id; partial indexes leave the NULLs out (a query `x = ?` implies
-- `x IS NOT NULL`, so SQLite still uses them for every history query).
--
-- The hook (`v3` in mod.rs) has dropped version 2's (x, seq) indexes first, each only when it
-- is the index version 2 made: one of the same name made otherwise is someone's own.

CREATE INDEX IF NOT EXISTS idx_events_simulation
    ON ecosystemiser_events (simulation_id) WHERE simulation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_events_analysis
    ON ecosystemiser_events (analysis_id) WHERE analysis_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_events_optimization
    ON ecosystemiser_events (optimization_id) WHERE optimization_id IS NOT NULL;
