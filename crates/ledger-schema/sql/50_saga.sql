-- The cross-region transfer saga: debit at the source, credit or refund at the
-- destination and back, driven by what this region's ledger holds; money in flight.
--
-- The current text of each function: applied with CREATE OR REPLACE after the versioned
-- migrations (which hold only DDL), so the rule that runs is the one written here.
-- Change a function here, never in a migration.

-- How far a transfer has come; a replica only ever moves a transfer forward.
CREATE OR REPLACE FUNCTION ledger.transfer_rank(p_state text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_state WHEN 'debited' THEN 1 WHEN 'rejected' THEN 2
                        WHEN 'completed' THEN 3 WHEN 'refunded' THEN 3 ELSE 0 END
$$;

-- Records what an event says about a transfer (on any region).
CREATE OR REPLACE FUNCTION ledger.note_transfer(t jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO ledger.transfers (id, from_account, to_account, amount, currency, state,
                                  reference, reason, created_at, updated_at, traceparent)
    VALUES ((t->>'id')::uuid, ledger.account_id_value(t->>'from'),
            ledger.account_id_value(t->>'to'), (t->>'amount')::numeric, t->>'currency',
            t->>'state', t->>'reference', t->>'reason', (t->>'created_at')::timestamptz,
            (t->>'updated_at')::timestamptz, t->>'traceparent')
    ON CONFLICT (id) DO UPDATE
    SET state = EXCLUDED.state, reason = coalesce(EXCLUDED.reason, ledger.transfers.reason),
        updated_at = EXCLUDED.updated_at
    WHERE ledger.transfer_rank(EXCLUDED.state) > ledger.transfer_rank(ledger.transfers.state)
$$;

-- book() with an optional object merged into the event's data (the saga's events
-- carry their transfer, so that every region learns it).
CREATE OR REPLACE FUNCTION ledger.book_event(
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

-- Step 1 of the saga, at the source's home: debit and start the saga, the transfer's
-- id derived from the key.
CREATE OR REPLACE FUNCTION ledger.start_transfer(
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
    -- After the source's row lock: an applier booking the original here holds it too.
    result := ledger.known_transfer(p_key, p_from, p_to, amount);
    IF result.status IS NOT NULL THEN
        PERFORM ledger.finish_key(p_key, (result.status, result.body, false));
        RETURN result;
    END IF;
    IF src.balance < amount THEN
        result := ledger.insufficient_funds(src, amount);
    ELSE
        INSERT INTO ledger.transfers (id, from_account, to_account, amount, currency, state,
                                      reference, created_at, updated_at, traceparent)
        VALUES (ledger.transfer_of_key(p_key), src.id, p_to, amount, src.currency, 'debited',
                p_reference, at, at, p_traceparent)
        RETURNING * INTO transfer;
        PERFORM ledger.book_event(src, -amount, 'transfer_debit', 'TransferDebited',
                                  gen_random_uuid(), p_reference, transfer.id, p_from_epoch,
                                  p_region, p_traceparent, at,
                                  jsonb_build_object('transfer', ledger.transfer_event_json(transfer)));
        result := (201, ledger.transfer_json(transfer), false);
    END IF;
    PERFORM ledger.finish_key(p_key, result);
    PERFORM ledger.check_lease(src.slot, p_from_epoch);
    RETURN result;
END $$;

-- Step 2, at the destination's home: credit, or refuse with a reason.
CREATE OR REPLACE FUNCTION ledger.settle_transfer(t ledger.transfers, p_region text)
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
                                  gen_random_uuid(), t.reference, t.id, epoch, p_region,
                                  t.traceparent, at,
                                  jsonb_build_object('transfer', ledger.transfer_event_json(t)));
        PERFORM ledger.check_lease((t.to_account >> 48)::integer, epoch);
        RETURN 'completed';
    END IF;
    UPDATE ledger.transfers SET state = 'rejected', reason = why, updated_at = at
    WHERE id = t.id RETURNING * INTO t;
    INSERT INTO ledger.outbox (event_id, event_type, account_id, seq, epoch, origin_region,
                               payload, traceparent, created_at)
    VALUES (gen_random_uuid(), 'TransferRejected', t.from_account, 0, epoch, p_region,
            jsonb_build_object('transfer', ledger.transfer_event_json(t)), t.traceparent, at);
    PERFORM ledger.check_lease((t.to_account >> 48)::integer, epoch);
    RETURN 'rejected';
END $$;

-- Step 3, at the source's home after a rejection: give the money back.
CREATE OR REPLACE FUNCTION ledger.refund_transfer(t ledger.transfers, p_region text)
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
                                  gen_random_uuid(), t.reference, t.id, epoch, p_region,
                                  t.traceparent, at,
                                  jsonb_build_object('transfer', ledger.transfer_event_json(t)));
        PERFORM ledger.check_lease((t.from_account >> 48)::integer, epoch);
    ELSE
        UPDATE ledger.transfers SET state = 'refunded', updated_at = at WHERE id = t.id;
    END IF;
    RETURN 'refunded';
END $$;

-- One pass of the saga worker: every in-flight transfer whose next step belongs to this
-- region, each step in its own subtransaction so that one failure (a lease that ran out
-- mid-pass) does not undo the others; it looks only at transfers whose debit this
-- region holds (others cannot take their step here yet and must not use up the pass),
-- and reporting a step that fails (`failed: <error>`) instead of failing the pass.
CREATE OR REPLACE FUNCTION ledger.run_saga(p_region text, p_limit integer)
RETURNS TABLE (transfer_id uuid, step text) LANGUAGE plpgsql AS $$
DECLARE
    t ledger.transfers;
BEGIN
    FOR t IN SELECT * FROM ledger.transfers tr
             WHERE tr.state IN ('debited', 'rejected')
               AND ((tr.state = 'debited' AND ledger.lease_epoch(tr.to_account) IS NOT NULL)
                 OR (tr.state = 'rejected' AND ledger.lease_epoch(tr.from_account) IS NOT NULL))
               AND ledger.debit_booked(tr.id)
             ORDER BY tr.updated_at LIMIT p_limit FOR UPDATE SKIP LOCKED LOOP
        BEGIN
            IF t.state = 'debited' THEN
                step := ledger.settle_transfer(t, p_region);
            ELSE
                step := ledger.refund_transfer(t, p_region);
            END IF;
        EXCEPTION WHEN SQLSTATE 'LD503' THEN
            step := 'not_ours';
        WHEN OTHERS THEN
            -- One step that fails (a constraint, a bug) must not stop every other
            -- transfer's saga: it is reported, rotated and tried again next pass.
            step := 'failed: ' || SQLERRM;
        END;
        IF step = 'not_ours' OR step LIKE 'failed: %' THEN
            -- Rotate it to the back, so it cannot hold back the transfers behind it.
            UPDATE ledger.transfers SET updated_at = clock_timestamp() WHERE id = t.id;
        END IF;
        CONTINUE WHEN step = 'not_ours';
        transfer_id := t.id;
        RETURN NEXT;
    END LOOP;
END $$;

-- Whether this region's ledger holds the transfer's debit (as home or replica). The
-- saga credits or refunds only then: a debit that became late here (superseded) waits
-- for its reconciliation replay, so no step books money that left no account.
CREATE OR REPLACE FUNCTION ledger.debit_booked(p_transfer uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM ledger.entries
                   WHERE transfer_id = p_transfer AND kind = 'transfer_debit')
$$;

-- `{"transfer": ...}` for a saga entry whose transfer this region knows, else `{}`.
CREATE OR REPLACE FUNCTION ledger.carried_transfer(p_transfer uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT jsonb_build_object('transfer', ledger.transfer_event_json(t))
                     FROM ledger.transfers t WHERE t.id = p_transfer), '{}'::jsonb)
$$;

-- Money that left an account and has not yet arrived or come back, from the ledger
-- itself: transfers with a debit booked here and neither a credit nor a refund.
CREATE OR REPLACE FUNCTION ledger.money_in_flight()
RETURNS TABLE (currency text, transfers bigint, amount numeric, oldest_seconds float8)
LANGUAGE sql STABLE AS $$
    SELECT d.currency, count(*), coalesce(-sum(d.amount), 0),
           coalesce(extract(epoch FROM clock_timestamp() - min(d.created_at)), 0)::float8
    FROM ledger.entries d
    WHERE d.kind = 'transfer_debit' AND d.transfer_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM ledger.entries s WHERE s.transfer_id = d.transfer_id
                        AND s.kind IN ('transfer_credit', 'transfer_refund'))
    GROUP BY d.currency
$$;
