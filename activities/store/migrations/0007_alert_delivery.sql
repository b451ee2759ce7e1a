-- Alerts reach a person (docs/alerts.md). The `alerts` table is the outbox: every
-- alert is written in the same transaction as its event, whoever raises it, and the
-- worker's dispatcher hands each row to the workflow of its condition.
-- * condition: the grouping key (title about one position or account);
-- * resolvable: the raiser will write a resolution row for this condition;
-- * resolution: this row ends its condition;
-- * dispatched_at: handed to the condition's workflow (NULL: still to hand over).
ALTER TABLE alerts
    ADD COLUMN condition     text,
    ADD COLUMN resolvable    boolean NOT NULL DEFAULT false,
    ADD COLUMN resolution    boolean NOT NULL DEFAULT false,
    ADD COLUMN dispatched_at timestamptz;
-- Rows written before this migration were only ever logged: nothing to deliver.
UPDATE alerts SET dispatched_at = created_at;
CREATE INDEX alerts_undispatched_idx ON alerts (id) WHERE dispatched_at IS NULL;

-- A dispatcher waiting on LISTEN posguard_alerts wakes at once on a new alert.
CREATE FUNCTION posguard_alert_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('posguard_alerts', NEW.id::text);
    RETURN NEW;
END $$;
CREATE TRIGGER alerts_notify AFTER INSERT ON alerts
    FOR EACH ROW EXECUTE FUNCTION posguard_alert_notify();

-- One row per message per channel: claimed before the request is sent, marked sent
-- after. A retry finds a message already sent and does not send it again.
CREATE TABLE alert_deliveries (
    message_id   text NOT NULL,
    channel      text NOT NULL,
    condition    text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('raised', 'escalated', 'reminder', 'resolved')),
    severity     text NOT NULL,
    status       text NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
    attempts     integer NOT NULL DEFAULT 1,
    error        text,
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    PRIMARY KEY (message_id, channel)
);
CREATE INDEX alert_deliveries_claimed_idx ON alert_deliveries (claimed_at);
