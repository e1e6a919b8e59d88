-- Event Streams control plane: sinks, subscriptions, subscribed events (filled in by the Event Streams API).
-- (No semicolons inside comments: the migration runner splits statements on them.)

-- configuration is the sink_configuration JSON object. test_id is the latest Sink Test's id.
CREATE TABLE sinks (
    sid           TEXT PRIMARY KEY,
    account_sid   TEXT NOT NULL REFERENCES accounts(sid),
    description   TEXT NOT NULL,
    sink_type     TEXT NOT NULL,
    configuration TEXT NOT NULL,
    status        TEXT NOT NULL,
    test_id       TEXT,
    date_created  REAL NOT NULL,
    date_updated  REAL NOT NULL
);
CREATE INDEX sinks_by_account ON sinks (account_sid, date_created, sid);

-- sink_sid is UNIQUE: a sink carries at most one subscription (docs/decisions/0005).
CREATE TABLE subscriptions (
    sid          TEXT PRIMARY KEY,
    account_sid  TEXT NOT NULL REFERENCES accounts(sid),
    sink_sid     TEXT NOT NULL UNIQUE REFERENCES sinks(sid),
    description  TEXT NOT NULL,
    date_created REAL NOT NULL,
    date_updated REAL NOT NULL
);
CREATE INDEX subscriptions_by_account ON subscriptions (account_sid, date_created, sid);

CREATE TABLE subscribed_types (
    subscription_sid TEXT NOT NULL REFERENCES subscriptions(sid) ON DELETE CASCADE,
    type             TEXT NOT NULL,
    schema_version   INTEGER NOT NULL,
    PRIMARY KEY (subscription_sid, type)
);

-- Events waiting for the delivery worker that do not come from the events log (the Sink Test
-- event). body is the canonical event, msgpack. Deleting a sink drops what it had queued.
CREATE TABLE sink_outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_sid    TEXT NOT NULL,
    sink_sid       TEXT NOT NULL REFERENCES sinks(sid) ON DELETE CASCADE,
    type           TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    body           BLOB NOT NULL,
    created_at     REAL NOT NULL
);
CREATE INDEX sink_outbox_by_sink ON sink_outbox (sink_sid, id);

-- Grows with every change to an account's sinks, subscriptions or their types, so the router
-- can notice a change with one primary-key read.
CREATE TABLE control_versions (
    account_sid TEXT PRIMARY KEY,
    version     INTEGER NOT NULL
);
