-- Delivery: one durable queue per sink (rows of one sink_sid), its dead letters, a bounded
-- log of delivery attempts, and the router's cursor over the events log (in cursors).
-- (No semicolons inside comments: the migration runner splits statements on them.)

-- body is the CloudEvent, compact JSON, exactly as it goes into a request body array.
-- event_id is the CloudEvent id: enqueueing the same event for the same sink again is a no-op.
-- due_at is when the item may next be tried, claimed_until hides an item while a request
-- for it is in flight. enqueued_at starts the retry window.
CREATE TABLE delivery_queue (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_sid   TEXT NOT NULL,
    sink_sid      TEXT NOT NULL REFERENCES sinks(sid) ON DELETE CASCADE,
    event_id      TEXT NOT NULL,
    body          BLOB NOT NULL,
    enqueued_at   REAL NOT NULL,
    due_at        REAL NOT NULL,
    claimed_until REAL NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    UNIQUE (sink_sid, event_id)
);
CREATE INDEX delivery_queue_due ON delivery_queue (sink_sid, due_at, id);

CREATE TABLE delivery_dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_sid TEXT NOT NULL,
    sink_sid    TEXT NOT NULL REFERENCES sinks(sid) ON DELETE CASCADE,
    event_id    TEXT NOT NULL,
    body        BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    dead_at     REAL NOT NULL,
    attempts    INTEGER NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX delivery_dead_letters_by_sink ON delivery_dead_letters (sink_sid, id);

-- One row per request (not per event). status is the HTTP status, NULL when none came back.
CREATE TABLE delivery_attempts (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    sink_sid TEXT NOT NULL REFERENCES sinks(sid) ON DELETE CASCADE,
    time     REAL NOT NULL,
    events   INTEGER NOT NULL,
    ok       INTEGER NOT NULL,
    status   INTEGER,
    error    TEXT
);
CREATE INDEX delivery_attempts_by_sink ON delivery_attempts (sink_sid, id);
