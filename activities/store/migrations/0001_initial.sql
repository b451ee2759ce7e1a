-- posguard schema, version 1.
-- Money and quantities are NUMERIC (never float). updated_at is kept by trigger.
-- The events table is partitioned by month; see posguard_ensure_event_partitions().

CREATE OR REPLACE FUNCTION posguard_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- A wave: the signals of one scoring period, selected together at its deadline.
CREATE TABLE waves (
    id              text PRIMARY KEY,
    period_start    timestamptz NOT NULL,
    deadline        timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'collecting'
                    CHECK (status IN ('collecting', 'processing', 'processed', 'failed')),
    signals_received integer NOT NULL DEFAULT 0,
    signals_selected integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER waves_touch BEFORE UPDATE ON waves
    FOR EACH ROW EXECUTE FUNCTION posguard_touch_updated_at();

-- A trading signal, stored (unique id) before it is acknowledged.
CREATE TABLE signals (
    id              text PRIMARY KEY,
    wave_id         text REFERENCES waves (id) ON DELETE SET NULL,
    exchange        text NOT NULL,
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('long', 'short')),
    score_week      numeric,
    score_month     numeric,
    status          text NOT NULL DEFAULT 'received'
                    CHECK (status IN ('received', 'validated', 'rejected', 'filtered',
                                      'selected', 'opened', 'expired')),
    reason          text,
    raw             jsonb NOT NULL,
    received_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX signals_wave_idx ON signals (wave_id);
CREATE INDEX signals_status_received_idx ON signals (status, received_at);
CREATE INDEX signals_symbol_idx ON signals (exchange, symbol, received_at);
CREATE TRIGGER signals_touch BEFORE UPDATE ON signals
    FOR EACH ROW EXECUTE FUNCTION posguard_touch_updated_at();

-- A position: one lifecycle of one PositionWorkflow chain.
CREATE TABLE positions (
    id              text PRIMARY KEY,            -- position id (workflow id + first run id)
    workflow_id     text NOT NULL,
    account         text NOT NULL,
    exchange        text NOT NULL,
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('long', 'short')),
    status          text NOT NULL
                    CHECK (status IN ('pending_entry', 'entry_placed', 'pending_sl', 'active',
                                      'closing', 'closed', 'rolled_back', 'failed')),
    signal_id       text REFERENCES signals (id) ON DELETE SET NULL,
    adopted         boolean NOT NULL DEFAULT false,
    requested_qty   numeric CHECK (requested_qty IS NULL OR requested_qty > 0),
    quantity        numeric NOT NULL DEFAULT 0 CHECK (quantity >= 0),
    entry_price     numeric CHECK (entry_price IS NULL OR entry_price > 0),
    stop_price      numeric CHECK (stop_price IS NULL OR stop_price > 0),
    stop_order_id   text,
    trailing_active boolean NOT NULL DEFAULT false,
    exit_price      numeric,
    realized_pnl    numeric NOT NULL DEFAULT 0,
    fees            numeric NOT NULL DEFAULT 0,
    exit_reason     text,
    opened_at       timestamptz,
    closed_at       timestamptz,
    -- Monotonic version from the owning workflow: an older write never overwrites a newer one.
    revision        bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX positions_status_idx ON positions (status);
CREATE INDEX positions_exchange_symbol_status_idx ON positions (exchange, symbol, status);
CREATE INDEX positions_workflow_idx ON positions (workflow_id);
-- Defence in depth behind Temporal's one-workflow-per-id: one live position per key.
CREATE UNIQUE INDEX positions_one_live_per_key ON positions (account, exchange, symbol, side)
    WHERE status NOT IN ('closed', 'rolled_back');
CREATE TRIGGER positions_touch BEFORE UPDATE ON positions
    FOR EACH ROW EXECUTE FUNCTION posguard_touch_updated_at();

-- Every order posguard placed (client order id is ours and deterministic).
CREATE TABLE orders (
    client_order_id   text PRIMARY KEY,
    position_id       text NOT NULL REFERENCES positions (id) ON DELETE CASCADE,
    exchange_order_id text,
    account           text NOT NULL,
    exchange          text NOT NULL,
    symbol            text NOT NULL,
    kind              text NOT NULL
                      CHECK (kind IN ('entry', 'stop', 'emergency_stop', 'close', 'take_profit')),
    side              text NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type        text NOT NULL,
    status            text NOT NULL
                      CHECK (status IN ('pending', 'open', 'partially_filled', 'filled',
                                        'canceled', 'expired', 'rejected', 'unknown')),
    quantity          numeric NOT NULL CHECK (quantity > 0),
    filled_quantity   numeric NOT NULL DEFAULT 0 CHECK (filled_quantity >= 0),
    trigger_price     numeric,
    average_price     numeric,
    reduce_only       boolean NOT NULL DEFAULT false,
    revision          bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_position_idx ON orders (position_id);
CREATE INDEX orders_open_idx ON orders (exchange, symbol) WHERE status IN ('pending', 'open', 'partially_filled');
CREATE UNIQUE INDEX orders_exchange_id_idx ON orders (exchange, exchange_order_id)
    WHERE exchange_order_id IS NOT NULL;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION posguard_touch_updated_at();

-- Executions (trades) of our orders; the trade id comes from the exchange.
CREATE TABLE fills (
    exchange          text NOT NULL,
    trade_id          text NOT NULL,
    client_order_id   text NOT NULL REFERENCES orders (client_order_id) ON DELETE CASCADE,
    position_id       text NOT NULL REFERENCES positions (id) ON DELETE CASCADE,
    price             numeric NOT NULL CHECK (price > 0),
    quantity          numeric NOT NULL CHECK (quantity > 0),
    fee               numeric NOT NULL DEFAULT 0,
    fee_asset         text,
    realized_pnl      numeric NOT NULL DEFAULT 0,
    filled_at         timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, trade_id)
);
CREATE INDEX fills_position_idx ON fills (position_id, filled_at);
CREATE INDEX fills_order_idx ON fills (client_order_id);

-- The append-only event log, partitioned by month of occurred_at.
-- No foreign keys here on purpose: the log must accept a fact even when the row
-- it describes is missing (an adopted position, a phantom, a rejected signal).
CREATE TABLE events (
    event_id        text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    type            text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('debug', 'info', 'warning', 'error', 'critical')),
    correlation_id  text,
    position_id     text,
    account         text,
    exchange        text,
    symbol          text,
    order_id        text,
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    error_message   text,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
-- Catches anything outside the created months, so no event is ever refused.
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE INDEX events_position_idx ON events (position_id, occurred_at);
CREATE INDEX events_symbol_idx ON events (symbol, occurred_at);
CREATE INDEX events_type_idx ON events (type, occurred_at);
CREATE INDEX events_severity_idx ON events (severity, occurred_at);
CREATE INDEX events_occurred_idx ON events (occurred_at);
CREATE INDEX events_correlation_idx ON events (correlation_id, occurred_at);

-- Global uniqueness of event ids. A partitioned table's primary key must contain
-- the partition key, so it alone cannot refuse the same id with another time.
CREATE TABLE event_ids (
    event_id    text PRIMARY KEY,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX event_ids_occurred_idx ON event_ids (occurred_at);

-- Alerts raised to humans (and whether someone acknowledged them).
CREATE TABLE alerts (
    id              bigserial PRIMARY KEY,
    event_id        text NOT NULL UNIQUE,
    severity        text NOT NULL CHECK (severity IN ('debug', 'info', 'warning', 'error', 'critical')),
    title           text NOT NULL,
    body            text NOT NULL,
    position_id     text,
    channel         text NOT NULL DEFAULT 'log',
    created_at      timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    acknowledged_by text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alerts_open_idx ON alerts (severity, created_at) WHERE acknowledged_at IS NULL;
CREATE TRIGGER alerts_touch BEFORE UPDATE ON alerts
    FOR EACH ROW EXECUTE FUNCTION posguard_touch_updated_at();

-- Create monthly partitions of events from the month of `from_ts` for `months` months.
CREATE OR REPLACE FUNCTION posguard_ensure_event_partitions(from_ts timestamptz, months integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    created integer := 0;
    m date;
    name text;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        m := (date_trunc('month', from_ts AT TIME ZONE 'UTC') + make_interval(months => i))::date;
        name := format('events_%s', to_char(m, 'YYYY_MM'));
        IF to_regclass(name) IS NULL THEN
            -- Rows of that month already in the default partition must move first.
            EXECUTE format(
                'CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
            EXECUTE format(
                'WITH moved AS (DELETE FROM events_default WHERE occurred_at >= %L AND occurred_at < %L RETURNING *) '
                'INSERT INTO %I SELECT * FROM moved',
                m::timestamp AT TIME ZONE 'UTC', (m + interval '1 month')::timestamp AT TIME ZONE 'UTC', name);
            EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                name, m::timestamp AT TIME ZONE 'UTC', (m + interval '1 month')::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

-- Drop monthly partitions entirely older than `keep`; returns how many were dropped.
CREATE OR REPLACE FUNCTION posguard_drop_event_partitions(keep interval)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    dropped integer := 0;
    part record;
    cutoff timestamptz := now() - keep;
BEGIN
    FOR part IN
        SELECT c.relname AS name
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'events' AND c.relname ~ '^events_[0-9]{4}_[0-9]{2}$'
    LOOP
        IF (to_date(substr(part.name, 8), 'YYYY_MM') + interval '1 month') AT TIME ZONE 'UTC' <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part.name);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    -- Whole months before the cutoff are gone from the partitions; prune the rest to match.
    DELETE FROM events_default
        WHERE occurred_at < date_trunc('month', cutoff AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    DELETE FROM event_ids
        WHERE occurred_at < date_trunc('month', cutoff AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    RETURN dropped;
END;
$$;
