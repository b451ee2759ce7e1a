-- Orders posguard did not place that closed one of its positions: the exchange's
-- liquidation ('liquidation') or an order placed by hand ('outside'). They are
-- recorded with their executions so that a position's fills add up to what the
-- exchange booked (client_order_id is the exchange's, or 'outside-<order id>').
ALTER TABLE orders DROP CONSTRAINT orders_kind_check;
ALTER TABLE orders ADD CONSTRAINT orders_kind_check
    CHECK (kind IN ('entry', 'stop', 'emergency_stop', 'close', 'take_profit',
                    'outside', 'liquidation'));

-- Funding received (+) or paid (-) while a position was held, booked at its close.
ALTER TABLE positions ADD COLUMN funding numeric NOT NULL DEFAULT 0;
