-- Claimed items, found without scanning a sink's whole queue (next_due): a deep queue must
-- not make every turn of the sink's worker cost a full scan.
CREATE INDEX delivery_queue_claimed ON delivery_queue (sink_sid, claimed_until);
