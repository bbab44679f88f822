// The reference client's answer to a refusal that means "not now": against a stand-in
// for socket.io-client's socket (no server: the refusal is what is under test), it
// prints one JSON line that tests/unit/client/test_client_package.py reads.
//
//   - server_busy with retry_after 0.2: connect() is called again once, between 0.5
//     and 1.5 times 0.2 s later, and the delays of 40 clients are spread out;
//   - token_invalid: never retried;
//   - close() before the delay: no retry.
import { NotificationClient } from "@notification-backend/client";

function fakeSocket() {
  const handlers = {};
  const socket = {
    connected: false,
    connects: [],
    on(event, fn) { (handlers[event] ||= []).push(fn); return socket; },
    io: { on() {}, engine: null },
    connect() { socket.connects.push(performance.now()); return socket; },
    disconnect() { return socket; },
    fire(event, payload) { for (const fn of handlers[event] || []) fn(payload); },
  };
  return socket;
}

function client() {
  const made = [];
  const c = new NotificationClient({
    url: "http://127.0.0.1:1", getToken: async () => "t", storage: null, document: null,
    receipts: false, io: () => { const s = fakeSocket(); made.push(s); return s; },
  });
  c.connect();
  return { c, socket: made[0] };
}

function refusal(code, retryAfter) {
  const err = new Error(code);
  err.data = retryAfter === undefined ? { code } : { code, retry_after: retryAfter };
  return err;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const report = {};

const busy = Array.from({ length: 40 }, client);
const refusedAt = performance.now();
for (const { socket } of busy) socket.fire("connect_error", refusal("server_busy", 0.2));
await sleep(600);
report.busy_delays_ms = busy.map(({ socket }) =>
  socket.connects.length === 2 ? Math.round(socket.connects[1] - refusedAt) : null);
report.busy_connect_calls = busy.map(({ socket }) => socket.connects.length);

const invalid = client();
invalid.socket.fire("connect_error", refusal("token_invalid"));
const closed = client();
closed.socket.fire("connect_error", refusal("server_busy", 0.2));
closed.c.close();
await sleep(600);
report.invalid_connect_calls = invalid.socket.connects.length;
report.closed_connect_calls = closed.socket.connects.length;
for (const { c } of busy) c.close();
invalid.c.close();
console.log(JSON.stringify(report));
