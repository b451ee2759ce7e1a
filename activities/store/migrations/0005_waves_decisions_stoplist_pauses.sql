-- Waves are per account (id wave/{account}/{period start}); a wave row keeps its
-- outcome: counts by decision and filter reason, and how long the selection took.
ALTER TABLE waves ADD COLUMN account text;
ALTER TABLE waves ADD COLUMN signals_filtered integer NOT NULL DEFAULT 0;
ALTER TABLE waves ADD COLUMN positions_started integer NOT NULL DEFAULT 0;
ALTER TABLE waves ADD COLUMN outcomes jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE waves ADD COLUMN workflow_id text;
ALTER TABLE waves ADD COLUMN processed_at timestamptz;
ALTER TABLE waves ADD COLUMN duration_ms integer;
CREATE INDEX waves_account_period_idx ON waves (account, period_start DESC);

-- One decision per (signal, account): a signal is read by every account its service
-- feeds, and each account's wave decides it once. Written once, never updated: the
-- primary key makes a retried write a no-op.
CREATE TABLE signal_decisions (
    signal_row_id        text NOT NULL REFERENCES signals (id) ON DELETE CASCADE,
    account              text NOT NULL,
    wave_id              text NOT NULL,
    outcome              text NOT NULL CHECK (outcome IN ('opened', 'filtered')),
    reason               text,
    detail               text NOT NULL,
    rank                 integer,
    position_workflow_id text,
    decided_at           timestamptz NOT NULL,
    PRIMARY KEY (signal_row_id, account)
);
CREATE INDEX signal_decisions_wave_idx ON signal_decisions (wave_id);

-- Symbols never to open, per account or for every account ('*'); changed at run
-- time by `posguard stoplist add|remove`.
CREATE TABLE stoplist (
    account   text NOT NULL DEFAULT '*',
    symbol    text NOT NULL,
    reason    text NOT NULL DEFAULT '',
    added_by  text NOT NULL DEFAULT '',
    added_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, symbol)
);

-- New entries of an account are paused while a row exists: by an operator
-- (`posguard pause`), or by the exchange (key invalid, balance insufficient,
-- maintenance) as seen by a wave. Open positions stay managed either way.
CREATE TABLE account_pauses (
    account   text NOT NULL,
    source    text NOT NULL CHECK (source IN ('operator', 'exchange')),
    reason    text NOT NULL,
    detail    text NOT NULL DEFAULT '',
    paused_by text NOT NULL DEFAULT '',
    since     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, source)
);
