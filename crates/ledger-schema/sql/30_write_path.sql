-- The write path: idempotency records, locking an account at its epoch, booking an entry
-- with its outbox row, opening accounts, deposits, withdrawals and same-region
-- transfers.
--
-- The current text of each function: applied with CREATE OR REPLACE after the versioned
-- migrations (which hold only DDL), so the rule that runs is the one written here.
-- Change a function here, never in a migration.

-- Building blocks of every write.

-- Claims an idempotency key for this transaction. Returns NULL when claimed; returns the
-- stored answer when an earlier request with the same fingerprint committed. A racing
-- request with the same key blocks on the unique index until the first one finishes.
CREATE OR REPLACE FUNCTION ledger.claim_key(p_key text, p_fingerprint bytea)
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

CREATE OR REPLACE FUNCTION ledger.finish_key(p_key text, p_result ledger.write_result)
RETURNS ledger.write_result LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger.idempotency_keys SET status = p_result.status, response = p_result.body
    WHERE key = p_key;
    RETURN p_result;
END $$;

-- Locks an account row for a write at p_epoch; refuses unknown accounts, writes from an
-- owner older than the row's last writer, accounts homed elsewhere by override, and an
-- account homed here by override written at any epoch but its own.
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

CREATE OR REPLACE FUNCTION ledger.insufficient_funds(acct ledger.accounts, p_amount numeric)
RETURNS ledger.write_result LANGUAGE sql IMMUTABLE AS $$
    SELECT (409, ledger.problem('insufficient-funds', 'Insufficient funds', 409,
            format('balance %s %s is less than %s', acct.balance, acct.currency, p_amount)),
            false)::ledger.write_result
$$;

-- Applies a signed change to a locked account: balance, seq + 1, epoch, one entry and
-- one outbox event, the event id chosen once and written both to the outbox and to the
-- row it describes (ledger.book_event, 50_saga.sql, with nothing merged). Returns the entry.
CREATE OR REPLACE FUNCTION ledger.book(
    acct ledger.accounts, p_delta numeric, p_kind text, p_event_type text, p_txn uuid,
    p_reference text, p_transfer uuid, p_epoch bigint, p_region text, p_traceparent text,
    p_at timestamptz
) RETURNS ledger.entries LANGUAGE sql AS $$
    SELECT ledger.book_event(acct, p_delta, p_kind, p_event_type, p_txn, p_reference,
                             p_transfer, p_epoch, p_region, p_traceparent, p_at, NULL)
$$;

-- Opens an account at this region (its home), with its AccountOpened event.
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

-- A deposit (p_kind = 'deposit') or a withdrawal (p_kind = 'withdrawal'), with the txn
-- id derived from the key; a retry of a request some other region already wrote (and
-- this one holds as a replica) is answered as a replay.
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

-- A transfer between two accounts homed here: one transaction, both rows locked in id
-- order so that concurrent opposite transfers cannot deadlock, the id from the key, and
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
                                      reference, created_at, updated_at, traceparent)
        VALUES (ledger.transfer_of_key(p_key), src.id, dst.id, amount, src.currency,
                'completed', p_reference, at, at, p_traceparent)
        RETURNING * INTO transfer;
        carried := jsonb_build_object('transfer', ledger.transfer_event_json(transfer));
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

-- The transfer this region already knows under the key's id: a replay answer, or a
-- refusal when the key was used for a different transfer. NULL when unknown here.
CREATE OR REPLACE FUNCTION ledger.known_transfer(p_key text, p_from bigint, p_to bigint,
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
