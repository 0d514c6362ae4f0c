-- Failover (DESIGN.md, "Failover"): what a switchover compares, how a retried request is
-- recognised in any region, and reconciliation of late events at the current owner.

-- A deposit's or withdrawal's transaction id is derived from its Idempotency-Key, so the
-- same request retried in another region after a failover carries the same txn_id as the
-- original: a replica that already holds the original answers the retry as a replay, and
-- reconciliation skips a late original whose retry was already written.
CREATE FUNCTION ledger.txn_of_key(p_key text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT md5('ledger-txn:' || p_key)::uuid
$$;
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

CREATE OR REPLACE FUNCTION ledger.entry_json(e ledger.entries) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'account_id', ledger.account_id_text(e.account_id), 'seq', e.seq, 'epoch', e.epoch,
        'kind', e.kind, 'amount', e.amount::text, 'balance', e.balance::text,
        'currency', e.currency, 'txn_id', e.txn_id, 'reference', e.reference,
        'transfer_id', e.transfer_id, 'origin_region', e.origin_region,
        'created_at', ledger.ts_text(e.created_at))
        || CASE WHEN e.reconciles IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('reconciles', e.reconciles, 'review', e.review) END
$$;

-- As in V1, with the txn id derived from the key, and a retry of a request some other
-- region already wrote (and this one holds as a replica) answered as a replay.
CREATE OR REPLACE FUNCTION ledger.post_entry(
    p_key text, p_fingerprint bytea, p_kind text, p_account bigint, p_amount numeric,
    p_reference text, p_epoch bigint, p_region text, p_traceparent text
) RETURNS ledger.write_result LANGUAGE plpgsql AS $$
DECLARE
    prior ledger.idempotency_keys;
    acct ledger.accounts;
    amount numeric;
    delta numeric;
    txn uuid := ledger.txn_of_key(p_key);
    at timestamptz := clock_timestamp();
    entry ledger.entries;
    result ledger.write_result;
BEGIN
    IF p_kind NOT IN ('deposit', 'withdrawal') THEN
        RAISE EXCEPTION 'post_entry: unknown kind %', p_kind;
    END IF;
    prior := ledger.claim_key(p_key, p_fingerprint);
    IF prior.key IS NOT NULL THEN
        RETURN (prior.status, prior.response, true);
    END IF;
    acct := ledger.lock_account(p_account, p_epoch, 'the');
    amount := ledger.at_scale(p_amount, acct.scale);
    delta := CASE p_kind WHEN 'deposit' THEN amount ELSE -amount END;
    SELECT * INTO entry FROM ledger.entries
    WHERE txn_id = txn AND kind IN ('deposit', 'withdrawal') LIMIT 1;
    IF FOUND THEN
        IF entry.account_id <> p_account OR entry.kind <> p_kind OR entry.amount <> delta THEN
            RAISE EXCEPTION USING ERRCODE = 'LD422', MESSAGE = 'idempotency-key-reused',
                DETAIL = 'this Idempotency-Key was already used with a different request';
        END IF;
        result := (201, ledger.entry_json(entry), true);
        PERFORM ledger.finish_key(p_key, (201, result.body, false));
        RETURN result;
    END IF;
    IF acct.balance + delta < 0 THEN
        result := ledger.insufficient_funds(acct, amount);
    ELSE
        entry := ledger.book(acct, delta, p_kind,
                             CASE p_kind WHEN 'deposit' THEN 'Deposited' ELSE 'Withdrawn' END,
                             txn, p_reference, NULL, p_epoch, p_region, p_traceparent, at);
        INSERT INTO ledger.external_postings (txn_id, currency, amount, created_at)
        VALUES (txn, acct.currency, -delta, at);
        result := (201, ledger.entry_json(entry), false);
    END IF;
    PERFORM ledger.finish_key(p_key, result);
    PERFORM ledger.check_lease(acct.slot, p_epoch);
    RETURN result;
