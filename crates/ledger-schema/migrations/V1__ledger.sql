-- The ledger of one region: accounts (home rows and replica rows), their
-- entries, double-entry counter lines, transfers, idempotency records, the outbox, and
-- the slot leases this region holds. Every write runs as ONE call of a ledger.* function
-- (their current text: ../sql/),
-- so one round trip, and the lease check is the last statement before COMMIT, on the
-- database's clock (ARCHITECTURE.md, "The single-writer rule").
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
