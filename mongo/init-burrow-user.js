// Runs once, when the mongo container initialises an empty data directory (as the root
// user of MONGO_INITDB_ROOT_*): Burrow's processes get a user of their own that can read
// and write the burrow database and nothing else.
db.getSiblingDB("burrow").createUser({
  user: "burrow",
  pwd: process.env.BURROW_MONGO_PASSWORD,
  roles: [{ role: "readWrite", db: "burrow" }],
});
