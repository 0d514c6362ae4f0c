-- Several regions (DESIGN.md, "The single-writer rule", "Write path"): leases that
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

-- The lease check, last before COMMIT: a slot lease or an account lease at this epoch,
-- already valid (fencing delay over) and not yet expired, on the database's clock.
CREATE OR REPLACE FUNCTION ledger.check_lease(p_slot integer, p_epoch bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    held_from timestamptz;
    held_until timestamptz;
BEGIN
    SELECT valid_from, expires_at INTO held_from, held_until
    FROM ledger.slot_leases WHERE slot = p_slot AND epoch = p_epoch;
    IF NOT FOUND THEN
        SELECT valid_from, expires_at INTO held_from, held_until
        FROM ledger.account_leases WHERE slot = p_slot AND epoch = p_epoch LIMIT 1;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'LD503', MESSAGE = 'not-owner',
            DETAIL = format('this region does not hold slot %s at epoch %s', p_slot, p_epoch);
    END IF;
    IF held_from > clock_timestamp() THEN
        RAISE EXCEPTION USING ERRCODE = 'LD503', MESSAGE = 'not-owner',
            DETAIL = format('slot %s at epoch %s is fenced until %s', p_slot, p_epoch, held_from);
    END IF;
    IF held_until <= clock_timestamp() THEN
        RAISE EXCEPTION USING ERRCODE = 'LD503', MESSAGE = 'not-owner',
            DETAIL = format('the lease on slot %s ran out at %s', p_slot, held_until);
    END IF;
END $$;

-- As in V1, and also refuses accounts homed elsewhere by override, and an account homed
-- here by override written at any epoch but its own.
CREATE OR REPLACE FUNCTION ledger.lock_account(p_id bigint, p_epoch bigint, p_role text)
RETURNS ledger.accounts LANGUAGE plpgsql AS $$
DECLARE
    acct ledger.accounts;
    override_epoch bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM ledger.accounts_away WHERE account_id = p_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'LD503', MESSAGE = 'not-owner',
            DETAIL = format('account %s is homed in another region', ledger.account_id_text(p_id));
    END IF;
    SELECT epoch INTO override_epoch FROM ledger.account_leases WHERE account_id = p_id;
    IF FOUND AND override_epoch <> p_epoch THEN
        RAISE EXCEPTION USING ERRCODE = 'LD503', MESSAGE = 'not-owner',
            DETAIL = format('account %s is held at epoch %s, not %s',
                            ledger.account_id_text(p_id), override_epoch, p_epoch);
    END IF;
    SELECT * INTO acct FROM ledger.accounts WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'LD404', MESSAGE = 'account-not-found',
            DETAIL = format('%s account %s does not exist', p_role, ledger.account_id_text(p_id));
    END IF;
    IF acct.epoch > p_epoch THEN
        RAISE EXCEPTION USING ERRCODE = 'LD503', MESSAGE = 'not-owner',
            DETAIL = format('account %s was last written at epoch %s, newer than %s',
                            ledger.account_id_text(p_id), acct.epoch, p_epoch);
    END IF;
    RETURN acct;
END $$;

-- The epoch at which this region may write `p_account` right now, or NULL.
CREATE FUNCTION ledger.lease_epoch(p_account bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM ledger.accounts_away WHERE account_id = p_account)
                THEN NULL
           ELSE coalesce(
               (SELECT epoch FROM ledger.account_leases WHERE account_id = p_account
                  AND valid_from <= clock_timestamp() AND expires_at > clock_timestamp()),
               (SELECT epoch FROM ledger.slot_leases WHERE slot = (p_account >> 48)::integer
                  AND valid_from <= clock_timestamp() AND expires_at > clock_timestamp()
                  AND NOT EXISTS (SELECT 1 FROM ledger.account_leases
                                  WHERE account_id = p_account)))
           END
$$;

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

CREATE OR REPLACE FUNCTION ledger.event_type_of(p_kind text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_kind WHEN 'deposit' THEN 'Deposited' WHEN 'withdrawal' THEN 'Withdrawn'
                       WHEN 'transfer_debit' THEN 'TransferDebited'
                       WHEN 'transfer_credit' THEN 'TransferCredited'
                       WHEN 'transfer_refund' THEN 'TransferRefunded' END
$$;

CREATE OR REPLACE FUNCTION ledger.transfer_json(t ledger.transfers) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', t.id, 'from', ledger.account_id_text(t.from_account),
        'to', ledger.account_id_text(t.to_account), 'amount', t.amount::text,
        'currency', t.currency, 'state', t.state, 'reason', t.reason))
        || jsonb_build_object('reference', t.reference,
        'created_at', ledger.ts_text(t.created_at), 'updated_at', ledger.ts_text(t.updated_at))
