#!/bin/sh
# One-shot (docker-compose.yml, temporal-setup): the namespace posguard uses and the
# search attributes its workflows set (workflows/search_attributes.py), which the dev
# server of `make dev` gets as --search-attribute flags. Safe to run again.
set -eu
ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NS="${NAMESPACE:-default}"
SEARCH_ATTRIBUTES="Account Exchange Symbol PositionState CloseReason"

tries=0
until temporal operator cluster health --address "$ADDRESS"; do
    tries=$((tries + 1)); [ "$tries" -lt 60 ] || exit 1; sleep 2
done

if ! temporal operator namespace describe -n "$NS" --address "$ADDRESS" > /dev/null 2>&1; then
    temporal operator namespace create -n "$NS" --retention "${NAMESPACE_RETENTION:-720h}" \
        --address "$ADDRESS"
fi

for name in $SEARCH_ATTRIBUTES; do
    tries=0
    until temporal operator search-attribute list -n "$NS" --address "$ADDRESS" \
        | grep -qw "$name"; do
        temporal operator search-attribute create -n "$NS" --name "$name" --type Keyword \
            --address "$ADDRESS" || true
        tries=$((tries + 1)); [ "$tries" -lt 30 ] || exit 1; sleep 2
    done
done
echo "namespace $NS ready with search attributes: $SEARCH_ATTRIBUTES"
