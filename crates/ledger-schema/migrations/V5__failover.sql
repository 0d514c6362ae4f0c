-- Failover (ARCHITECTURE.md, "Failover"): what a switchover compares, how a retried request is
-- recognised in any region, and reconciliation of late events at the current owner.

CREATE INDEX entries_by_txn ON ledger.entries (txn_id);

-- Reconciliation entries name the late event they replay; a withdrawal replayed into an
-- overdraft is flagged for review. One replay per late event, whichever region made it.
ALTER TABLE ledger.entries
    ADD COLUMN reconciles uuid,
    ADD COLUMN review boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX entries_one_replay ON ledger.entries (reconciles)
    WHERE reconciles IS NOT NULL;

-- Late events: pending (awaiting the account's current owner), replayed, flagged
-- (replayed into an overdraft; an SRE acknowledges it), duplicate (recorded, skipped),
-- acknowledged, or replayed_elsewhere (the owner's replay reached this region).
ALTER TABLE ledger.late_events
    ADD COLUMN detail         text,
    ADD COLUMN resolved_at    timestamptz,
    ADD COLUMN resolved_by    text,
    ADD COLUMN reconciled_seq bigint;
ALTER TABLE ledger.late_events ADD CONSTRAINT late_events_status_check
    CHECK (status IN ('pending', 'replayed', 'flagged', 'duplicate', 'acknowledged',
                      'replayed_elsewhere'));

-- The owners' decisions on late events, as announced (LateEventSettled): a decision can
-- reach a region before the late event itself does (they travel on different topics).
CREATE TABLE ledger.settled_late (
    event_id       uuid PRIMARY KEY,
    status         text NOT NULL,
    detail         text,
    resolved_by    text NOT NULL,
    reconciled_seq bigint,
    settled_at     timestamptz NOT NULL
);
