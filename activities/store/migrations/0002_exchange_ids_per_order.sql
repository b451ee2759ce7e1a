-- Exchange ids are not unique per exchange.
--
-- Binance numbers orders and trades per symbol, and algo orders in their own series, so
-- the same number names different orders (or trades) on two symbols, or an order and an
-- algo order. Both counterparties of a trade also see the same trade id, so two of our
-- accounts on one exchange can meet it twice. With the old keys a second order was
-- refused (the store write retried forever) and a second fill was dropped silently
-- (ON CONFLICT DO NOTHING).
--
-- Our client order id is unique by construction, so a fill is identified by its order
-- and its trade id. The exchange's order id stays indexed for look-ups, not unique.

DROP INDEX IF EXISTS orders_exchange_id_idx;
CREATE INDEX orders_exchange_id_idx ON orders (account, exchange, symbol, exchange_order_id)
    WHERE exchange_order_id IS NOT NULL;

ALTER TABLE fills DROP CONSTRAINT fills_pkey;
ALTER TABLE fills ADD PRIMARY KEY (client_order_id, trade_id);
CREATE INDEX fills_trade_idx ON fills (exchange, trade_id);
DROP INDEX IF EXISTS fills_order_idx;  -- the new key starts with client_order_id
