-- What the failover tool compares and moves: the ownership digest of a scope, and the
-- export of a dead region's recent events for the promote exchange.
--
-- The current text of each function: applied with CREATE OR REPLACE after the versioned
-- migrations (which hold only DDL), so the rule that runs is the one written here.
-- Change a function here, never in a migration.

-- What a switchover compares between the old owner and the new one: the number of
-- accounts in the moving slots (and single accounts) and the sum of their seqs. A
-- replica never runs ahead of the home, so equal digests mean every account is equal.
CREATE OR REPLACE FUNCTION ledger.ownership_digest(p_slots integer[], p_accounts bigint[],
                                        p_exclude bigint[])
RETURNS TABLE (accounts bigint, seq_sum numeric) LANGUAGE sql STABLE AS $$
    SELECT count(*), coalesce(sum(seq), 0)::numeric FROM ledger.accounts
    WHERE (slot = ANY(p_slots) AND NOT (id = ANY(p_exclude))) OR id = ANY(p_accounts)
$$;

-- What this region holds of `p_origin`'s recent events (applied in the last `p_since`,
-- or still waiting for a gap), in the appliers' flattened form, one page at a time:
-- the rows after the cursor (ord, account, seq, event id), at most `p_limit`. Before a promote
-- the survivors exchange these, so that an event one survivor holds (an ack=replicated
-- write needs only one) reaches the new owner although the dead region's topic is gone.
-- Each saga entry's transfer is attached (as the original event carried it). An
-- entry's `event` (what a late or pending copy stores) does not repeat its data: the
-- importer puts `data` back in (region-node, failover import).
CREATE OR REPLACE FUNCTION ledger.export_events(
    p_origin text, p_since interval, p_after_ord integer, p_after_account bigint,
    p_after_seq bigint, p_after_id uuid, p_limit integer
) RETURNS TABLE (ord integer, account bigint, seq bigint, id uuid, event jsonb)
LANGUAGE sql STABLE AS $$
    SELECT ord, account, seq, id, ev FROM (
        SELECT 0 AS ord, a.id AS account, 0::bigint AS seq, a.opened_event_id AS id,
               jsonb_build_object(
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
        SELECT 1, e.account_id, e.seq, e.event_id, jsonb_build_object(
                   'id', e.event_id, 'type', ledger.event_type_of(e.kind),
                   'account', e.account_id, 'seq', e.seq, 'epoch', e.epoch,
                   'origin', e.origin_region, 'time', ledger.ts_text(e.created_at),
                   'data', ledger.entry_json(e) || ledger.carried_transfer(e.transfer_id),
                   'event', jsonb_build_object('exported', true))
        FROM ledger.entries e
        WHERE e.origin_region = p_origin AND e.event_id IS NOT NULL
          AND e.applied_at > clock_timestamp() - p_since
        UNION ALL
        SELECT 2, p.account_id, p.seq, p.event_id, p.event FROM ledger.pending_events p
        WHERE p.origin_region = p_origin
    ) exported
    WHERE (ord, account, seq, id) > (p_after_ord, p_after_account, p_after_seq, p_after_id)
    ORDER BY ord, account, seq, id
    LIMIT p_limit
$$;
