-- The order journal: every order posguard sends is recorded here BEFORE it is sent,
-- by the placement activity (domain/journal.py). No foreign key to positions: the
-- position row is written by the workflow's own store writes, which may come later.
-- A client id is journaled once; its first intent is the only one it may carry.
CREATE TABLE order_journal (
    client_order_id text PRIMARY KEY,
    position_id     text NOT NULL,
    workflow_id     text NOT NULL,
    account         text NOT NULL,
    exchange        text NOT NULL,
    symbol          text NOT NULL,
    kind            text NOT NULL
                    CHECK (kind IN ('entry', 'stop', 'emergency_stop', 'close', 'take_profit')),
    side            text NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity        numeric NOT NULL CHECK (quantity > 0),
    trigger_price   numeric,
    reduce_only     boolean NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_journal_position_idx ON order_journal (position_id);
CREATE INDEX order_journal_symbol_idx ON order_journal (account, exchange, symbol, recorded_at);
