// Shared by node_redis.js and ioredis.js: the same session through either library.
// Usage: node <script> HOST PORT [PASSWORD]; prints one JSON object on stdout.
"use strict";

function args() {
  const [host, port, password] = process.argv.slice(2);
  if (!host || !port) {
    console.error("usage: node " + process.argv[1] + " HOST PORT [PASSWORD]");
    process.exit(2);
  }
  return { host, port: Number(port), password: password || undefined };
}

function text(value) {
  if (Buffer.isBuffer(value)) return value.toString("utf8");
  if (Array.isArray(value)) return value.map(text);
  return value;
}

// `call(...words)` sends one command with the library's generic call and resolves
// to its reply (an error reply rejects); returns what the Python test asserts.
async function session(call) {
  const out = {};
  out.ping = text(await call("PING"));
  out.submit = await call("SUBMIT", "echo", "hi");
  const waited = JSON.parse(text(await call("WAIT", String(out.submit), "20")));
  out.wait_state = waited.state;
  const status = JSON.parse(text(await call("STATUS", String(out.submit))));
  out.status = { id: status.id, type: status.type, state: status.state, args: status.args };
  out.result = text(await call("RESULT", String(out.submit)));
  out.getname = text(await call("CLIENT", "GETNAME"));
  out.info_loading = /\r\nloading:0\r\n/.test(text(await call("INFO", "persistence")));
  out.client_info = text(await call("CLIENT", "INFO"));
  try {
    await call("STATUS", "999999");
    out.notfound = null;
  } catch (err) {
    out.notfound = err.message;
  }
  return out;
}

module.exports = { args, session, text };
