// Soak load generator: N socket.io-client sockets through a proxy, a steady stream
// of POST /api/notifications, and the figures as one JSON line on stdout.
//
//   node tests/support/soak.js config.json   ({"url", "apiKey", "users", "tokens", ...})
//
// Every loop is bounded: `sockets` connections, `rate * seconds` notifications at
// most, and a hard deadline. Each notification carries its send time in data.t;
// latency is receipt time minus that (one machine, one clock).
"use strict";
const { io } = require("socket.io-client");
const http = require("http");

const cfg = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
const hardDeadline = Date.now() + (cfg.seconds + cfg.connectSeconds + cfg.drainSeconds + 60) * 1000;
setTimeout(() => { console.error("soak: hard deadline"); process.exit(3); },
  hardDeadline - Date.now()).unref();

const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.producers });
const sockets = [];
const received = new Map(); // user index -> Map(id -> count)
const latencies = [];
let connectErrors = 0, disconnects = 0, reconnects = 0, busyRetries = 0;
let receiptsSent = 0, receiptsFailed = 0;
const errorSamples = [];
const RETRIED = new Set(["server_busy", "server_unavailable"]);

// Receipts as the reference client sends them (client/src/index.ts): the ids this
// socket received, in one `delivered` event per 200 ms or per 100 ids.
function receipts(socket) {
  let queued = [];
  let timer = null;
  const flush = () => {
    timer = null;
    const ids = queued.splice(0, 100);
    if (!ids.length) return;
    receiptsSent += ids.length;
    socket.timeout(10000).emit("delivered", { ids }, (err, ack) => {
      if (err || !ack || ack.error) {
        receiptsFailed += ids.length;
        if (socket.connected) { queued.push(...ids); if (!timer) timer = setTimeout(flush, 1000); }
      }
    });
    if (queued.length) timer = setTimeout(flush, 0);
  };
  return (id) => {
    queued.push(id);
    if (queued.length >= 100) { if (timer) clearTimeout(timer); flush(); }
    else if (!timer) timer = setTimeout(flush, 200);
  };
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

function openSocket(i) {
  const transports = i % 2 === 0 ? ["websocket"] : ["polling", "websocket"];
  const socket = io(cfg.url, {
    auth: { token: cfg.tokens[i] },
    transports,
    withCredentials: true, // keeps HAProxy's SERVERID cookie (engine.io-client's jar)
    extraHeaders: { Origin: cfg.origin },
    reconnectionDelay: 500,
    reconnectionDelayMax: 2000,
  });
  received.set(i, new Map());
  const acknowledge = cfg.receipts === false ? () => {} : receipts(socket);
  socket.on("notification", (n) => {
    const seen = received.get(i);
    seen.set(n.id, (seen.get(n.id) || 0) + 1);
    if (n.data && typeof n.data.t === "number") latencies.push(Date.now() - n.data.t);
    acknowledge(n.id);
  });
  socket.on("connect_error", (err) => {
    connectErrors++;
    if (errorSamples.length < 5) errorSamples.push(String(err && err.message));
    // A refusal that means "not now" is retried as the reference client does.
    const data = (err && err.data) || {};
    if (RETRIED.has(data.code)) {
      busyRetries++;
      const base = (typeof data.retry_after === "number" ? data.retry_after : 1) * 1000;
      setTimeout(() => socket.connect(), base * (0.5 + Math.random()));
    }
  });
  socket.on("disconnect", () => { disconnects++; });
  socket.io.on("reconnect", () => { reconnects++; });
  return new Promise((resolve) => {
    socket.once("sync_complete", () => resolve(true));
    setTimeout(() => resolve(false), cfg.connectSeconds * 1000).unref();
    sockets.push(socket);
  });
}

async function connectAll() {
  const started = Date.now();
  const pending = [];
  for (let i = 0; i < cfg.sockets; i++) {
    pending.push(openSocket(i));
    if (i % cfg.connectBatch === cfg.connectBatch - 1) await sleep(cfg.connectPauseMs);
  }
  const ok = (await Promise.all(pending)).filter(Boolean).length;
  return { ok, ms: Date.now() - started };
}

function post(userIndex, seq) {
  const body = JSON.stringify({
    user_id: cfg.users[userIndex], type: "soak", title: `n${seq}`, data: { t: Date.now() },
  });
  return new Promise((resolve) => {
    const req = http.request(cfg.url + "/api/notifications", {
      method: "POST", agent, timeout: 10000,
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${cfg.apiKey}`,
        "Content-Length": Buffer.byteLength(body) },
    }, (res) => {
      let text = "";
      res.on("data", (c) => { text += c; });
      res.on("end", () => {
        if (res.statusCode !== 201) return resolve({ status: res.statusCode });
        resolve({ status: 201, id: JSON.parse(text).notifications[0].id });
      });
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => resolve({ status: 0, error: e.message }));
    req.end(body);
  });
}

async function produce() {
  const total = Math.round(cfg.rate * cfg.seconds);
  const interval = 1000 / cfg.rate;
  const start = Date.now();
  const expected = new Map();
  const statuses = {};
  const inflight = [];
  for (let seq = 0; seq < total; seq++) {
    const due = start + seq * interval;
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait);
    if (Date.now() - start > (cfg.seconds + 10) * 1000) break; // never overrun
    const userIndex = seq % cfg.sockets;
    inflight.push(post(userIndex, seq).then((r) => {
      statuses[r.status] = (statuses[r.status] || 0) + 1;
      if (r.status === 201) {
        if (!expected.has(userIndex)) expected.set(userIndex, []);
        expected.get(userIndex).push(r.id);
      }
    }));
    if (inflight.length >= cfg.producers * 4) await Promise.race(inflight.splice(0, 1));
  }
  await Promise.all(inflight);
  return { expected, statuses, ms: Date.now() - start };
}

function quantile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

(async () => {
  const connected = await connectAll();
  const disconnectsBefore = disconnects;
  const produced = await produce();
  // Let the last ones arrive (bounded).
  const until = Date.now() + cfg.drainSeconds * 1000;
  const missing = () => {
    let n = 0;
    for (const [u, ids] of produced.expected) {
      const seen = received.get(u);
      for (const id of ids) if (!seen.has(id)) n++;
    }
    return n;
  };
  while (missing() > 0 && Date.now() < until) await sleep(200);
  let sent = 0, got = 0, duplicates = 0, unexpected = 0;
  for (const [u, ids] of produced.expected) sent += ids.length;
  for (const [u, seen] of received) {
    const want = new Set(produced.expected.get(u) || []);
    for (const [id, count] of seen) {
      if (want.has(id)) got++; else unexpected++;
      if (count > 1) duplicates += count - 1;
    }
  }
  const held = sockets.filter((s) => s.connected).length;
  latencies.sort((a, b) => a - b);
  const result = {
    sockets: cfg.sockets, connected: connected.ok, connect_ms: connected.ms, held,
    disconnects_during_load: disconnects - disconnectsBefore, reconnects, connect_errors: connectErrors,
    busy_retries: busyRetries, receipts_sent: receiptsSent, receipts_failed: receiptsFailed,
    error_samples: errorSamples,
    requested: Math.round(cfg.rate * cfg.seconds), post_statuses: produced.statuses,
    produce_ms: produced.ms, sent, received: got, lost: missing(), duplicates, unexpected,
    rate_achieved: +(sent / (produced.ms / 1000)).toFixed(1),
    latency_ms: { p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99),
      max: latencies.length ? latencies[latencies.length - 1] : null, samples: latencies.length },
  };
  console.log(JSON.stringify(result));
  for (const s of sockets) s.close();
  agent.destroy();
  process.exit(0);
})();
