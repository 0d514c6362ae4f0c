-- Money movement is exactly-once across failover (issue 13): a transfer's identity
-- comes from its Idempotency-Key, every region learns every transfer, the saga is
-- driven by what the ledger holds, and late events reach the account's current owner.

-- A transfer's id is derived from its Idempotency-Key, as a deposit's txn id is
-- (`txn_of_key`): the same request retried in any region, before or after a promote,
-- names the same transfer. The region that books it finds the transfer already known
-- (as a replica of the original) and answers a replay; where the original is late, its
-- debit is recognised by reconciliation as this transfer's step, already booked.
CREATE FUNCTION ledger.transfer_of_key(p_key text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT md5('ledger-transfer:' || p_key)::uuid
$$;

-- The transfer this region already knows under the key's id: a replay answer, or a
-- refusal when the key was used for a different transfer. NULL when unknown here.
CREATE FUNCTION ledger.known_transfer(p_key text, p_from bigint, p_to bigint,
                                      p_amount numeric) RETURNS ledger.write_result
LANGUAGE plpgsql AS $$
DECLARE
    t ledger.transfers;
BEGIN
    SELECT * INTO t FROM ledger.transfers WHERE id = ledger.transfer_of_key(p_key);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF t.from_account <> p_from OR t.to_account <> p_to OR t.amount <> p_amount THEN
        RAISE EXCEPTION USING ERRCODE = 'LD422', MESSAGE = 'idempotency-key-reused',
            DETAIL = 'this Idempotency-Key was already used with a different transfer';
    END IF;
    RETURN (201, ledger.transfer_json(t), true);
END $$;

-- Step 1 of the saga, at the source's home: as in V4, with the id from the key.
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
                                      reference, created_at, updated_at)
        VALUES (ledger.transfer_of_key(p_key), src.id, p_to, amount, src.currency, 'debited',
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

-- Both accounts homed here: one transaction, as in V1, with the id from the key, and
-- both events carrying the transfer so that every region records it.
CREATE OR REPLACE FUNCTION ledger.post_transfer(
    p_key text, p_fingerprint bytea, p_from bigint, p_to bigint, p_amount numeric,
    p_reference text, p_from_epoch bigint, p_to_epoch bigint, p_region text,
    p_traceparent text
) RETURNS ledger.write_result LANGUAGE plpgsql AS $$
DECLARE
    prior ledger.idempotency_keys;
    src ledger.accounts;
    dst ledger.accounts;
    amount numeric;
    txn uuid := gen_random_uuid();
    at timestamptz := clock_timestamp();
    transfer ledger.transfers;
    carried jsonb;
    result ledger.write_result;
BEGIN
    prior := ledger.claim_key(p_key, p_fingerprint);
    IF prior.key IS NOT NULL THEN
        RETURN (prior.status, prior.response, true);
    END IF;
    IF p_from = p_to THEN
        RAISE EXCEPTION USING ERRCODE = 'LD422', MESSAGE = 'same-account-transfer',
            DETAIL = 'from and to name the same account';
    END IF;
    IF p_from < p_to THEN
        src := ledger.lock_account(p_from, p_from_epoch, 'source');
        dst := ledger.lock_account(p_to, p_to_epoch, 'destination');
    ELSE
        dst := ledger.lock_account(p_to, p_to_epoch, 'destination');
        src := ledger.lock_account(p_from, p_from_epoch, 'source');
    END IF;
    IF src.currency <> dst.currency THEN
        RAISE EXCEPTION USING ERRCODE = 'LD422', MESSAGE = 'currency-mismatch',
            DETAIL = format('source holds %s, destination holds %s', src.currency, dst.currency);
    END IF;
    amount := ledger.at_scale(p_amount, src.scale);
    result := ledger.known_transfer(p_key, p_from, p_to, amount);
    IF result.status IS NOT NULL THEN
        PERFORM ledger.finish_key(p_key, (result.status, result.body, false));
        RETURN result;
    END IF;
    IF src.balance < amount THEN
        result := ledger.insufficient_funds(src, amount);
    ELSE
        INSERT INTO ledger.transfers (id, from_account, to_account, amount, currency, state,
                                      reference, created_at, updated_at)
        VALUES (ledger.transfer_of_key(p_key), src.id, dst.id, amount, src.currency,
                'completed', p_reference, at, at)
        RETURNING * INTO transfer;
        carried := jsonb_build_object('transfer', ledger.transfer_json(transfer));
        PERFORM ledger.book_event(src, -amount, 'transfer_debit', 'TransferDebited', txn,
                                  p_reference, transfer.id, p_from_epoch, p_region,
                                  p_traceparent, at, carried);
        PERFORM ledger.book_event(dst, amount, 'transfer_credit', 'TransferCredited', txn,
                                  p_reference, transfer.id, p_to_epoch, p_region,
                                  p_traceparent, at, carried);
        result := (201, ledger.transfer_json(transfer), false);
    END IF;
    PERFORM ledger.finish_key(p_key, result);
    PERFORM ledger.check_lease(src.slot, p_from_epoch);
    PERFORM ledger.check_lease(dst.slot, p_to_epoch);
    RETURN result;
END $$;

-- Whether this region's ledger holds the transfer's debit (as home or replica). The
-- saga credits or refunds only then: a debit that became late here (superseded) waits
-- for its reconciliation replay, so no step books money that left no account.
CREATE FUNCTION ledger.debit_booked(p_transfer uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM ledger.entries
                   WHERE transfer_id = p_transfer AND kind = 'transfer_debit')
$$;
CREATE INDEX entries_by_transfer ON ledger.entries (transfer_id) WHERE transfer_id IS NOT NULL;

-- `{"transfer": ...}` for a saga entry whose transfer this region knows, else `{}`.
CREATE FUNCTION ledger.carried_transfer(p_transfer uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT jsonb_build_object('transfer', ledger.transfer_json(t))
                     FROM ledger.transfers t WHERE t.id = p_transfer), '{}'::jsonb)