END $$;

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

-- A late event some region already settled is recorded as such on arrival.
CREATE OR REPLACE FUNCTION ledger.store_late(ev jsonb, p_reason text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO ledger.late_events (event_id, account_id, seq, epoch, origin_region,
                                    event_type, reason, event, received_at, status,
                                    detail, resolved_at, resolved_by, reconciled_seq)
    SELECT (ev->>'id')::uuid, (ev->>'account')::bigint, (ev->>'seq')::bigint,
           (ev->>'epoch')::bigint, ev->>'origin', ev->>'type', p_reason, ev->'event',
           clock_timestamp(),
           CASE WHEN s.status = 'duplicate' THEN 'duplicate'
                WHEN s.status IS NOT NULL OR replayed THEN 'replayed_elsewhere'
                ELSE 'pending' END,
           s.detail, CASE WHEN s.status IS NOT NULL OR replayed THEN clock_timestamp() END,
           s.resolved_by, s.reconciled_seq
    FROM (SELECT EXISTS (SELECT 1 FROM ledger.entries
                         WHERE reconciles = (ev->>'id')::uuid) AS replayed) r
    LEFT JOIN ledger.settled_late s ON s.event_id = (ev->>'id')::uuid
    ON CONFLICT (event_id) DO NOTHING
$$;

-- Replicas: as in V4, and a replayed entry keeps its link to the late event it replays
-- (which, if this region holds it too, is then settled here as well).
CREATE OR REPLACE FUNCTION ledger.try_apply(ev jsonb, OUT outcome text, OUT detail text)
LANGUAGE plpgsql AS $$
BEGIN
    IF ev->>'type' = 'AccountOpened' THEN
        outcome := ledger.apply_opened(ev);
    ELSIF ev->>'type' = 'TransferRejected' THEN
        PERFORM ledger.note_transfer(ev->'data'->'transfer');
        PERFORM pg_notify('ledger_saga', '');
        outcome := 'applied';
    ELSIF ev->>'type' = 'LateEventSettled' THEN
        INSERT INTO ledger.settled_late (event_id, status, detail, resolved_by,
                                         reconciled_seq, settled_at)
        VALUES ((ev->'data'->>'late_event')::uuid, ev->'data'->>'status',
                ev->'data'->>'detail', ev->>'origin',
                (ev->'data'->>'reconciled_seq')::bigint, clock_timestamp())
        ON CONFLICT (event_id) DO NOTHING;
        UPDATE ledger.late_events
        SET status = CASE ev->'data'->>'status' WHEN 'duplicate' THEN 'duplicate'
                                                ELSE 'replayed_elsewhere' END,
            detail = ev->'data'->>'detail', resolved_at = clock_timestamp(),
            resolved_by = ev->>'origin',
            reconciled_seq = (ev->'data'->>'reconciled_seq')::bigint
        WHERE event_id = (ev->'data'->>'late_event')::uuid AND status = 'pending';
        outcome := 'applied';
    ELSE
        outcome := ledger.apply_change(ev);
        IF outcome IN ('applied', 'superseded') AND ev->'data' ? 'transfer' THEN
            PERFORM ledger.note_transfer(ev->'data'->'transfer');
            IF ev->>'type' = 'TransferDebited' THEN
                PERFORM pg_notify('ledger_saga', '');
            END IF;
        END IF;
        IF outcome IN ('applied', 'superseded') AND ev->'data' ? 'reconciles' THEN
            UPDATE ledger.entries
            SET reconciles = (ev->'data'->>'reconciles')::uuid,
                review = coalesce((ev->'data'->>'review')::boolean, false)
            WHERE account_id = (ev->>'account')::bigint AND seq = (ev->>'seq')::bigint;
            UPDATE ledger.late_events
            SET status = 'replayed_elsewhere', resolved_at = clock_timestamp(),
                resolved_by = ev->>'origin', reconciled_seq = (ev->>'seq')::bigint
            WHERE event_id = (ev->'data'->>'reconciles')::uuid AND status = 'pending';
        END IF;
    END IF;
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR raise_exception THEN
    outcome := 'poison';
    detail := SQLERRM;
END $$;

-- Records the owner's decision on a late event, and tells every region (an
-- unsequenced LateEventSettled event), so that their copies of it are settled too.
CREATE FUNCTION ledger.settle_late(l ledger.late_events, p_status text, p_detail text,
                                   p_region text, p_seq bigint) RETURNS text
