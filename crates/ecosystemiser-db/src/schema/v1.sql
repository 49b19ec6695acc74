-- Version 1: the tables and indexes of the original EcoSystemiser schema, the component
-- library's version history, and one events table for both earlier shapes. Every statement
-- is IF NOT EXISTS, so a database made by the original code is adopted as it is.

CREATE TABLE IF NOT EXISTS simulations (
    simulation_id TEXT PRIMARY KEY,
    system_config_path TEXT NOT NULL,
    solver_type TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    completed_at TIMESTAMP,
    duration_seconds REAL,
    results_path TEXT,
    error_message TEXT,
    metadata JSON
);

CREATE TABLE IF NOT EXISTS simulation_metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    simulation_id TEXT NOT NULL,
    metric_name TEXT NOT NULL,
    metric_value REAL NOT NULL,
    unit TEXT,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (simulation_id) REFERENCES simulations (simulation_id)
);

CREATE INDEX IF NOT EXISTS idx_simulations_status ON simulations (status, created_at);
CREATE INDEX IF NOT EXISTS idx_simulation_metrics_sim
    ON simulation_metrics (simulation_id, metric_name);

CREATE TABLE IF NOT EXISTS studies (
    study_id TEXT PRIMARY KEY,
    study_type TEXT NOT NULL,
    status TEXT NOT NULL,
    total_simulations INTEGER,
    completed_simulations INTEGER DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    completed_at TIMESTAMP,
    duration_seconds REAL,
    results_path TEXT,
    configuration JSON,
    metadata JSON
);

CREATE TABLE IF NOT EXISTS study_simulations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id TEXT NOT NULL,
    simulation_id TEXT NOT NULL,
    parameter_set JSON,
    sequence_number INTEGER,
    FOREIGN KEY (study_id) REFERENCES studies (study_id),
    FOREIGN KEY (simulation_id) REFERENCES simulations (simulation_id)
);

CREATE INDEX IF NOT EXISTS idx_studies_status ON studies (status, created_at);
CREATE INDEX IF NOT EXISTS idx_study_simulations ON study_simulations (study_id, sequence_number);

CREATE TABLE IF NOT EXISTS analysis_runs (
    analysis_id TEXT PRIMARY KEY,
    source_type TEXT NOT NULL,
    source_id TEXT NOT NULL,
    status TEXT NOT NULL,
    strategies_executed JSON,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    completed_at TIMESTAMP,
    duration_seconds REAL,
    results_path TEXT,
    error_message TEXT,
    metadata JSON
);

CREATE TABLE IF NOT EXISTS analysis_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    analysis_id TEXT NOT NULL,
    strategy_name TEXT NOT NULL,
    result_type TEXT NOT NULL,
    result_data JSON NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (analysis_id) REFERENCES analysis_runs (analysis_id)
);

CREATE INDEX IF NOT EXISTS idx_analysis_runs_source ON analysis_runs (source_type, source_id);
CREATE INDEX IF NOT EXISTS idx_analysis_results ON analysis_results (analysis_id, strategy_name);

CREATE TABLE IF NOT EXISTS optimization_runs (
    optimization_id TEXT PRIMARY KEY,
    algorithm_type TEXT NOT NULL,
    objective_function TEXT NOT NULL,
    status TEXT NOT NULL,
    generations_completed INTEGER DEFAULT 0,
    best_fitness REAL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    completed_at TIMESTAMP,
    duration_seconds REAL,
    results_path TEXT,
    configuration JSON,
    metadata JSON
);

CREATE TABLE IF NOT EXISTS optimization_iterations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    optimization_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    individual_id TEXT NOT NULL,
    fitness REAL NOT NULL,
    parameters JSON NOT NULL,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (optimization_id) REFERENCES optimization_runs (optimization_id)
);

CREATE INDEX IF NOT EXISTS idx_optimization_runs_status
    ON optimization_runs (status, created_at);
CREATE INDEX IF NOT EXISTS idx_optimization_iterations
    ON optimization_iterations (optimization_id, generation, fitness);

CREATE TABLE IF NOT EXISTS component_types (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT UNIQUE NOT NULL,
    category TEXT NOT NULL,
    description TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS component_specs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    component_type_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL DEFAULT '1.0.0',
    technical_params JSON NOT NULL,
    economic_params JSON,
    environmental_params JSON,
    metadata JSON,
    is_default BOOLEAN DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (component_type_id) REFERENCES component_types (id),
    UNIQUE (component_type_id, name, version)
);

CREATE INDEX IF NOT EXISTS idx_component_type ON component_specs (component_type_id);
CREATE INDEX IF NOT EXISTS idx_is_default ON component_specs (is_default);

CREATE TABLE IF NOT EXISTS version_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    component_spec_id INTEGER NOT NULL,
    version TEXT NOT NULL,
    change_description TEXT,
    changed_by TEXT,
    changed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (component_spec_id) REFERENCES component_specs (id)
);

-- `seq` is the insertion order, which histories are sorted by (newest first): timestamps
-- written by concurrent publishers need not be in commit order.
CREATE TABLE IF NOT EXISTS ecosystemiser_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    source TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    correlation_id TEXT,
    simulation_id TEXT,
    analysis_id TEXT,
    optimization_id TEXT,
    payload TEXT NOT NULL,
    metadata TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS event_subscriptions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    callback_url TEXT,
    active BOOLEAN DEFAULT 1,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_ecosystemiser_events_type
    ON ecosystemiser_events (event_type, timestamp);
CREATE INDEX IF NOT EXISTS idx_ecosystemiser_events_correlation
    ON ecosystemiser_events (correlation_id);
CREATE INDEX IF NOT EXISTS idx_event_subscriptions ON event_subscriptions (event_type, active);
