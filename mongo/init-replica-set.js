// Run by the cluster compose file's mongo-init service (mongo/init-replica-set.sh, as
// root against mongo-1): makes the three members one replica set, then waits until it
// has a primary, so Burrow's processes (which wait for this service) find one.
// Idempotent: a set that is already initiated is left as it is. Burrow's user came with
// mongo-1's first start (init-burrow-user.js) and reaches the others by initial sync.
try {
  rs.status();
  print("replica set rs0 already initiated");
} catch (e) {
  rs.initiate({
    _id: "rs0",
    members: [
      { _id: 0, host: "mongo-1:27017" },
      { _id: 1, host: "mongo-2:27017" },
      { _id: 2, host: "mongo-3:27017" },
    ],
  });
  print("replica set rs0 initiated");
}
for (let i = 0; i < 120 && !db.hello().isWritablePrimary && !db.hello().primary; i++) {
  sleep(500);
}
if (!db.hello().primary) {
  quit(1);  // no primary after 60 s: the shell script tries again
}
