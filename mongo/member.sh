#!/bin/bash
# A member of the cluster compose file's replica set (docker-compose.cluster.yml). The
# members authenticate to each other with a shared key file, which mongod wants readable
# by its own user only: written here from BURROW_MONGO_KEYFILE_SECRET, then the image's own
# entrypoint runs (it creates the root user on a first start, without --replSet).
set -euo pipefail
: "${BURROW_MONGO_KEYFILE_SECRET:?set BURROW_MONGO_KEYFILE_SECRET (docs/deploy.md, "A cluster")}"
printf '%s' "$BURROW_MONGO_KEYFILE_SECRET" > /tmp/mongo-keyfile
chmod 400 /tmp/mongo-keyfile
chown 999:999 /tmp/mongo-keyfile
exec docker-entrypoint.sh mongod --replSet rs0 --bind_ip_all --keyFile /tmp/mongo-keyfile
