-- Applying other regions' events to replica rows (the apply rules of ARCHITECTURE.md,
-- "Replication"): in order, duplicates skipped, gaps parked, events of a deposed owner
-- kept as late events.
--
-- The current text of each function: applied with CREATE OR REPLACE after the versioned
-- migrations (which hold only DDL), so the rule that runs is the one written here.
-- Change a function here, never in a migration.

CREATE OR REPLACE FUNCTION ledger.park_event(ev jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO ledger.pending_events (account_id, seq, event_id, epoch, origin_region,
                                       event, received_at)
    VALUES ((ev->>'account')::bigint, (ev->>'seq')::bigint, (ev->>'id')::uuid,
            (ev->>'epoch')::bigint, ev->>'origin', ev, clock_timestamp())
    ON CONFLICT DO NOTHING
$$;

CREATE OR REPLACE FUNCTION ledger.apply_opened(ev jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    acct ledger.accounts;
    d jsonb := ev->'data';
BEGIN
    SELECT * INTO acct FROM ledger.accounts WHERE id = (ev->>'account')::bigint FOR UPDATE;
    IF FOUND THEN
        IF acct.opened_event_id = (ev->>'id')::uuid THEN
            RETURN 'duplicate';
        END IF;
        PERFORM ledger.store_late(ev, 'seq_taken');
        RETURN 'late';
    END IF;
    INSERT INTO ledger.accounts (id, currency, scale, balance, seq, epoch, home_region,
                                 status, created_at, updated_at, opened_event_id)
    VALUES ((ev->>'account')::bigint, d->>'currency', scale((d->>'balance')::numeric),
            (d->>'balance')::numeric, 0, (ev->>'epoch')::bigint, ev->>'origin',
            d->>'status', (d->>'created_at')::timestamptz, (d->>'updated_at')::timestamptz,
            (ev->>'id')::uuid);
    RETURN 'applied';
END $$;

-- Applies one change event (seq > 0) by the rules above. Returns the outcome.
CREATE OR REPLACE FUNCTION ledger.apply_change(ev jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    acct ledger.accounts;
    taken ledger.entries;
    d jsonb := ev->'data';
    ev_seq bigint := (ev->>'seq')::bigint;
    ev_epoch bigint := (ev->>'epoch')::bigint;
    result text := 'applied';
BEGIN
    IF (d->>'seq')::bigint IS DISTINCT FROM ev_seq
       OR (d->>'epoch')::bigint IS DISTINCT FROM ev_epoch THEN
        RAISE EXCEPTION 'envelope seq/epoch (%/%) differ from the entry''s (%/%)',
            ev_seq, ev_epoch, d->>'seq', d->>'epoch';
    END IF;
    SELECT * INTO acct FROM ledger.accounts WHERE id = (ev->>'account')::bigint FOR UPDATE;
    IF NOT FOUND OR ev_seq > acct.seq + 1 THEN
        PERFORM ledger.park_event(ev);
        RETURN 'pending';
    END IF;
    IF ev_seq <= acct.seq THEN
        SELECT * INTO taken FROM ledger.entries WHERE account_id = acct.id AND seq = ev_seq;
        IF taken.event_id = (ev->>'id')::uuid THEN
            RETURN 'duplicate';
        END IF;
        IF taken.epoch >= ev_epoch OR EXISTS (
            SELECT 1 FROM ledger.entries
            WHERE account_id = acct.id AND seq > ev_seq AND epoch > ev_epoch) THEN
            PERFORM ledger.store_late(ev, 'seq_taken');
            RETURN 'late';
        END IF;
        PERFORM ledger.supersede_from(acct, ev_seq, (ev->>'id')::uuid);
        SELECT * INTO acct FROM ledger.accounts WHERE id = acct.id;
        result := 'superseded';
    ELSIF ev_epoch < acct.epoch THEN
        PERFORM ledger.store_late(ev, 'stale_epoch');
        RETURN 'late';
    END IF;
    INSERT INTO ledger.entries (account_id, seq, epoch, kind, amount, balance, currency,
                                txn_id, reference, transfer_id, origin_region, created_at,
                                event_id, applied_at)
    VALUES (acct.id, ev_seq, ev_epoch, d->>'kind', (d->>'amount')::numeric,
            (d->>'balance')::numeric, d->>'currency', (d->>'txn_id')::uuid, d->>'reference',
            (d->>'transfer_id')::uuid, ev->>'origin', (d->>'created_at')::timestamptz,
            (ev->>'id')::uuid, clock_timestamp());
    IF d->>'kind' IN ('deposit', 'withdrawal') THEN
        INSERT INTO ledger.external_postings (txn_id, currency, amount, created_at)
        VALUES ((d->>'txn_id')::uuid, d->>'currency', -(d->>'amount')::numeric,
                (d->>'created_at')::timestamptz)
        ON CONFLICT (txn_id) DO NOTHING;
    END IF;
    UPDATE ledger.accounts
    SET balance = (d->>'balance')::numeric, seq = ev_seq, epoch = ev_epoch,
        home_region = ev->>'origin', updated_at = (d->>'created_at')::timestamptz
    WHERE id = acct.id;
    RETURN result;
END $$;

-- One event, rolled back alone when the rules cannot read its data (a data error, a
-- constraint violation, a raised exception): that is a poison event for the dead-letter
-- topic. Any other error (deadlock, serialization, connection) propagates and fails the
-- batch, so that the applier retries it whole. Saga events also move the transfer they
-- carry; TransferRejected belongs to no account's sequence; the saga worker is woken on
-- channel ledger_saga. A replayed entry keeps its link to the late event it replays
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

-- Applies a batch (a JSON array of events, in the order read) and reports one outcome per
-- event, plus one per waiting event it released.
CREATE OR REPLACE FUNCTION ledger.apply_events(p_events jsonb) RETURNS SETOF ledger.apply_outcome
LANGUAGE plpgsql AS $$
DECLARE
    ev jsonb;
    tried record;
    waiting ledger.pending_events;
BEGIN
    FOR ev IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        tried := ledger.try_apply(ev);
        RETURN NEXT ((ev->>'id')::uuid, ev->>'origin', tried.outcome, tried.detail,
                     (ev->>'time')::timestamptz, NULL::jsonb);
        CONTINUE WHEN tried.outcome NOT IN ('applied', 'superseded');
        -- Release waiting events of this account that can now be decided, oldest seq
        -- first and, at one seq, the highest epoch first.
        LOOP
            DELETE FROM ledger.pending_events p
            WHERE (p.account_id, p.seq, p.event_id) = (
                SELECT q.account_id, q.seq, q.event_id FROM ledger.pending_events q
                JOIN ledger.accounts a ON a.id = q.account_id
                WHERE q.account_id = (ev->>'account')::bigint AND q.seq <= a.seq + 1
                ORDER BY q.seq, q.epoch DESC LIMIT 1)
            RETURNING * INTO waiting;
            EXIT WHEN NOT FOUND;
            tried := ledger.try_apply(waiting.event);
            RETURN NEXT (waiting.event_id, waiting.origin_region, tried.outcome,
                         coalesce(tried.detail, 'released from waiting'),
                         (waiting.event->>'time')::timestamptz, waiting.event->'event');
        END LOOP;
    END LOOP;
END $$;

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

-- Whether this region holds an event APPLIED (an `ack: replicated` write waits until
-- some other region does). A copy waiting behind a gap does not count: with its home
-- region lost, a waiting copy can never apply if what it waits for (an earlier write,
-- or the account's opening, acknowledged with `ack: local`) was lost with the home, so
-- the acknowledged write would be stranded. Applied here means every earlier event of
-- the account is applied here too, so the whole prefix survives the home's loss.
CREATE OR REPLACE FUNCTION ledger.holds_event(p_account bigint, p_seq bigint, p_event uuid)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM ledger.entries
                   WHERE account_id = p_account AND seq = p_seq AND event_id = p_event)
        OR EXISTS (SELECT 1 FROM ledger.accounts
                   WHERE p_seq = 0 AND id = p_account AND opened_event_id = p_event)
$$;
