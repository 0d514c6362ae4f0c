-- Applying other regions' events to this region's replica rows (ARCHITECTURE.md,
-- "Replication", the apply rules). The applier calls ledger.apply_events ONCE per batch,
-- inside the transaction that also moves its position, so a batch is applied whole or
-- not at all and a redelivered batch changes nothing.
--
-- An event arrives as the applier's flattened form of the envelope:
--   {"id", "type", "account" (bigint), "seq", "epoch", "origin", "time", "data", "event"}
-- where "data" is the home's entry (or, for AccountOpened, account) JSON and "event" the
-- whole envelope as received, kept verbatim for late and pending events.
--
-- Rules, per account:
--   seq = replica.seq + 1, epoch >= replica.epoch    apply (then drain waiting events)
--   same (account, seq) with the same event id        duplicate, skipped
--   seq taken by an equal or higher epoch             late (seq_taken), kept for reconciliation
--   seq next but epoch below the row's last writer    late (stale_epoch)
--   seq taken by a LOWER epoch                        the stored tail from that seq came
--                                                     from a deposed owner: it moves to
--                                                     late (superseded), the event applies
--   seq beyond replica.seq + 1, or no row yet         waits in pending_events (a gap)

CREATE TYPE ledger.apply_outcome AS (
    event_id   uuid,
    origin     text,
    outcome    text,     -- applied | duplicate | late | pending | superseded | poison
    detail     text,
    event_time timestamptz,
    released   jsonb     -- the stored envelope, for an event released from waiting
);