LANGUAGE sql AS $$
    UPDATE ledger.late_events
    SET status = p_status, detail = p_detail, resolved_at = clock_timestamp(),
        resolved_by = p_region, reconciled_seq = p_seq
    WHERE event_id = l.event_id;
    INSERT INTO ledger.outbox (event_id, event_type, account_id, seq, epoch, origin_region,
                               payload, created_at)
    VALUES (gen_random_uuid(), 'LateEventSettled', l.account_id, 0, l.epoch, p_region,
            jsonb_build_object('late_event', l.event_id, 'status', p_status,
                               'detail', p_detail, 'reconciled_seq', p_seq),
            clock_timestamp());
    SELECT p_status
$$;

-- Reconciles one late event at the account's current owner (this region, under its
-- lease): a new entry that references the original, or a recorded skip.
CREATE FUNCTION ledger.reconcile_one(l ledger.late_events, p_region text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    epoch bigint := ledger.lease_epoch(l.account_id);
    d jsonb := l.event->'data';
    late_kind text := l.event->'data'->>'kind';
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
    IF late_kind LIKE 'transfer_%' AND EXISTS (
        SELECT 1 FROM ledger.entries WHERE transfer_id = (d->>'transfer_id')::uuid
          AND account_id = l.account_id AND entries.kind = late_kind) THEN
        RETURN ledger.settle_late(l, 'duplicate', 'this transfer step is already booked',
                                  p_region, NULL);
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

-- One pass of the reconciler: every pending late event of an account this region holds
-- now, oldest first, each in its own subtransaction. Returns the outcomes.
CREATE FUNCTION ledger.reconcile_late(p_region text, p_limit integer)
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
        END;
        CONTINUE WHEN outcome = 'not_ours';
        event_id := l.event_id;
        RETURN NEXT;
    END LOOP;
END $$;

-- What a switchover compares between the old owner and the new one: the number of
-- accounts in the moving slots (and single accounts) and the sum of their seqs. A
-- replica never runs ahead of the home, so equal digests mean every account is equal.
CREATE FUNCTION ledger.ownership_digest(p_slots integer[], p_accounts bigint[],
                                        p_exclude bigint[])
RETURNS TABLE (accounts bigint, seq_sum numeric) LANGUAGE sql STABLE AS $$
    SELECT count(*), coalesce(sum(seq), 0)::numeric FROM ledger.accounts
    WHERE (slot = ANY(p_slots) AND NOT (id = ANY(p_exclude))) OR id = ANY(p_accounts)
$$;

-- What this region holds of `p_origin`'s recent events (applied in the last `p_since`,
-- or still waiting for a gap), in the appliers' flattened form. Before a promote the
-- survivors exchange these, so that an event one survivor holds (an ack=replicated
-- write needs only one) reaches the new owner although the dead region's topic is gone.
CREATE FUNCTION ledger.export_events(p_origin text, p_since interval) RETURNS jsonb
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
                   'data', ledger.entry_json(e),
                   'event', jsonb_build_object('data', ledger.entry_json(e), 'exported', true))
        FROM ledger.entries e
        WHERE e.origin_region = p_origin AND e.event_id IS NOT NULL
          AND e.applied_at > clock_timestamp() - p_since
        UNION ALL
        SELECT 2, p.account_id, p.seq, p.event FROM ledger.pending_events p
        WHERE p.origin_region = p_origin
    ) exported
$$;
