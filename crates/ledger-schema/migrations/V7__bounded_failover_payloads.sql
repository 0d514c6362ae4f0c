-- Bounded failover payloads: the promote exchange reads a dead region's recent events a
-- page at a time (ledger.export_events now takes a cursor and a limit, 70_failover.sql),
-- instead of five minutes of events in one JSON document. CREATE OR REPLACE cannot
-- change a function's arguments, so the old form is dropped here.
DROP FUNCTION IF EXISTS ledger.export_events(text, interval);
