// ioredis (v6) against a distqueue server, with its default options: RESP3
// (HELLO 3 [AUTH default PASSWORD]), CLIENT SETINFO, then INFO (the ready check).
"use strict";
const Redis = require("ioredis");
const { args, session } = require("./common");

async function main() {
  const { host, port, password } = args();
  const client = new Redis({ host, port, password, lazyConnect: true, maxRetriesPerRequest: 0,
                             retryStrategy: () => null });
  client.on("error", (err) => console.error("ioredis error:", err.message));
  await client.connect();
  try {
    const out = await session((...words) => client.call(...words));
    out.library = "ioredis " + require("ioredis/package.json").version;
    console.log(JSON.stringify(out));
  } finally {
    await client.quit();
  }
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
