-- Several regions (ARCHITECTURE.md, "The single-writer rule", "Write path"): leases that
-- start only after the fencing delay, per-account leases for accounts homed here by
-- override (and the accounts of our slots homed elsewhere), and the cross-region
-- transfer saga.

-- A lease row may exist before the region may use it: after gaining a slot by promote
-- the region waits out the fencing delay, and the database refuses writes until then.
ALTER TABLE ledger.slot_leases
    ADD COLUMN valid_from timestamptz NOT NULL DEFAULT '-infinity';

-- Accounts homed here by override, at their own epoch.
CREATE TABLE ledger.account_leases (
    account_id bigint PRIMARY KEY,
    slot       integer GENERATED ALWAYS AS ((account_id >> 48)::integer) STORED,
    epoch      bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    valid_from timestamptz NOT NULL DEFAULT '-infinity'
);
CREATE INDEX account_leases_by_slot ON ledger.account_leases (slot, epoch);

-- Accounts in this region's slots whose home is elsewhere (an override): never written
-- here even though the slot's lease is ours.
CREATE TABLE ledger.accounts_away (
    account_id bigint PRIMARY KEY
);

-- The cross-region transfer saga ------------------------------------------------------
--
--   source home: debit, transfer 'debited'    -> TransferDebited (carries the transfer)
--   destination home, when its applier has applied that event:
--       credit, 'completed'                   -> TransferCredited (carries the transfer)
--    or refuse (unknown, closed, other currency), 'rejected'
--                                             -> TransferRejected (no account seq)
--   source home, when it sees the rejection: refund, 'refunded' -> TransferRefunded
--
-- Each step is one transaction at the home that owns the account it books, under that
-- home's lease, and idempotent by transfer id (one credit and one refund per transfer,
-- enforced by a unique index), so a step repeated after a crash or by a new owner
-- books nothing twice.

ALTER TABLE ledger.transfers DROP CONSTRAINT transfers_state_check;
ALTER TABLE ledger.transfers ADD CONSTRAINT transfers_state_check
    CHECK (state IN ('debited', 'completed', 'rejected', 'refunded'));
ALTER TABLE ledger.transfers ADD COLUMN reason text;
CREATE INDEX transfers_in_flight ON ledger.transfers (created_at)
    WHERE state IN ('debited', 'rejected');

ALTER TABLE ledger.entries DROP CONSTRAINT entries_kind_check;
ALTER TABLE ledger.entries ADD CONSTRAINT entries_kind_check
    CHECK (kind IN ('deposit', 'withdrawal', 'transfer_debit', 'transfer_credit',
                    'transfer_refund'));
CREATE UNIQUE INDEX entries_one_saga_step ON ledger.entries (transfer_id, kind)
    WHERE kind IN ('transfer_credit', 'transfer_refund') AND transfer_id IS NOT NULL;

-- How far behind each origin this region's applier was at its last report (written by
-- the replicator's housekeeping every second), so reads can say how stale a copy is.
CREATE TABLE ledger.replication_lag (
    origin_region text PRIMARY KEY,
    lag_events    bigint NOT NULL,
    lag_seconds   float8 NOT NULL,
    measured_at   timestamptz NOT NULL
);
