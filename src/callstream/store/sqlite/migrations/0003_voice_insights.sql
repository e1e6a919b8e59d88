-- Voice Insights read store: indexed call summaries (filled in by the Voice Insights API).
-- One row per call: its latest summary (highest processing_version), with the columns the
-- Summaries list filters and sorts on. The summary itself stays in events, at event_offset.
-- Kept by store/sqlite/insights.py index_events, in the transaction that stores the events.
CREATE TABLE call_summaries (
    account_sid        TEXT NOT NULL,
    call_sid           TEXT NOT NULL,
    processing_version INTEGER NOT NULL,
    processing_state   TEXT NOT NULL,
    event_offset       INTEGER NOT NULL,
    start_key          REAL NOT NULL,
    end_key            REAL NOT NULL,
    call_type          TEXT NOT NULL,
    call_state         TEXT NOT NULL,
    answered_by        TEXT NOT NULL,
    direction          TEXT,
    from_caller        TEXT,
    to_callee          TEXT,
    from_carrier       TEXT,
    to_carrier         TEXT,
    from_country_code  TEXT,
    to_country_code    TEXT,
    verified_caller    INTEGER,
    abnormal_session   INTEGER NOT NULL,
    has_tags           INTEGER NOT NULL,
    PRIMARY KEY (account_sid, call_sid)
);
CREATE INDEX call_summaries_by_start ON call_summaries (account_sid, start_key, call_sid);
CREATE INDEX call_summaries_by_end ON call_summaries (account_sid, end_key, call_sid);
CREATE INDEX call_summaries_by_from ON call_summaries (account_sid, from_caller);
CREATE INDEX call_summaries_by_to ON call_summaries (account_sid, to_callee);
-- The tags of each call's latest summary, for the Tags filter.
CREATE TABLE call_summary_tags (
    account_sid TEXT NOT NULL,
    call_sid    TEXT NOT NULL,
    tag         TEXT NOT NULL,
    PRIMARY KEY (account_sid, call_sid, tag)
) WITHOUT ROWID;
