-- Reconciliation of late events (writes a deposed owner acknowledged): replayed, flagged
-- or recorded as duplicates by the current owner; handing them to that owner.
--
-- The current text of each function: applied with CREATE OR REPLACE after the versioned
-- migrations (which hold only DDL), so the rule that runs is the one written here.
-- Change a function here, never in a migration.

-- Records the owner's decision on a late event, and tells every region (an
-- unsequenced LateEventSettled event), so that their copies of it are settled too.
CREATE OR REPLACE FUNCTION ledger.settle_late(l ledger.late_events, p_status text, p_detail text,
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
-- lease): a new entry that references the original, or a recorded skip. Also:
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
                               -- A transfer step's replay continues the transfer's
                               -- trace (its events carry it); a deposit's has none here.
                               (d->>'transfer_id')::uuid, epoch, p_region,
                               d->'transfer'->>'traceparent', at,
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
-- now, oldest first, each in its own subtransaction. A late event whose decision fails
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

-- Pending late events old enough to hand off and not handed off recently, in the form
-- `receive_late` takes.
CREATE OR REPLACE FUNCTION ledger.late_to_hand_off(p_min_age interval, p_retry interval, p_limit integer)
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
CREATE OR REPLACE FUNCTION ledger.receive_late(p_events jsonb)
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
CREATE OR REPLACE FUNCTION ledger.note_handoff(p_event uuid, p_to text, p_status text, p_detail text,
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