$$;

-- One pass of the saga worker, as in V4, looking only at transfers whose debit this
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

-- Money that left an account and has not yet arrived or come back, from the ledger
-- itself: transfers with a debit booked here and neither a credit nor a refund.
CREATE FUNCTION ledger.money_in_flight()
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

-- What the survivors exchange before a promote, as in V5, with each saga entry's
-- transfer attached (as the original event carried it), so the importer records it.
CREATE OR REPLACE FUNCTION ledger.export_events(p_origin text, p_since interval) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(ev ORDER BY ord, account, seq), '[]'::jsonb) FROM (
        SELECT 0 AS ord, a.id AS account, 0::bigint AS seq, jsonb_build_object(
                   'id', a.opened_event_id, 'type', 'AccountOpened', 'account', a.id,
                   'seq', 0, 'origin', p_origin,
                   'epoch', coalesce((SELECT e.epoch FROM ledger.entries e
                                      WHERE e.account_id = a.id AND e.seq = 1), a.epoch),
                   'time', ledger.ts_text(a.created_at),
                   'data', ledger.account_json(a)
                           || jsonb_build_object('balance', round(0::numeric, a.scale)::text),
                   'event', jsonb_build_object('exported', true)) AS ev
        FROM ledger.accounts a
        WHERE a.opened_event_id IS NOT NULL AND a.created_at > clock_timestamp() - p_since
          AND (a.home_region = p_origin
               OR EXISTS (SELECT 1 FROM ledger.entries e WHERE e.account_id = a.id
                            AND e.seq = 1 AND e.origin_region = p_origin))
        UNION ALL
        SELECT 1, e.account_id, e.seq, jsonb_build_object(
                   'id', e.event_id, 'type', ledger.event_type_of(e.kind),
                   'account', e.account_id, 'seq', e.seq, 'epoch', e.epoch,
                   'origin', e.origin_region, 'time', ledger.ts_text(e.created_at),
                   'data', ledger.entry_json(e) || ledger.carried_transfer(e.transfer_id),
                   'event', jsonb_build_object('data', ledger.entry_json(e)
                                                       || ledger.carried_transfer(e.transfer_id),
                                               'exported', true))
        FROM ledger.entries e
        WHERE e.origin_region = p_origin AND e.event_id IS NOT NULL
          AND e.applied_at > clock_timestamp() - p_since
        UNION ALL
        SELECT 2, p.account_id, p.seq, p.event FROM ledger.pending_events p
        WHERE p.origin_region = p_origin
    ) exported
