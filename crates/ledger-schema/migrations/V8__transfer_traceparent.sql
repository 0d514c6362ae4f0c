-- The W3C trace context of the request that started a transfer, kept with the transfer
-- and carried in its events, so that the steps other regions take later (the credit,
-- a rejection, a refund) continue the request's trace instead of starting none.
ALTER TABLE ledger.transfers ADD COLUMN IF NOT EXISTS traceparent text;
