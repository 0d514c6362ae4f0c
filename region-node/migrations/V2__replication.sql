-- Replication (DESIGN.md, "Replication"): every event gets its id at the home when it is
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

-- No NOTIFY here on purpose: a transaction that notifies takes a database-wide lock in
-- its pre-commit and holds it through its WAL flush, so every writing transaction would
-- commit one at a time (measured: the node fell from ~5,000 to under 1,000 writes/s with
-- 503s from pool waits). The node instead sends `pg_notify('ledger_outbox', '')` from a
-- task of its own after writes commit, coalescing bursts into one notification; the
-- relay also polls, so a lost notification only costs its poll interval.

-- book() and create_account() as in V1, with the event id chosen once and written both
-- to the outbox and to the row it describes.
CREATE OR REPLACE FUNCTION ledger.book(
    acct ledger.accounts, p_delta numeric, p_kind text, p_event_type text, p_txn uuid,
    p_reference text, p_transfer uuid, p_epoch bigint, p_region text, p_traceparent text,
    p_at timestamptz
) RETURNS ledger.entries LANGUAGE plpgsql AS $$
DECLARE
    entry ledger.entries;
    event uuid := gen_random_uuid();
BEGIN
    UPDATE ledger.accounts
    SET balance = balance + p_delta, seq = seq + 1, epoch = p_epoch, updated_at = p_at
    WHERE id = acct.id
    RETURNING * INTO acct;
    INSERT INTO ledger.entries (account_id, seq, epoch, kind, amount, balance, currency,
                                txn_id, reference, transfer_id, origin_region, created_at,
                                event_id)
    VALUES (acct.id, acct.seq, p_epoch, p_kind, p_delta, acct.balance, acct.currency,
            p_txn, p_reference, p_transfer, p_region, p_at, event)
    RETURNING * INTO entry;
    INSERT INTO ledger.outbox (event_id, event_type, account_id, seq, epoch, origin_region,
                               payload, traceparent, created_at)
    VALUES (event, p_event_type, acct.id, acct.seq, p_epoch, p_region,
            ledger.entry_json(entry), p_traceparent, p_at);
    RETURN entry;
END $$;

CREATE OR REPLACE FUNCTION ledger.create_account(
    p_key text, p_fingerprint bytea, p_id bigint, p_currency text, p_scale smallint,
    p_epoch bigint, p_region text, p_traceparent text
) RETURNS ledger.write_result LANGUAGE plpgsql AS $$
DECLARE
    prior ledger.idempotency_keys;
    acct ledger.accounts;
    at timestamptz := clock_timestamp();
    event uuid := gen_random_uuid();
    body jsonb;
BEGIN
    prior := ledger.claim_key(p_key, p_fingerprint);
    IF prior.key IS NOT NULL THEN
        RETURN (prior.status, prior.response, true);
    END IF;
    INSERT INTO ledger.accounts (id, currency, scale, balance, seq, epoch, home_region,
                                 created_at, updated_at, opened_event_id)
    VALUES (p_id, p_currency, p_scale, round(0::numeric, p_scale), 0, p_epoch, p_region, at,
            at, event)
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO acct;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'LD409', MESSAGE = 'account-id-collision',
            DETAIL = 'the randomly chosen account id is taken; choose another';
    END IF;
    body := ledger.account_json(acct);
    INSERT INTO ledger.outbox (event_id, event_type, account_id, seq, epoch, origin_region,
                               payload, traceparent, created_at)
    VALUES (event, 'AccountOpened', acct.id, 0, p_epoch, p_region, body, p_traceparent, at);
    PERFORM ledger.finish_key(p_key, (201, body, false));
    PERFORM ledger.check_lease(acct.slot, p_epoch);
    RETURN (201, body, false);
END $$;