$$;

-- A superseded entry keeps the transfer it belongs to (the original event carried it;
-- the entry row alone does not), so its replay can drive the saga in every region.
CREATE OR REPLACE FUNCTION ledger.supersede_from(acct ledger.accounts, p_seq bigint, p_by uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    gone ledger.entries;
    before ledger.entries;
BEGIN
    FOR gone IN DELETE FROM ledger.entries WHERE account_id = acct.id AND seq >= p_seq
                RETURNING * LOOP
        PERFORM ledger.store_late(jsonb_build_object(
            'id', coalesce(gone.event_id, gen_random_uuid()),
            'type', ledger.event_type_of(gone.kind), 'account', gone.account_id,
            'seq', gone.seq, 'epoch', gone.epoch, 'origin', gone.origin_region,
            'event', jsonb_build_object('data', ledger.entry_json(gone)
                                                || ledger.carried_transfer(gone.transfer_id),
                                        'superseded_by', p_by)), 'superseded');
        DELETE FROM ledger.external_postings WHERE txn_id = gone.txn_id
            AND gone.kind IN ('deposit', 'withdrawal');
    END LOOP;
    SELECT * INTO before FROM ledger.entries WHERE account_id = acct.id AND seq = p_seq - 1;
    UPDATE ledger.accounts
    SET seq = p_seq - 1,
        balance = CASE WHEN FOUND THEN before.balance ELSE round(0::numeric, acct.scale) END
    WHERE id = acct.id;
END $$;

-- Reconciles one late event at the account's current owner, as in V5, and also:
-- a saga step's replay always carries its transfer (from the late event, or from this
-- region's record of it), so the replay starts or continues the saga everywhere; and a
-- late credit of a transfer that was refused and refunded (or a late refund of one
-- that was credited) is not booked, since the transfer already ended the other way.
CREATE OR REPLACE FUNCTION ledger.reconcile_one(l ledger.late_events, p_region text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    epoch bigint := ledger.lease_epoch(l.account_id);
    d jsonb := l.event->'data';
    late_kind text := l.event->'data'->>'kind';
    ended text;
    delta numeric;
    acct ledger.accounts;
    entry ledger.entries;
    flagged boolean;
    at timestamptz := clock_timestamp();
BEGIN
    IF epoch IS NULL THEN
        RETURN 'not_ours';
    END IF;
    IF l.event_type = 'AccountOpened' THEN
        RETURN ledger.settle_late(l, 'flagged',
            'the account was opened twice with one id; compare the two openings', p_region, NULL);
    END IF;
    IF late_kind IS NULL OR ledger.event_type_of(late_kind) IS NULL THEN
        RETURN ledger.settle_late(l, 'flagged', 'the late event carries no readable entry',
                                  p_region, NULL);
    END IF;
    IF EXISTS (SELECT 1 FROM ledger.entries WHERE event_id = l.event_id) THEN
        RETURN ledger.settle_late(l, 'duplicate', 'the event itself is in the ledger', p_region, NULL);
    END IF;
    IF EXISTS (SELECT 1 FROM ledger.entries WHERE reconciles = l.event_id) THEN
        RETURN ledger.settle_late(l, 'duplicate', 'already replayed', p_region, NULL);
    END IF;
    IF late_kind IN ('deposit', 'withdrawal') AND EXISTS (
        SELECT 1 FROM ledger.entries WHERE txn_id = (d->>'txn_id')::uuid
          AND account_id = l.account_id AND entries.kind = late_kind) THEN
        RETURN ledger.settle_late(l, 'duplicate',
            'the same request (Idempotency-Key) was written again after the failover',
            p_region, NULL);
    END IF;
    IF late_kind LIKE 'transfer_%' THEN
        IF EXISTS (SELECT 1 FROM ledger.entries WHERE transfer_id = (d->>'transfer_id')::uuid
                     AND account_id = l.account_id AND entries.kind = late_kind) THEN
            RETURN ledger.settle_late(l, 'duplicate', 'this transfer step is already booked',
                                      p_region, NULL);
        END IF;
        SELECT state INTO ended FROM ledger.transfers WHERE id = (d->>'transfer_id')::uuid;
        IF late_kind = 'transfer_credit' AND ended IN ('rejected', 'refunded') THEN
            RETURN ledger.settle_late(l, 'duplicate',
                'the transfer was refused and refunded; its late credit is not booked',
                p_region, NULL);
        END IF;
        IF late_kind = 'transfer_refund' AND ended = 'completed' AND EXISTS (
            SELECT 1 FROM ledger.entries WHERE transfer_id = (d->>'transfer_id')::uuid
              AND entries.kind = 'transfer_credit') THEN
            RETURN ledger.settle_late(l, 'duplicate',
                'the transfer was credited; its late refund is not booked', p_region, NULL);
        END IF;
        IF NOT d ? 'transfer' THEN
            d := d || ledger.carried_transfer((d->>'transfer_id')::uuid);
        END IF;
    END IF;
    SELECT * INTO acct FROM ledger.accounts WHERE id = l.account_id FOR UPDATE;
    IF NOT FOUND OR acct.epoch > epoch THEN
        RETURN 'not_ours';
    END IF;
    delta := ledger.at_scale((d->>'amount')::numeric, acct.scale);
    flagged := delta < 0 AND acct.balance + delta < 0;
    entry := ledger.book_event(acct, delta, late_kind, ledger.event_type_of(late_kind),
                               (d->>'txn_id')::uuid, d->>'reference',
                               (d->>'transfer_id')::uuid, epoch, p_region, NULL, at,
                               jsonb_build_object('reconciles', l.event_id, 'review', flagged)
                               || CASE WHEN d ? 'transfer'
                                       THEN jsonb_build_object('transfer', d->'transfer')
                                       ELSE '{}'::jsonb END);
    UPDATE ledger.entries SET reconciles = l.event_id, review = flagged
    WHERE account_id = entry.account_id AND seq = entry.seq;
    IF late_kind IN ('deposit', 'withdrawal') THEN
        INSERT INTO ledger.external_postings (txn_id, currency, amount, created_at)
        VALUES ((d->>'txn_id')::uuid, acct.currency, -delta, at)
        ON CONFLICT (txn_id) DO NOTHING;
    END IF;
    IF d ? 'transfer' THEN
        PERFORM ledger.note_transfer(d->'transfer');
    END IF;
    PERFORM ledger.check_lease(acct.slot, epoch);
    RETURN ledger.settle_late(l,
        CASE WHEN flagged THEN 'flagged' ELSE 'replayed' END,
        CASE WHEN flagged THEN format('replayed into an overdraft: balance %s', entry.balance)
             ELSE format('replayed as seq %s', entry.seq) END,
        p_region, entry.seq);
END $$;

-- Late-event handoff: a region holding a pending late event of an account it does not
-- own sends it to the current owner (the node's `late-handoff` task), which stores it
-- and decides it like any other; the owner's LateEventSettled then settles every copy.
-- Without this, an event that reached only a non-owner stayed pending for ever (and
-- blocked failback readiness).
ALTER TABLE ledger.late_events
    ADD COLUMN handed_to text,
    ADD COLUMN handed_at timestamptz;

-- Pending late events old enough to hand off and not handed off recently, in the form
-- `receive_late` takes.
CREATE FUNCTION ledger.late_to_hand_off(p_min_age interval, p_retry interval, p_limit integer)
RETURNS TABLE (event_id uuid, account_id bigint, late jsonb) LANGUAGE sql STABLE AS $$
    SELECT l.event_id, l.account_id, jsonb_build_object(
               'id', l.event_id, 'type', l.event_type, 'account', l.account_id,
               'seq', l.seq, 'epoch', l.epoch, 'origin', l.origin_region,
               'reason', l.reason, 'event', l.event)
    FROM ledger.late_events l
    WHERE l.status = 'pending' AND l.received_at < clock_timestamp() - p_min_age
      AND (l.handed_at IS NULL OR l.handed_at < clock_timestamp() - p_retry)
    ORDER BY l.received_at LIMIT p_limit
$$;

-- At the receiving region: stores the handed-off late events (kept as they are where
-- already known) and answers the decisions it already has for any of them.
CREATE FUNCTION ledger.receive_late(p_events jsonb)
RETURNS TABLE (event_id uuid, status text, detail text, resolved_by text, reconciled_seq bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ev jsonb;
BEGIN
    FOR ev IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        PERFORM ledger.store_late(ev, CASE WHEN ev->>'reason' IN ('seq_taken', 'stale_epoch',
                                                                  'superseded')
                                           THEN ev->>'reason' ELSE 'seq_taken' END);
    END LOOP;
    RETURN QUERY
        SELECT l.event_id, l.status, l.detail, l.resolved_by, l.reconciled_seq
        FROM ledger.late_events l
        WHERE l.event_id IN (SELECT (value->>'id')::uuid FROM jsonb_array_elements(p_events))
          AND l.status <> 'pending';
END $$;

-- At the sending region: notes the handoff, and settles the copy here where the
-- receiver already had a decision.
CREATE FUNCTION ledger.note_handoff(p_event uuid, p_to text, p_status text, p_detail text,
                                    p_by text, p_seq bigint) RETURNS void
LANGUAGE sql AS $$
    UPDATE ledger.late_events
    SET handed_to = p_to, handed_at = clock_timestamp(),
        status = CASE WHEN p_status IS NULL THEN status
                      WHEN p_status = 'duplicate' THEN 'duplicate'
                      ELSE 'replayed_elsewhere' END,
        detail = coalesce(p_detail, detail),
        resolved_at = CASE WHEN p_status IS NULL THEN resolved_at ELSE clock_timestamp() END,
        resolved_by = coalesce(p_by, resolved_by),
        reconciled_seq = coalesce(p_seq, reconciled_seq)
    WHERE event_id = p_event AND status = 'pending'
$$;

-- One pass of the reconciler, as in V5, except that a late event whose decision fails
-- (a constraint, a bug) is reported (`failed: <error>`) and left pending, instead of
-- failing the pass and so holding back every other late event for ever.
CREATE OR REPLACE FUNCTION ledger.reconcile_late(p_region text, p_limit integer)
RETURNS TABLE (event_id uuid, outcome text) LANGUAGE plpgsql AS $$
DECLARE
    l ledger.late_events;
BEGIN
    FOR l IN SELECT * FROM ledger.late_events le
             WHERE le.status = 'pending' AND ledger.lease_epoch(le.account_id) IS NOT NULL
             ORDER BY le.account_id, le.seq, le.received_at
             LIMIT p_limit FOR UPDATE SKIP LOCKED LOOP
        BEGIN
            outcome := ledger.reconcile_one(l, p_region);
        EXCEPTION WHEN SQLSTATE 'LD503' THEN
            outcome := 'not_ours';
        WHEN OTHERS THEN
            outcome := 'failed: ' || SQLERRM;
        END;
        CONTINUE WHEN outcome = 'not_ours';
        event_id := l.event_id;
        RETURN NEXT;
    END LOOP;
END $$;
