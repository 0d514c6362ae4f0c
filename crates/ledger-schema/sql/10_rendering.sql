-- Rendering and pure helpers: ids, timestamps, JSON of accounts, entries and transfers,
-- problem details, deterministic ids derived from idempotency keys.
--
-- The current text of each function: applied with CREATE OR REPLACE after the versioned
-- migrations (which hold only DDL), so the rule that runs is the one written here.
-- Change a function here, never in a migration.

-- Rendering: the one place the JSON of accounts, entries and transfers is defined, so a
-- write's answer, its stored idempotent replay and later reads are byte-for-byte alike.

CREATE OR REPLACE FUNCTION ledger.account_id_text(p_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'ac_' || lpad(to_hex(p_id >> 48), 4, '0')
        || '_' || lpad(to_hex(p_id & 281474976710655), 12, '0')
$$;

-- Timestamps as the API writes them (ledger-wire's timestamp module): UTC, microseconds, Z.
CREATE OR REPLACE FUNCTION ledger.ts_text(p_at timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE OR REPLACE FUNCTION ledger.account_json(a ledger.accounts) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', ledger.account_id_text(a.id), 'currency', a.currency,
        'balance', a.balance::text, 'seq', a.seq, 'epoch', a.epoch,
        'home_region', a.home_region, 'slot', a.slot, 'status', a.status,
        'created_at', ledger.ts_text(a.created_at), 'updated_at', ledger.ts_text(a.updated_at))
$$;

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

CREATE OR REPLACE FUNCTION ledger.transfer_json(t ledger.transfers) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'id', t.id, 'from', ledger.account_id_text(t.from_account),
        'to', ledger.account_id_text(t.to_account), 'amount', t.amount::text,
        'currency', t.currency, 'state', t.state, 'reason', t.reason))
        || jsonb_build_object('reference', t.reference,
        'created_at', ledger.ts_text(t.created_at), 'updated_at', ledger.ts_text(t.updated_at))
$$;

-- A transfer as its events carry it: the API's body plus the trace context of the
-- request that started it, which the regions taking its later steps continue.
CREATE OR REPLACE FUNCTION ledger.transfer_event_json(t ledger.transfers) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT ledger.transfer_json(t) || jsonb_strip_nulls(jsonb_build_object('traceparent', t.traceparent))
$$;

CREATE OR REPLACE FUNCTION ledger.problem(p_slug text, p_title text, p_status integer, p_detail text)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('type', '/problems/' || p_slug, 'title', p_title,
                              'status', p_status, 'detail', p_detail)
$$;

-- An amount at the currency's scale; refuses amounts with more significant decimals.
CREATE OR REPLACE FUNCTION ledger.at_scale(p_amount numeric, p_scale smallint)
RETURNS numeric LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF round(p_amount, p_scale) <> p_amount THEN
        RAISE EXCEPTION USING ERRCODE = 'LD422', MESSAGE = 'amount-scale',
            DETAIL = format('amount %s has more than %s decimals', p_amount, p_scale);
    END IF;
    RETURN round(p_amount, p_scale);
END $$;

-- The bigint of an account's public id (`ac_ssss_llllllllllll`).
CREATE OR REPLACE FUNCTION ledger.account_id_value(p_text text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (('x' || lpad(substr(p_text, 4, 4), 16, '0'))::bit(64)::bigint << 48)
         | ('x' || lpad(substr(p_text, 9, 12), 16, '0'))::bit(64)::bigint
$$;

CREATE OR REPLACE FUNCTION ledger.event_type_of(p_kind text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_kind WHEN 'deposit' THEN 'Deposited' WHEN 'withdrawal' THEN 'Withdrawn'
                       WHEN 'transfer_debit' THEN 'TransferDebited'
                       WHEN 'transfer_credit' THEN 'TransferCredited'
                       WHEN 'transfer_refund' THEN 'TransferRefunded' END
$$;

-- A deposit's or withdrawal's transaction id is derived from its Idempotency-Key, so the
-- same request retried in another region after a failover carries the same txn_id as the
-- original: a replica that already holds the original answers the retry as a replay, and
-- reconciliation skips a late original whose retry was already written.
CREATE OR REPLACE FUNCTION ledger.txn_of_key(p_key text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT md5('ledger-txn:' || p_key)::uuid
$$;

-- A transfer's id is derived from its Idempotency-Key, as a deposit's txn id is
-- (`txn_of_key`): the same request retried in any region, before or after a promote,
-- names the same transfer. The region that books it finds the transfer already known
-- (as a replica of the original) and answers a replay; where the original is late, its
-- debit is recognised by reconciliation as this transfer's step, already booked.
CREATE OR REPLACE FUNCTION ledger.transfer_of_key(p_key text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT md5('ledger-transfer:' || p_key)::uuid
$$;
