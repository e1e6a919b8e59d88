-- Accounts, the telemetry log, the engine's per-call state and timers, the events log.
CREATE TABLE accounts (
    sid           TEXT PRIMARY KEY,
    auth_token    TEXT NOT NULL,
    friendly_name TEXT NOT NULL,
    date_created  REAL NOT NULL
);
CREATE TABLE api_keys (
    sid           TEXT PRIMARY KEY,
    account_sid   TEXT NOT NULL REFERENCES accounts(sid),
    secret        TEXT NOT NULL,
    friendly_name TEXT NOT NULL,
    date_created  REAL NOT NULL
);
CREATE TABLE telemetry (
    offset      INTEGER PRIMARY KEY AUTOINCREMENT,
    partition   INTEGER NOT NULL,
    account_sid TEXT NOT NULL,
    received_at REAL NOT NULL,
    records     INTEGER NOT NULL,
    body        BLOB NOT NULL
);
CREATE INDEX telemetry_by_partition ON telemetry (partition, offset);
CREATE TABLE cursors (
    consumer  TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset    INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
);
CREATE TABLE calls (
    account_sid TEXT NOT NULL,
    call_sid    TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    state       BLOB NOT NULL,
    seen        BLOB NOT NULL,
    PRIMARY KEY (account_sid, call_sid)
);
CREATE TABLE timers (
    account_sid TEXT NOT NULL,
    call_sid    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    due_at      REAL NOT NULL,
    PRIMARY KEY (account_sid, call_sid, kind)
);
CREATE INDEX timers_due ON timers (partition, due_at);
CREATE TABLE events (
    offset      INTEGER PRIMARY KEY AUTOINCREMENT,
    account_sid TEXT NOT NULL,
    call_sid    TEXT NOT NULL,
    type        TEXT NOT NULL,
    identity    TEXT NOT NULL,
    time        REAL NOT NULL,
    body        BLOB NOT NULL,
    UNIQUE (account_sid, call_sid, type, identity)
);
CREATE INDEX events_by_call ON events (account_sid, call_sid, offset);
CREATE INDEX events_by_account ON events (account_sid, offset);
