-- Signals are unique per signal service (two services may use the same ids), and
-- every message is kept, a rejected one too: with what could be read of it, its
-- reason, and the exact text received (which may not be JSON at all).
ALTER TABLE signals ADD COLUMN service text NOT NULL DEFAULT 'default';
ALTER TABLE signals ADD COLUMN signal_id text;
ALTER TABLE signals ADD COLUMN action text;
ALTER TABLE signals ADD COLUMN signal_at timestamptz;
ALTER TABLE signals ALTER COLUMN exchange DROP NOT NULL;
ALTER TABLE signals ALTER COLUMN symbol DROP NOT NULL;
ALTER TABLE signals ALTER COLUMN side DROP NOT NULL;
ALTER TABLE signals ALTER COLUMN raw TYPE text USING raw::text;
UPDATE signals SET signal_id = id WHERE signal_id IS NULL;
-- A valid signal is stored once per (service, id); rejected receipts are all kept.
CREATE UNIQUE INDEX signals_service_signal_idx ON signals (service, signal_id)
    WHERE signal_id IS NOT NULL AND status <> 'rejected';
CREATE INDEX signals_service_received_idx ON signals (service, received_at);
