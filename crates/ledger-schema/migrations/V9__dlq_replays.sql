-- Replays of dead letters (`failover dlq replay`): per letter of this region's DLQ topic
-- (partition, offset), the last replay's outcome, who asked and when, and how many
-- times it was tried. A letter whose last outcome is not 'poison' is settled: a replay
-- asked again does nothing (the apply rules would skip the event as a duplicate anyway).
CREATE TABLE IF NOT EXISTS ledger.dlq_replays (
    dlq_partition integer NOT NULL,
    dlq_offset bigint NOT NULL,
    event_id uuid,
    outcome text NOT NULL,
    detail text,
    replayed_by text NOT NULL,
    replayed_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 1,
    PRIMARY KEY (dlq_partition, dlq_offset)
);
