-- Money movement is exactly-once across failover (issue 13): a transfer's identity
-- comes from its Idempotency-Key, every region learns every transfer, the saga is
-- driven by what the ledger holds, and late events reach the account's current owner.

CREATE INDEX entries_by_transfer ON ledger.entries (transfer_id) WHERE transfer_id IS NOT NULL;

-- Late-event handoff: a region holding a pending late event of an account it does not
-- own sends it to the current owner (the node's `late-handoff` task), which stores it
-- and decides it like any other; the owner's LateEventSettled then settles every copy.
-- Without this, an event that reached only a non-owner stayed pending for ever (and
-- blocked failback readiness).
ALTER TABLE ledger.late_events
    ADD COLUMN handed_to text,
    ADD COLUMN handed_at timestamptz;
