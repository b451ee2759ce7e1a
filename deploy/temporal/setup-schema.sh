#!/bin/sh
# One-shot (docker-compose.yml, temporal-schema): create Temporal's databases on
# temporal-db if they are missing, then bring both schemas to the image's version.
# Safe to run again: an existing database is kept, and update-schema is idempotent.
set -eu
: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
PORT="${DB_PORT:-5432}"
SCHEMA=/etc/temporal/schema/postgresql/v12

until nc -z -w 5 "$POSTGRES_SEEDS" "$PORT"; do sleep 1; done

for db in temporal temporal_visibility; do
    tool="temporal-sql-tool --plugin postgres12 --ep $POSTGRES_SEEDS -p $PORT -u $POSTGRES_USER --db $db"
    $tool create || echo "database $db exists"
    $tool setup-schema -v 0.0 || echo "schema of $db already set up"
done
temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$PORT" -u "$POSTGRES_USER" \
    --db temporal update-schema -d "$SCHEMA/temporal/versioned"
temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$PORT" -u "$POSTGRES_USER" \
    --db temporal_visibility update-schema -d "$SCHEMA/visibility/versioned"
echo "Temporal schemas are up to date"
