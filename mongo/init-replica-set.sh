#!/bin/bash
# The cluster compose file's mongo-init service: runs init-replica-set.js as root against
# mongo-1, trying again while mongo-1 is not answering yet (on its first start the image
# runs a temporary server for the init scripts, then restarts it with --replSet).
# At most 60 tries, 2 s apart; exits non-zero if the set never came up.
set -euo pipefail
: "${BURROW_MONGO_ROOT_PASSWORD:?run ./dev secrets to write .env}"
for _ in $(seq 60); do
  if mongosh --host mongo-1 --username root --password "$BURROW_MONGO_ROOT_PASSWORD" \
      --authenticationDatabase admin --quiet /burrow/init-replica-set.js; then
    exit 0
  fi
  sleep 2
done
echo "the replica set did not come up" >&2
exit 1
