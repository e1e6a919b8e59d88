-- Delivery bookkeeping of the distributed backend. The per-sink queues themselves live in
-- JetStream (stream CS_DELIVERY, store/nats/delivery.py): here are the router's cursor, the
-- per-sink counters and health, the bounded attempt log, the dead letters, and the failed
-- attempts of items waiting for a retry. Rows of a deleted sink go with it (ON DELETE CASCADE).

-- The router's position in the events log, written after the items it routed (cursor last).
CREATE TABLE delivery_cursors (
    consumer text COLLATE "C" PRIMARY KEY,
    position bigint NOT NULL
);

-- Counters count events, not requests (as the embedded store's delivery_sink_stats).
CREATE TABLE delivery_sink_stats (
    sink_sid             text COLLATE "C" PRIMARY KEY REFERENCES sinks (sid) ON DELETE CASCADE,
    delivered            bigint NOT NULL DEFAULT 0,
    failed               bigint NOT NULL DEFAULT 0,
    retried              bigint NOT NULL DEFAULT 0,
    dead_lettered        bigint NOT NULL DEFAULT 0,
    consecutive_failures bigint NOT NULL DEFAULT 0,
    last_error           text,
    last_error_at        double precision,
    last_success_at      double precision,
    throttled_rate       double precision
);

-- One row per request; the latest N per sink are kept.
CREATE TABLE delivery_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sink_sid    text COLLATE "C" NOT NULL REFERENCES sinks (sid) ON DELETE CASCADE,
    time        double precision NOT NULL,
    events      integer NOT NULL,
    ok          boolean NOT NULL,
    status      integer,
    error       text,
    duration_ms double precision NOT NULL DEFAULT 0
);
CREATE INDEX delivery_attempts_by_sink ON delivery_attempts (sink_sid, id);

-- id orders the dead letters by when they died (the paging position). An event is dead at
-- most once per sink: settling the same item twice (a crash between this commit and the
-- JetStream term) stores it once.
CREATE TABLE delivery_dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_sid text COLLATE "C" NOT NULL,
    sink_sid    text COLLATE "C" NOT NULL REFERENCES sinks (sid) ON DELETE CASCADE,
    event_id    text COLLATE "C" NOT NULL,
    body        bytea NOT NULL,
    enqueued_at double precision NOT NULL,
    dead_at     double precision NOT NULL,
    attempts    integer NOT NULL,
    reason      text NOT NULL,
    UNIQUE (sink_sid, event_id)
);
CREATE INDEX delivery_dead_letters_by_sink ON delivery_dead_letters (sink_sid, id);
CREATE INDEX delivery_dead_letters_by_time ON delivery_dead_letters (sink_sid, dead_at);

-- Failed attempts of queued items (JetStream's delivery count also counts lease expiries and
-- restarts, so it is not the failed-attempt count). A row exists only while the item waits
-- for a retry: acking or burying the item deletes it.
CREATE TABLE delivery_retries (
    sink_sid   text COLLATE "C" NOT NULL REFERENCES sinks (sid) ON DELETE CASCADE,
    event_id   text COLLATE "C" NOT NULL,
    attempts   integer NOT NULL,
    last_error text,
    PRIMARY KEY (sink_sid, event_id)
);
