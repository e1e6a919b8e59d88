-- Delivery operations: per-sink counters and health that survive restarts, the duration of
-- each attempt, and an index to replay dead letters by the time they died.
-- (No semicolons inside comments: the migration runner splits statements on them.)

-- One row per sink that has had any delivery activity. Counters count events, not requests:
-- delivered (acknowledged by the sink), failed (carried by a failed request), retried
-- (rescheduled after a failure), dead_lettered (given up on).
-- consecutive_failures counts failed requests since the last one that delivered anything.
-- throttled_rate is the send rate cap (events/s) set at the last error, NULL when the sink
-- was not throttled then. The current cap is derived from it and last_error_at (the ramp
-- back after a quiet period is a function of time, so it needs no writes).
CREATE TABLE delivery_sink_stats (
    sink_sid             TEXT PRIMARY KEY REFERENCES sinks(sid) ON DELETE CASCADE,
    delivered            INTEGER NOT NULL DEFAULT 0,
    failed               INTEGER NOT NULL DEFAULT 0,
    retried              INTEGER NOT NULL DEFAULT 0,
    dead_lettered        INTEGER NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT,
    last_error_at        REAL,
    last_success_at      REAL,
    throttled_rate       REAL
);

ALTER TABLE delivery_attempts ADD COLUMN duration_ms REAL NOT NULL DEFAULT 0;

CREATE INDEX delivery_dead_letters_by_time ON delivery_dead_letters (sink_sid, dead_at);
CREATE INDEX delivery_queue_by_age ON delivery_queue (sink_sid, enqueued_at);
