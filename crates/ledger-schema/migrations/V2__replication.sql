-- Replication (ARCHITECTURE.md, "Replication"): every event gets its id at the home when it is
-- written, so a replica can tell a redelivered event from a different one with the same
-- (account, seq); and replica rows are applied by ONE call of
-- ledger.apply_events per batch, in the same transaction as the applier's position.
--
-- Replica rows are the same rows the home writes: a region is authoritative for an
-- account exactly when it owns it, so a region that gains ownership continues from its
-- replica without copying anything.

ALTER TABLE ledger.entries
    ADD COLUMN event_id uuid,
    ADD COLUMN applied_at timestamptz;      -- set on replicas only: when the event applied
ALTER TABLE ledger.accounts
    ADD COLUMN opened_event_id uuid;

-- Events waiting for an earlier seq of the same account (a gap). They wait here, not in
-- the consumer, so one missing event holds back only its own account; applying seq N
-- drains N+1 from here in the same transaction.
CREATE TABLE ledger.pending_events (
    account_id    bigint NOT NULL,
    seq           bigint NOT NULL,
    event_id      uuid NOT NULL,
    epoch         bigint NOT NULL,
    origin_region text NOT NULL,
    event         jsonb NOT NULL,
    received_at   timestamptz NOT NULL,
    PRIMARY KEY (account_id, seq, event_id)
);

-- Events from a deposed owner: their seq is taken under a higher epoch (or their epoch
-- is older than the account's last writer), or a higher epoch later took their place.
-- Never applied, never dropped: reconciliation (failover issue) turns them into new
-- entries that reference the original.
CREATE TABLE ledger.late_events (
    event_id      uuid PRIMARY KEY,
    account_id    bigint NOT NULL,
    seq           bigint NOT NULL,
    epoch         bigint NOT NULL,
    origin_region text NOT NULL,
    event_type    text NOT NULL,
    reason        text NOT NULL CHECK (reason IN ('seq_taken', 'stale_epoch', 'superseded')),
    event         jsonb NOT NULL,
    received_at   timestamptz NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
);
CREATE INDEX late_events_pending ON ledger.late_events (received_at) WHERE status = 'pending';

-- Where each applier is in each partition of each origin's topic: the next offset to
-- read. Written in the same transaction as the events it covers, so a crash between the
-- database commit and the broker's offset commit replays nothing.
CREATE TABLE ledger.replication_positions (
    origin_region text NOT NULL,
    topic         text NOT NULL,
    partition     integer NOT NULL,
    next_offset   bigint NOT NULL,
    last_event_at timestamptz,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (origin_region, topic, partition)
);