$$;

-- How far a transfer has come; a replica only ever moves a transfer forward.
CREATE FUNCTION ledger.transfer_rank(p_state text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_state WHEN 'debited' THEN 1 WHEN 'rejected' THEN 2
                        WHEN 'completed' THEN 3 WHEN 'refunded' THEN 3 ELSE 0 END
$$;

-- The bigint of an account's public id (`ac_ssss_llllllllllll`).
CREATE FUNCTION ledger.account_id_value(p_text text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (('x' || lpad(substr(p_text, 4, 4), 16, '0'))::bit(64)::bigint << 48)
         | ('x' || lpad(substr(p_text, 9, 12), 16, '0'))::bit(64)::bigint
$$;

-- Records what an event says about a transfer (on any region).
CREATE FUNCTION ledger.note_transfer(t jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO ledger.transfers (id, from_account, to_account, amount, currency, state,
                                  reference, reason, created_at, updated_at)
    VALUES ((t->>'id')::uuid, ledger.account_id_value(t->>'from'),
            ledger.account_id_value(t->>'to'), (t->>'amount')::numeric, t->>'currency',
            t->>'state', t->>'reference', t->>'reason', (t->>'created_at')::timestamptz,
            (t->>'updated_at')::timestamptz)
    ON CONFLICT (id) DO UPDATE
    SET state = EXCLUDED.state, reason = coalesce(EXCLUDED.reason, ledger.transfers.reason),
        updated_at = EXCLUDED.updated_at
    WHERE ledger.transfer_rank(EXCLUDED.state) > ledger.transfer_rank(ledger.transfers.state)
$$;


-- book() as in V2, with an optional object merged into the event's data (the saga's
-- events carry their transfer, so that every region learns it).
CREATE FUNCTION ledger.book_event(
    acct ledger.accounts, p_delta numeric, p_kind text, p_event_type text, p_txn uuid,
    p_reference text, p_transfer uuid, p_epoch bigint, p_region text, p_traceparent text,
    p_at timestamptz, p_extra jsonb
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
            ledger.entry_json(entry) || coalesce(p_extra, '{}'::jsonb), p_traceparent, p_at);
    RETURN entry;
END $$;

CREATE OR REPLACE FUNCTION ledger.book(
    acct ledger.accounts, p_delta numeric, p_kind text, p_event_type text, p_txn uuid,
    p_reference text, p_transfer uuid, p_epoch bigint, p_region text, p_traceparent text,
    p_at timestamptz
) RETURNS ledger.entries LANGUAGE sql AS $$
    SELECT ledger.book_event(acct, p_delta, p_kind, p_event_type, p_txn, p_reference,
                             p_transfer, p_epoch, p_region, p_traceparent, p_at, NULL)
$$;

-- Step 1, at the source's home: debit and start the saga.
CREATE FUNCTION ledger.start_transfer(
    p_key text, p_fingerprint bytea, p_from bigint, p_to bigint, p_amount numeric,
    p_reference text, p_from_epoch bigint, p_region text, p_traceparent text
) RETURNS ledger.write_result LANGUAGE plpgsql AS $$
DECLARE
    prior ledger.idempotency_keys;
    src ledger.accounts;
    amount numeric;
    at timestamptz := clock_timestamp();
    transfer ledger.transfers;
    result ledger.write_result;
BEGIN
    prior := ledger.claim_key(p_key, p_fingerprint);
    IF prior.key IS NOT NULL THEN
        RETURN (prior.status, prior.response, true);
    END IF;
    src := ledger.lock_account(p_from, p_from_epoch, 'source');
    IF src.status <> 'open' THEN
        RAISE EXCEPTION USING ERRCODE = 'LD422', MESSAGE = 'account-closed',
            DETAIL = format('source account %s is closed', ledger.account_id_text(p_from));
    END IF;
    amount := ledger.at_scale(p_amount, src.scale);
    IF src.balance < amount THEN
        result := ledger.insufficient_funds(src, amount);
    ELSE
        INSERT INTO ledger.transfers (id, from_account, to_account, amount, currency, state,
                                      reference, created_at, updated_at)
        VALUES (gen_random_uuid(), src.id, p_to, amount, src.currency, 'debited',
                p_reference, at, at)
        RETURNING * INTO transfer;
        PERFORM ledger.book_event(src, -amount, 'transfer_debit', 'TransferDebited',
                                  gen_random_uuid(), p_reference, transfer.id, p_from_epoch,
                                  p_region, p_traceparent, at,
                                  jsonb_build_object('transfer', ledger.transfer_json(transfer)));
        result := (201, ledger.transfer_json(transfer), false);
    END IF;
    PERFORM ledger.finish_key(p_key, result);
    PERFORM ledger.check_lease(src.slot, p_from_epoch);
    RETURN result;
END $$;

-- Step 2, at the destination's home: credit, or refuse with a reason.
CREATE FUNCTION ledger.settle_transfer(t ledger.transfers, p_region text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    epoch bigint := ledger.lease_epoch(t.to_account);
    dst ledger.accounts;
    at timestamptz := clock_timestamp();
    why text;
BEGIN
    IF epoch IS NULL THEN
        RETURN 'not_ours';
    END IF;
    IF EXISTS (SELECT 1 FROM ledger.entries WHERE transfer_id = t.id AND kind = 'transfer_credit') THEN
        UPDATE ledger.transfers SET state = 'completed', updated_at = at WHERE id = t.id;
        RETURN 'completed';
    END IF;
    SELECT * INTO dst FROM ledger.accounts WHERE id = t.to_account FOR UPDATE;
    IF NOT FOUND THEN
        why := 'destination account does not exist';
    ELSIF dst.status <> 'open' THEN
        why := 'destination account is closed';
    ELSIF dst.currency <> t.currency THEN
        why := format('destination holds %s, the transfer is in %s', dst.currency, t.currency);
    ELSIF dst.epoch > epoch THEN
        RETURN 'not_ours';
    END IF;
    IF why IS NULL THEN
        UPDATE ledger.transfers SET state = 'completed', updated_at = at WHERE id = t.id
        RETURNING * INTO t;
        PERFORM ledger.book_event(dst, t.amount, 'transfer_credit', 'TransferCredited',
                                  gen_random_uuid(), t.reference, t.id, epoch, p_region, NULL,
                                  at, jsonb_build_object('transfer', ledger.transfer_json(t)));
        PERFORM ledger.check_lease((t.to_account >> 48)::integer, epoch);
        RETURN 'completed';
    END IF;
    UPDATE ledger.transfers SET state = 'rejected', reason = why, updated_at = at
    WHERE id = t.id RETURNING * INTO t;
    INSERT INTO ledger.outbox (event_id, event_type, account_id, seq, epoch, origin_region,
                               payload, created_at)
    VALUES (gen_random_uuid(), 'TransferRejected', t.from_account, 0, epoch, p_region,
            jsonb_build_object('transfer', ledger.transfer_json(t)), at);
    PERFORM ledger.check_lease((t.to_account >> 48)::integer, epoch);
    RETURN 'rejected';
END $$;

-- Step 3, at the source's home after a rejection: give the money back.
CREATE FUNCTION ledger.refund_transfer(t ledger.transfers, p_region text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    epoch bigint := ledger.lease_epoch(t.from_account);
    src ledger.accounts;
    at timestamptz := clock_timestamp();
BEGIN
    IF epoch IS NULL THEN
        RETURN 'not_ours';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ledger.entries WHERE transfer_id = t.id AND kind = 'transfer_refund') THEN
        SELECT * INTO src FROM ledger.accounts WHERE id = t.from_account FOR UPDATE;
        IF NOT FOUND OR src.epoch > epoch THEN
            RETURN 'not_ours';
        END IF;
        UPDATE ledger.transfers SET state = 'refunded', updated_at = at WHERE id = t.id
        RETURNING * INTO t;
        PERFORM ledger.book_event(src, t.amount, 'transfer_refund', 'TransferRefunded',
                                  gen_random_uuid(), t.reference, t.id, epoch, p_region, NULL,
                                  at, jsonb_build_object('transfer', ledger.transfer_json(t)));
        PERFORM ledger.check_lease((t.from_account >> 48)::integer, epoch);
    ELSE
        UPDATE ledger.transfers SET state = 'refunded', updated_at = at WHERE id = t.id;
    END IF;
    RETURN 'refunded';
END $$;

-- One pass of the saga worker: every in-flight transfer whose next step belongs to this
-- region, each step in its own subtransaction so that one failure (a lease that ran out
-- mid-pass) does not undo the others. Returns the steps taken.
CREATE FUNCTION ledger.run_saga(p_region text, p_limit integer)
RETURNS TABLE (transfer_id uuid, step text) LANGUAGE plpgsql AS $$
DECLARE
    t ledger.transfers;
BEGIN
    FOR t IN SELECT * FROM ledger.transfers
             WHERE state IN ('debited', 'rejected')
               AND ((state = 'debited' AND ledger.lease_epoch(to_account) IS NOT NULL)
                 OR (state = 'rejected' AND ledger.lease_epoch(from_account) IS NOT NULL))
             ORDER BY created_at LIMIT p_limit FOR UPDATE SKIP LOCKED LOOP
        BEGIN
            IF t.state = 'debited' THEN
                step := ledger.settle_transfer(t, p_region);
            ELSE
                step := ledger.refund_transfer(t, p_region);
            END IF;
        EXCEPTION WHEN SQLSTATE 'LD503' THEN
            step := 'not_ours';
        END;
        CONTINUE WHEN step = 'not_ours';
        transfer_id := t.id;
        RETURN NEXT;
    END LOOP;
END $$;

-- Replicas: saga events also move the transfer they carry; TransferRejected belongs to
-- no account's sequence. The saga worker is woken on channel ledger_saga.
CREATE OR REPLACE FUNCTION ledger.try_apply(ev jsonb, OUT outcome text, OUT detail text)
LANGUAGE plpgsql AS $$
BEGIN
    IF ev->>'type' = 'AccountOpened' THEN
        outcome := ledger.apply_opened(ev);
    ELSIF ev->>'type' = 'TransferRejected' THEN
        PERFORM ledger.note_transfer(ev->'data'->'transfer');
        PERFORM pg_notify('ledger_saga', '');
        outcome := 'applied';
    ELSE
        outcome := ledger.apply_change(ev);
        IF outcome IN ('applied', 'superseded') AND ev->'data' ? 'transfer' THEN
            PERFORM ledger.note_transfer(ev->'data'->'transfer');
            IF ev->>'type' = 'TransferDebited' THEN
                PERFORM pg_notify('ledger_saga', '');
            END IF;
        END IF;
    END IF;
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR raise_exception THEN
    outcome := 'poison';
    detail := SQLERRM;
END $$;

-- How far behind each origin this region's applier was at its last report (written by
-- the replicator's housekeeping every second), so reads can say how stale a copy is.
CREATE TABLE ledger.replication_lag (
    origin_region text PRIMARY KEY,
    lag_events    bigint NOT NULL,
    lag_seconds   float8 NOT NULL,
    measured_at   timestamptz NOT NULL
);
