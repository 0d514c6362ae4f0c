-- The ledger of one region: accounts (home rows and, later, replica rows), their
-- entries, double-entry counter lines, transfers, idempotency records, the outbox, and
-- the slot leases this region holds. Every write runs as ONE call of a function below,
-- so one round trip, and the lease check is the last statement before COMMIT, on the
-- database's clock (DESIGN.md, "The single-writer rule").
--
-- Errors raised for the API use SQLSTATE 'LDnnn' (nnn = HTTP status), MESSAGE = the
-- problem slug (ledger-wire's ProblemType) and DETAIL = a human sentence.

CREATE SCHEMA ledger;

CREATE TABLE ledger.accounts (
    id          bigint PRIMARY KEY CHECK (id >= 0),
    slot        integer GENERATED ALWAYS AS ((id >> 48)::integer) STORED,
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    scale       smallint NOT NULL CHECK (scale BETWEEN 0 AND 4),
    balance     numeric NOT NULL,
    seq         bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),
    epoch       bigint NOT NULL CHECK (epoch >= 0),
    home_region text NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX accounts_by_slot ON ledger.accounts (slot);

-- One row per committed change of one account; (account_id, seq) is the single-writer
-- invariant as a constraint.
CREATE TABLE ledger.entries (
    account_id    bigint NOT NULL REFERENCES ledger.accounts (id),
    seq           bigint NOT NULL CHECK (seq > 0),
    epoch         bigint NOT NULL,
    kind          text NOT NULL
                  CHECK (kind IN ('deposit', 'withdrawal', 'transfer_debit', 'transfer_credit')),
    amount        numeric NOT NULL,
    balance       numeric NOT NULL,
    currency      text NOT NULL,
    txn_id        uuid NOT NULL,
    reference     text,
    transfer_id   uuid,
    origin_region text NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (account_id, seq)
);

-- The counter line of money entering or leaving the ledger (deposits, withdrawals).
-- Per txn_id, entries.amount plus external_postings.amount sums to zero.
CREATE TABLE ledger.external_postings (
    txn_id     uuid PRIMARY KEY,
    currency   text NOT NULL,
    amount     numeric NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE ledger.transfers (
    id           uuid PRIMARY KEY,
    from_account bigint NOT NULL,
    to_account   bigint NOT NULL,
    amount       numeric NOT NULL CHECK (amount > 0),
    currency     text NOT NULL,
    state        text NOT NULL CHECK (state IN ('debited', 'completed', 'refunded')),
    reference    text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE TABLE ledger.idempotency_keys (
    key         text PRIMARY KEY,
    fingerprint bytea NOT NULL,
    status      integer,
    response    jsonb,
    created_at  timestamptz NOT NULL
);

CREATE TABLE ledger.outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid NOT NULL,
    event_type    text NOT NULL,
    account_id    bigint NOT NULL,
    seq           bigint NOT NULL,
    epoch         bigint NOT NULL,
    origin_region text NOT NULL,
    payload       jsonb NOT NULL,
    traceparent   text,
    created_at    timestamptz NOT NULL,
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON ledger.outbox (id) WHERE published_at IS NULL;

-- The slots this region may write, with their epochs, and until when (database clock).
CREATE TABLE ledger.slot_leases (
    slot       integer PRIMARY KEY,
    epoch      bigint NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TYPE ledger.write_result AS (status integer, body jsonb, replayed boolean);

-- Rendering: the one place the JSON of accounts, entries and transfers is defined, so a
-- write's answer, its stored idempotent replay and later reads are byte-for-byte alike.

CREATE FUNCTION ledger.account_id_text(p_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'ac_' || lpad(to_hex(p_id >> 48), 4, '0')
        || '_' || lpad(to_hex(p_id & 281474976710655), 12, '0')
$$;

-- Timestamps as the API writes them (ledger-wire's timestamp module): UTC, microseconds, Z.
CREATE FUNCTION ledger.ts_text(p_at timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION ledger.account_json(a ledger.accounts) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', ledger.account_id_text(a.id), 'currency', a.currency,
        'balance', a.balance::text, 'seq', a.seq, 'epoch', a.epoch,
        'home_region', a.home_region, 'slot', a.slot, 'status', a.status,
        'created_at', ledger.ts_text(a.created_at), 'updated_at', ledger.ts_text(a.updated_at))
$$;

CREATE FUNCTION ledger.entry_json(e ledger.entries) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'account_id', ledger.account_id_text(e.account_id), 'seq', e.seq, 'epoch', e.epoch,
        'kind', e.kind, 'amount', e.amount::text, 'balance', e.balance::text,
        'currency', e.currency, 'txn_id', e.txn_id, 'reference', e.reference,
        'transfer_id', e.transfer_id, 'origin_region', e.origin_region,
        'created_at', ledger.ts_text(e.created_at))
$$;

CREATE FUNCTION ledger.transfer_json(t ledger.transfers) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', t.id, 'from', ledger.account_id_text(t.from_account),
        'to', ledger.account_id_text(t.to_account), 'amount', t.amount::text,
        'currency', t.currency, 'state', t.state, 'reference', t.reference,
        'created_at', ledger.ts_text(t.created_at), 'updated_at', ledger.ts_text(t.updated_at))
$$;

CREATE FUNCTION ledger.problem(p_slug text, p_title text, p_status integer, p_detail text)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('type', '/problems/' || p_slug, 'title', p_title,
                              'status', p_status, 'detail', p_detail)
$$;

-- Building blocks of every write.

-- Claims an idempotency key for this transaction. Returns NULL when claimed; returns the
-- stored answer when an earlier request with the same fingerprint committed. A racing
-- request with the same key blocks on the unique index until the first one finishes.
CREATE FUNCTION ledger.claim_key(p_key text, p_fingerprint bytea)
RETURNS ledger.idempotency_keys LANGUAGE plpgsql AS $$
DECLARE
    prior ledger.idempotency_keys;
BEGIN
    INSERT INTO ledger.idempotency_keys (key, fingerprint, created_at)
    VALUES (p_key, p_fingerprint, clock_timestamp())
    ON CONFLICT (key) DO NOTHING;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO prior FROM ledger.idempotency_keys WHERE key = p_key;
    IF prior.fingerprint <> p_fingerprint THEN
        RAISE EXCEPTION USING ERRCODE = 'LD422', MESSAGE = 'idempotency-key-reused',
            DETAIL = 'this Idempotency-Key was already used with a different request';
    END IF;
    RETURN prior;
END $$;

CREATE FUNCTION ledger.finish_key(p_key text, p_result ledger.write_result)
RETURNS ledger.write_result LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger.idempotency_keys SET status = p_result.status, response = p_result.body
    WHERE key = p_key;
    RETURN p_result;
END $$;

-- The region may write slot p_slot at epoch p_epoch only while it holds that lease.
CREATE FUNCTION ledger.check_lease(p_slot integer, p_epoch bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    held ledger.slot_leases;
BEGIN
    SELECT * INTO held FROM ledger.slot_leases WHERE slot = p_slot;
    IF NOT FOUND OR held.epoch <> p_epoch THEN
        RAISE EXCEPTION USING ERRCODE = 'LD503', MESSAGE = 'not-owner',
            DETAIL = format('this region does not hold slot %s at epoch %s', p_slot, p_epoch);
    END IF;
    IF held.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION USING ERRCODE = 'LD503', MESSAGE = 'not-owner',
            DETAIL = format('the lease on slot %s ran out at %s', p_slot, held.expires_at);
    END IF;
END $$;

-- Locks an account row for a write at p_epoch; refuses unknown accounts and writes from
-- an owner older than the row's last writer.
CREATE FUNCTION ledger.lock_account(p_id bigint, p_epoch bigint, p_role text)
RETURNS ledger.accounts LANGUAGE plpgsql AS $$
DECLARE
    acct ledger.accounts;
BEGIN
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

-- An amount at the currency's scale; refuses amounts with more significant decimals.
CREATE FUNCTION ledger.at_scale(p_amount numeric, p_scale smallint)
RETURNS numeric LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF round(p_amount, p_scale) <> p_amount THEN
        RAISE EXCEPTION USING ERRCODE = 'LD422', MESSAGE = 'amount-scale',
            DETAIL = format('amount %s has more than %s decimals', p_amount, p_scale);
    END IF;
    RETURN round(p_amount, p_scale);
END $$;

CREATE FUNCTION ledger.insufficient_funds(acct ledger.accounts, p_amount numeric)
RETURNS ledger.write_result LANGUAGE sql IMMUTABLE AS $$
    SELECT (409, ledger.problem('insufficient-funds', 'Insufficient funds', 409,
            format('balance %s %s is less than %s', acct.balance, acct.currency, p_amount)),
            false)::ledger.write_result
$$;

-- Applies a signed change to a locked account: balance, seq + 1, epoch, one entry and
-- one outbox event. Returns the entry.
CREATE FUNCTION ledger.book(
    acct ledger.accounts, p_delta numeric, p_kind text, p_event_type text, p_txn uuid,
    p_reference text, p_transfer uuid, p_epoch bigint, p_region text, p_traceparent text,
    p_at timestamptz
) RETURNS ledger.entries LANGUAGE plpgsql AS $$
DECLARE
    entry ledger.entries;
BEGIN
    UPDATE ledger.accounts
    SET balance = balance + p_delta, seq = seq + 1, epoch = p_epoch, updated_at = p_at
    WHERE id = acct.id
    RETURNING * INTO acct;
    INSERT INTO ledger.entries (account_id, seq, epoch, kind, amount, balance, currency,
                                txn_id, reference, transfer_id, origin_region, created_at)
    VALUES (acct.id, acct.seq, p_epoch, p_kind, p_delta, acct.balance, acct.currency,
            p_txn, p_reference, p_transfer, p_region, p_at)
    RETURNING * INTO entry;
    INSERT INTO ledger.outbox (event_id, event_type, account_id, seq, epoch, origin_region,
                               payload, traceparent, created_at)
    VALUES (gen_random_uuid(), p_event_type, acct.id, acct.seq, p_epoch, p_region,
            ledger.entry_json(entry), p_traceparent, p_at);
    RETURN entry;
END $$;

-- The writes of the public API.

CREATE FUNCTION ledger.create_account(
    p_key text, p_fingerprint bytea, p_id bigint, p_currency text, p_scale smallint,
    p_epoch bigint, p_region text, p_traceparent text
) RETURNS ledger.write_result LANGUAGE plpgsql AS $$
DECLARE
    prior ledger.idempotency_keys;
    acct ledger.accounts;
    at timestamptz := clock_timestamp();
    body jsonb;
BEGIN
    prior := ledger.claim_key(p_key, p_fingerprint);
    IF prior.key IS NOT NULL THEN
        RETURN (prior.status, prior.response, true);
    END IF;
    INSERT INTO ledger.accounts (id, currency, scale, balance, seq, epoch, home_region,
                                 created_at, updated_at)
    VALUES (p_id, p_currency, p_scale, round(0::numeric, p_scale), 0, p_epoch, p_region, at, at)
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO acct;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'LD409', MESSAGE = 'account-id-collision',
            DETAIL = 'the randomly chosen account id is taken; choose another';
    END IF;
    body := ledger.account_json(acct);
    INSERT INTO ledger.outbox (event_id, event_type, account_id, seq, epoch, origin_region,
                               payload, traceparent, created_at)
    VALUES (gen_random_uuid(), 'AccountOpened', acct.id, 0, p_epoch, p_region, body,
            p_traceparent, at);
    PERFORM ledger.finish_key(p_key, (201, body, false));
    PERFORM ledger.check_lease(acct.slot, p_epoch);
    RETURN (201, body, false);
END $$;

-- A deposit (p_kind = 'deposit') or a withdrawal (p_kind = 'withdrawal').
CREATE FUNCTION ledger.post_entry(
    p_key text, p_fingerprint bytea, p_kind text, p_account bigint, p_amount numeric,
    p_reference text, p_epoch bigint, p_region text, p_traceparent text
) RETURNS ledger.write_result LANGUAGE plpgsql AS $$
DECLARE
    prior ledger.idempotency_keys;
    acct ledger.accounts;
    amount numeric;
    delta numeric;
    txn uuid := gen_random_uuid();
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

-- A transfer between two accounts whose home is this region: one transaction, both
-- rows locked in id order so that concurrent opposite transfers cannot deadlock.
CREATE FUNCTION ledger.post_transfer(
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
    IF src.balance < amount THEN
        result := ledger.insufficient_funds(src, amount);
    ELSE
        INSERT INTO ledger.transfers (id, from_account, to_account, amount, currency, state,
                                      reference, created_at, updated_at)
        VALUES (gen_random_uuid(), src.id, dst.id, amount, src.currency, 'completed',
                p_reference, at, at)
        RETURNING * INTO transfer;
        PERFORM ledger.book(src, -amount, 'transfer_debit', 'TransferDebited', txn,
                            p_reference, transfer.id, p_from_epoch, p_region, p_traceparent, at);
        PERFORM ledger.book(dst, amount, 'transfer_credit', 'TransferCredited', txn,
                            p_reference, transfer.id, p_to_epoch, p_region, p_traceparent, at);
        result := (201, ledger.transfer_json(transfer), false);
    END IF;
    PERFORM ledger.finish_key(p_key, result);
    PERFORM ledger.check_lease(src.slot, p_from_epoch);
    PERFORM ledger.check_lease(dst.slot, p_to_epoch);
    RETURN result;
END $$;
