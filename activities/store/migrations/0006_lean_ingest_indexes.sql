-- The event log and the signals table are written at signal-ingest speed (a row and
-- two events per signal, 10,000 signals a second): each index is paid on every row.
-- Events: three indexes become partial:
-- * by position: most events name one, but signal, wave and stream events do not,
--   and a lookup by position (`position_id = $1`) implies NOT NULL;
-- * by correlation: likewise, for the events that carry none;
-- * by severity: only the ones a person looks for by severity (warning and worse;
--   `Store.events(min_severity=...)` repeats this predicate so the index is used).
DROP INDEX events_position_idx;
CREATE INDEX events_position_idx ON events (position_id, occurred_at)
    WHERE position_id IS NOT NULL;
DROP INDEX events_correlation_idx;
CREATE INDEX events_correlation_idx ON events (correlation_id, occurred_at)
    WHERE correlation_id IS NOT NULL;
DROP INDEX events_severity_idx;
CREATE INDEX events_severity_idx ON events (severity, occurred_at)
    WHERE severity IN ('warning', 'error', 'critical');

-- Signals: two indexes no query uses go (by status, by symbol); the wave index
-- skips the rows stored before any wave names them (all of them, at ingest); the
-- newest-first listing of every service (`posguard signals`) gets its own.
DROP INDEX signals_status_received_idx;
DROP INDEX signals_symbol_idx;
DROP INDEX signals_wave_idx;
CREATE INDEX signals_wave_idx ON signals (wave_id) WHERE wave_id IS NOT NULL;
CREATE INDEX signals_received_idx ON signals (received_at, id);
