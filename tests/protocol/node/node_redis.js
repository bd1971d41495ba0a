// node-redis (npm "redis", v6) against a distqueue server, with its default
// options: RESP3 (HELLO 3 [AUTH default PASSWORD]), CLIENT SETINFO on connect.
"use strict";
const { createClient } = require("redis");
const { args, session } = require("./common");

async function main() {
  const { host, port, password } = args();
  const client = createClient({ socket: { host, port, reconnectStrategy: false }, password });
  client.on("error", (err) => console.error("node-redis error:", err.message));
  await client.connect();
  try {
    const out = await session((...words) => client.sendCommand(words));
    out.library = "node-redis " + require("redis/package.json").version;
    console.log(JSON.stringify(out));
  } finally {
    await client.quit();
  }
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
