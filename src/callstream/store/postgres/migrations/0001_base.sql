-- The distributed backend's PostgreSQL tables: accounts, the Event Streams control plane, and
-- the Voice Insights read store (a copy of the events log, indexed for the read API).
-- Never edit a released migration: add 0002_... instead. Each file runs in one transaction.
-- Identifiers use COLLATE "C" so keyset paging orders them bytewise, whatever the database's
-- default collation (SID ties and type order then match the embedded backend exactly).

CREATE TABLE accounts (
    sid           text COLLATE "C" PRIMARY KEY,
    auth_token    text NOT NULL,
    friendly_name text NOT NULL,
    date_created  double precision NOT NULL
);

CREATE TABLE api_keys (
    sid           text COLLATE "C" PRIMARY KEY,
    account_sid   text COLLATE "C" NOT NULL REFERENCES accounts (sid),
    secret        text NOT NULL,
    friendly_name text NOT NULL,
    date_created  double precision NOT NULL
);

-- configuration is the sink_configuration JSON object as given (json, not jsonb: key order
-- is kept). test_id is the latest Sink Test's id.
CREATE TABLE sinks (
    sid           text COLLATE "C" PRIMARY KEY,
    account_sid   text COLLATE "C" NOT NULL REFERENCES accounts (sid),
    description   text NOT NULL,
    sink_type     text NOT NULL,
    configuration json NOT NULL,
    status        text NOT NULL,
    test_id       text,
    date_created  double precision NOT NULL,
    date_updated  double precision NOT NULL
);
CREATE INDEX sinks_by_account ON sinks (account_sid, date_created, sid);

-- sink_sid is UNIQUE: a sink carries at most one subscription (docs/decisions/0005).
CREATE TABLE subscriptions (
    sid          text COLLATE "C" PRIMARY KEY,
    account_sid  text COLLATE "C" NOT NULL REFERENCES accounts (sid),
    sink_sid     text COLLATE "C" NOT NULL UNIQUE REFERENCES sinks (sid),
    description  text NOT NULL,
    date_created double precision NOT NULL,
    date_updated double precision NOT NULL
);
CREATE INDEX subscriptions_by_account ON subscriptions (account_sid, date_created, sid);

CREATE TABLE subscribed_types (
    subscription_sid text COLLATE "C" NOT NULL REFERENCES subscriptions (sid) ON DELETE CASCADE,
    type             text COLLATE "C" NOT NULL,
    schema_version   integer NOT NULL,
    PRIMARY KEY (subscription_sid, type)
);

-- Events waiting for the delivery worker that do not come from the events log (the Sink Test
-- event). body is the canonical event, msgpack. Deleting a sink drops what it had queued.
CREATE TABLE sink_outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_sid    text COLLATE "C" NOT NULL,
    sink_sid       text COLLATE "C" NOT NULL REFERENCES sinks (sid) ON DELETE CASCADE,
    type           text NOT NULL,
    schema_version integer NOT NULL,
    body           bytea NOT NULL,
    created_at     double precision NOT NULL
);
CREATE INDEX sink_outbox_by_sink ON sink_outbox (sink_sid, id);

-- Grows with every change to an account's sinks, subscriptions or their types, so the router
-- can notice a change with one primary-key read.
CREATE TABLE control_versions (
    account_sid text COLLATE "C" PRIMARY KEY,
    version     bigint NOT NULL
);

-- The Voice Insights read store. The events log itself lives in JetStream: the indexer
-- consumer copies each insight event here once (the UNIQUE key is the events log's own
-- identity of an event). seq orders events by arrival, as the log's offset does.
CREATE TABLE insight_events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_sid text COLLATE "C" NOT NULL,
    call_sid    text COLLATE "C" NOT NULL,
    type        text COLLATE "C" NOT NULL,
    identity    text COLLATE "C" NOT NULL,
    time        double precision NOT NULL,
    body        bytea NOT NULL,
    UNIQUE (account_sid, call_sid, type, identity)
);
CREATE INDEX insight_events_by_call ON insight_events (account_sid, call_sid, time, seq);

-- One row per call: its latest summary (highest processing_version), with the columns the
-- Summaries list filters and sorts on. The summary itself is in insight_events at event_seq.
CREATE TABLE call_summaries (
    account_sid        text COLLATE "C" NOT NULL,
    call_sid           text COLLATE "C" NOT NULL,
    processing_version integer NOT NULL,
    processing_state   text NOT NULL,
    event_seq          bigint NOT NULL REFERENCES insight_events (seq),
    start_key          double precision NOT NULL,
    end_key            double precision NOT NULL,
    call_type          text NOT NULL,
    call_state         text NOT NULL,
    answered_by        text NOT NULL,
    direction          text,
    from_caller        text,
    to_callee          text,
    from_carrier       text,
    to_carrier         text,
    from_country_code  text,
    to_country_code    text,
    verified_caller    boolean,
    abnormal_session   boolean NOT NULL,
    has_tags           boolean NOT NULL,
    PRIMARY KEY (account_sid, call_sid)
);
CREATE INDEX call_summaries_by_start ON call_summaries (account_sid, start_key, call_sid);
CREATE INDEX call_summaries_by_end ON call_summaries (account_sid, end_key, call_sid);
CREATE INDEX call_summaries_by_from ON call_summaries (account_sid, from_caller);
CREATE INDEX call_summaries_by_to ON call_summaries (account_sid, to_callee);

-- The tags of each call's latest summary, for the Tags filter.
CREATE TABLE call_summary_tags (
    account_sid text COLLATE "C" NOT NULL,
    call_sid    text COLLATE "C" NOT NULL,
    tag         text NOT NULL,
    PRIMARY KEY (account_sid, call_sid, tag)
);

-- Calls that have insight events and (as far as the indexer has seen) no summary yet: the
-- active calls list. A row goes when the call's first summary is indexed, so the table holds
-- only live calls, not every call ever seen. first/last are by arrival (seq), as in the log.
CREATE TABLE call_activity (
    account_sid     text COLLATE "C" NOT NULL,
    call_sid        text COLLATE "C" NOT NULL,
    first_time      double precision NOT NULL,
    last_time       double precision NOT NULL,
    last_seq        bigint NOT NULL,
    PRIMARY KEY (account_sid, call_sid)
);
CREATE INDEX call_activity_by_recency ON call_activity (account_sid, last_seq);
