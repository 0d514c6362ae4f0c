-- The single-writer rule in the database: the lease this region recorded (slot and
-- account leases, accounts away) checked as the last statement of every write, and the
-- epoch a write may use now.
--
-- The current text of each function: applied with CREATE OR REPLACE after the versioned
-- migrations (which hold only DDL), so the rule that runs is the one written here.
-- Change a function here, never in a migration.

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

-- The epoch at which this region may write `p_account` right now, or NULL.
CREATE OR REPLACE FUNCTION ledger.lease_epoch(p_account bigint) RETURNS bigint
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
