// The load generator: many browser-like Socket.IO clients in one Node process.
//
//   node bench/loadgen.js --url http://127.0.0.1:PORT --secret S --api-key K [--no-deflate]
//
// It speaks Engine.IO v4 / Socket.IO v5 over WebSocket directly (the `ws` package,
// no socket.io-client), so one process holds 10k sockets cheaply. Like a browser it
// sends Origin and offers permessage-deflate unless --no-deflate. Like a real client
// it authenticates with auth {token} in the CONNECT packet (an HS256 JWT minted with
// the server's secret); it also sends auth.user_id, which only the baselines read.
//
// Commands arrive as JSON lines on stdin; each gets one JSON line on stdout:
//   {"cmd":"connect","n":N}              open sockets until N are connected
//   {"cmd":"targeted","rate":R,"seconds":S[,"drain_ms":D]}  open-loop single notifies,
//                                        one user each; waits D ms (5000) for stragglers
//   {"cmd":"batch","users":U}            one producer request for U distinct users
//   {"cmd":"fanout","users":U}           ceil(U/1000) requests of up to 1000 users at once
//   {"cmd":"bulk","rate":R,"seconds":S,"tick_ms":T[,"drain_ms":D]}  open loop: every T ms
//                                        one POST /api/notifications/bulk carrying that
//                                        tick's R*T/1000 notifications, one user each
//   {"cmd":"outbox","rate":R,"seconds":S,"tick_ms":T,"pg":URL[,"drain_ms":D]}  open loop:
//                                        every T ms one PostgreSQL transaction inserting
//                                        that tick's notifications into notification_outbox
//   {"cmd":"close"}                      close every socket
//   {"cmd":"exit"}
// Every loop is bounded by count and by time.
"use strict";

const crypto = require("crypto");
const http = require("http");
const readline = require("readline");
const { performance, PerformanceObserver } = require("perf_hooks");
const WebSocket = require("ws");
// Loaded at start, not at the outbox scenario: a later `npm ci` elsewhere (which
// empties node_modules for a moment) cannot take it away mid-run.
const pg = require("pg");

const ORIGIN = "http://localhost:3000";
const CONNECT_CONCURRENCY = 200;
const MAX_BATCH = 1000;

function parseArgs(argv) {
  const args = { deflate: true };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--no-deflate") args.deflate = false;
    else if (a === "--url") args.url = argv[++i];
    else if (a === "--secret") args.secret = argv[++i];
    else if (a === "--api-key") args.apiKey = argv[++i];
  }
  return args;
}

const args = parseArgs(process.argv);
const target = new URL(args.url);
// Keep-alive connections for the producer's requests. Each scenario starts with fresh
// ones: a connection idle since the last scenario may be one the server is closing
// (gunicorn's keep-alive timeout is 2 s), and a request sent on it fails with
// ECONNRESET, a race of the client's making.
let agent = freshAgent();

function freshAgent() {
  return new http.Agent({ keepAlive: true, maxSockets: 64 });
}

function renewAgent() {
  agent.destroy();
  agent = freshAgent();
}

function b64url(buf) {
  return Buffer.from(buf).toString("base64url");
}

function mintToken(user) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub: user, iat: now, exp: now + 3600 }));
  const sig = crypto.createHmac("sha256", args.secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

// The load generator's own garbage-collection pauses over 5 ms, [start ms, duration
// ms]: a latency stall that lines up with one is the client's, not the server's.
const gcPauses = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (e.duration > 5) gcPauses.push([e.startTime, e.duration]);
}).observe({ entryTypes: ["gc"] });

// ---- sockets -------------------------------------------------------------------

const sockets = []; // {ws, user, state}
let onNotification = null; // set by the scenario running now

function handleMessage(sock, raw) {
  const msg = raw.toString();
  const type = msg.charCodeAt(0);
  if (msg === "2") return sock.ws.send("3"); // Engine.IO ping -> pong
  if (type === 48 /* "0" open */) {
    sock.ws.send("40" + JSON.stringify({ token: mintToken(sock.user), user_id: sock.user }));
    return;
  }
  if (msg.startsWith("44")) return sock.settle(false, "connect_error " + msg.slice(2, 120));
  if (msg.startsWith('42["auth_success"')) return sock.settle(true);
  if (msg.startsWith('42["notification"') && onNotification) {
    const arrived = performance.now();
    const payload = JSON.parse(msg.slice(2))[1];
    onNotification(sock, payload, arrived);
    if (sendReceipts) queueReceipt(sock, payload.id);
  }
}

// Receipts as the reference client sends them: a socket's ids batched for 200 ms (or
// 100 ids), in one "delivered" event with an ack id (the server answers; unread here).
let sendReceipts = false;
const RECEIPT_DELAY_MS = 200;
const RECEIPT_BATCH = 100;

function queueReceipt(sock, id) {
  if (typeof id !== "number") return;
  sock.receipts = sock.receipts || [];
  sock.receipts.push(id);
  if (sock.receipts.length >= RECEIPT_BATCH) return flushReceipts(sock);
  if (!sock.receiptTimer) sock.receiptTimer = setTimeout(() => flushReceipts(sock), RECEIPT_DELAY_MS);
}

function flushReceipts(sock) {
  clearTimeout(sock.receiptTimer);
  sock.receiptTimer = null;
  const ids = sock.receipts || [];
  sock.receipts = [];
  if (ids.length && sock.ws.readyState === WebSocket.OPEN) {
    sock.ws.send("421" + JSON.stringify(["delivered", { ids }]));
  }
}

function openSocket(user) {
  return new Promise((resolve) => {
    const url = `ws://${target.host}/socket.io/?EIO=4&transport=websocket`;
    const ws = new WebSocket(url, { perMessageDeflate: args.deflate, origin: ORIGIN });
    const sock = { ws, user, state: "connecting" };
    let done = false;
    sock.settle = (ok, why) => {
      if (done) return;
      done = true;
      sock.state = ok ? "connected" : "failed";
      resolve({ sock, ok, why });
    };
    const timer = setTimeout(() => sock.settle(false, "timeout"), 30000);
    ws.on("message", (data) => handleMessage(sock, data));
    ws.on("error", (err) => sock.settle(false, "error " + err.message));
    ws.on("close", () => {
      clearTimeout(timer);
      if (sock.state === "connected") sock.state = "closed";
      sock.settle(false, "closed");
    });
    ws.on("open", () => {});
    sock.clearTimer = () => clearTimeout(timer);
  });
}

async function connect(n) {
  const start = performance.now();
  let failed = 0;
  const reasons = {};
  let next = sockets.length;
  const want = n - sockets.length;
  const workers = Array.from({ length: Math.min(CONNECT_CONCURRENCY, Math.max(want, 0)) }, async () => {
    while (next < n && failed < 50) {
      const user = `u${next++}`;
      const { sock, ok, why } = await openSocket(user);
      sock.clearTimer();
      if (ok) sockets.push(sock);
      else {
        failed++;
        reasons[why] = (reasons[why] || 0) + 1;
        sock.ws.terminate();
      }
    }
  });
  await Promise.all(workers);
  // Sockets were pushed as they finished; keep them in user order for targeting.
  sockets.sort((a, b) => Number(a.user.slice(1)) - Number(b.user.slice(1)));
  return { connected: sockets.length, failed, reasons, seconds: (performance.now() - start) / 1000 };
}

function closeAll() {
  for (const s of sockets) s.ws.terminate();
  const n = sockets.length;
  sockets.length = 0;
  return { closed: n };
}

// ---- producer --------------------------------------------------------------------

function post(body, path = "/api/notifications") {
  return new Promise((resolve) => {
    const data = JSON.stringify(body);
    const req = http.request({
      agent, host: target.hostname, port: target.port, method: "POST", path,
      headers: {
        "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data),
        Authorization: `Bearer ${args.apiKey}`,
      },
    }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.setTimeout(30000, () => req.destroy(new Error("timeout")));
    req.on("error", (err) => resolve(err.code || err.message || "error"));
    req.end(data);
  });
}

function notification(userIds, run, seq, sched) {
  return { user_ids: userIds, type: "bench", title: "Benchmark notification",
           body: "A short body, as a real notification has.", data: { run, seq, sched } };
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// Collects receipts of one run: first arrival per (seq, user), duplicates counted.
// With ``deferred`` the origin time is not in the payload (an outbox row's commit time
// is known only after its insert): arrivals are kept as [tx, arrived] in r.arrivals,
// and the latencies are filled in later by settleDeferred.
function receiptsFor(run, deferred = false) {
  const seen = new Map();
  const r = { latencies: [], samples: [], duplicates: 0, stray: 0, unique: 0, lastArrival: 0,
              arrivals: [] };
  onNotification = (sock, payload, arrived) => {
    const d = payload && payload.data;
    if (!d || d.run !== run) return void r.stray++;
    const key = `${d.seq}:${sock.user}`;
    if (seen.has(key)) return void r.duplicates++;
    seen.set(key, true);
    r.unique++;
    r.lastArrival = arrived;
    if (deferred) return void r.arrivals.push([d.tx, arrived]);
    r.latencies.push(arrived - d.sched);
    r.samples.push([d.sched, arrived - d.sched]);
  };
  return r;
}

function waitFor(cond, timeoutMs) {
  const deadline = performance.now() + timeoutMs;
  return new Promise((resolve) => {
    const tick = () => (cond() || performance.now() > deadline ? resolve() : setTimeout(tick, 2));
    tick();
  });
}

// The slowest deliveries, as [ms since the first scheduled send, latency ms]: whether
// the tail is a few stalls (clustered) or spread out.
function slowest(r, count) {
  if (!r.samples.length) return [];
  // A loop, not Math.min(...): 100k arguments overflow the stack.
  let first = Infinity;
  for (const x of r.samples) if (x[0] < first) first = x[0];
  return r.samples.sort((a, b) => b[1] - a[1]).slice(0, count)
    .map(([sched, lat]) => [Math.round(sched - first), Math.round(lat * 10) / 10]);
}

function summary(r, expected, extra) {
  const lat = r.latencies.sort((a, b) => a - b);
  onNotification = null;
  return {
    slowest: slowest(r, 200),
    expected, received: r.unique, lost: expected - r.unique, duplicates: r.duplicates,
    p50_ms: percentile(lat, 50), p99_ms: percentile(lat, 99), max_ms: lat.length ? lat[lat.length - 1] : null,
    ...extra,
  };
}

let runCounter = 0;

async function targeted(rate, seconds, drainMs = 5000, receipts = false) {
  const run = `t${++runCounter}-${Date.now()}`;
  sendReceipts = receipts;
  const r = receiptsFor(run);
  renewAgent();
  const total = Math.round(rate * seconds);
  const start = performance.now() + 20;
  gcPauses.length = 0;
  const pending = [];
  let sent = 0;
  let httpErrors = 0;
  const errorKinds = {}; // status code or socket error -> count
  // Open loop: request k is due at start + k/rate whatever the server does.
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (sent < total && start + (sent * 1000) / rate <= now) {
        const seq = sent++;
        const sched = start + (seq * 1000) / rate;
        const user = sockets[seq % sockets.length].user;
        pending.push(post(notification([user], run, seq, sched)).then((s) => {
          if (s !== 201) {
            httpErrors++;
            errorKinds[s] = (errorKinds[s] || 0) + 1;
          }
        }));
      }
      if (sent >= total || now > start + seconds * 1000 + 60000) return resolve();
      setImmediate(tick);
    };
    tick();
  });
  await Promise.all(pending);
  const expected = total - httpErrors;
  const lastResponse = performance.now();
  await waitFor(() => r.unique >= expected, Math.min(drainMs, 60000));
  await new Promise((resolve) => setTimeout(resolve, receipts ? RECEIPT_DELAY_MS * 2 : 0));
  sendReceipts = false;
  return summary(r, expected, { sent: total, http_errors: httpErrors, rate, seconds, receipts,
                                send_span_ms: lastResponse - start, http_error_kinds: errorKinds,
                                loadgen_gc_ms: gcPauses.map(([t, d]) => [Math.round(t - start),
                                                                         Math.round(d * 10) / 10]) });
}

async function batch(users, requests) {
  const run = `b${++runCounter}-${Date.now()}`;
  const r = receiptsFor(run);
  renewAgent();
  const count = Math.min(users, sockets.length);
  const start = performance.now();
  const posts = [];
  for (let i = 0; i < count; i += MAX_BATCH) {
    const ids = sockets.slice(i, Math.min(count, i + MAX_BATCH)).map((s) => s.user);
    posts.push(post(notification(ids, run, 0, start)));
  }
  const statuses = await Promise.all(posts);
  const httpErrors = statuses.filter((s) => s !== 201).length;
  const responded = performance.now();
  await waitFor(() => r.unique >= count, 30000);
  const out = summary(r, count, { requests: posts.length, http_errors: httpErrors,
                                   response_ms: responded - start });
  out.all_received_ms = out.received ? r.lastArrival - start : null;
  return out;
}

// ---- producers at scale: bulk requests and the outbox ---------------------------------

// Open loop in ticks: tick k is due at start + k*tickMs whatever the server does, and
// carries the sequence numbers that fall due within it (round((k+1)*tickMs*R/1000) in
// all by its end), so R notifications a second on average. Between ticks the loop
// sleeps (setTimeout) instead of spinning, leaving CPU 1 to the sockets (and, in the
// outbox scenario, to PostgreSQL's share of it).
function tickLoop(rate, seconds, tickMs, onTick) {
  const total = Math.round(rate * seconds);
  const ticks = Math.ceil((seconds * 1000) / tickMs);
  const start = performance.now() + 20;
  let k = 0;
  let seq = 0;
  return new Promise((resolve) => {
    const loop = () => {
      const now = performance.now();
      while (k < ticks && start + k * tickMs <= now) {
        const upto = Math.min(total, Math.round(((k + 1) * tickMs * rate) / 1000));
        if (upto > seq) onTick(seq, upto, start + k * tickMs);
        seq = Math.max(seq, upto);
        k++;
      }
      if (k >= ticks || now > start + seconds * 1000 + 60000) return resolve({ start, sent: seq });
      setTimeout(loop, Math.max(0, Math.min(start + k * tickMs - performance.now(), tickMs)));
    };
    loop();
  });
}

// One notification object for one user, as POST /api/notifications takes it.
function single(user, run, seq, extra) {
  return { user_id: user, type: "bench", title: "Benchmark notification",
           body: "A short body, as a real notification has.", data: { run, seq, ...extra } };
}

function cpuSince(start) {
  const u = process.cpuUsage(start);
  return (u.user + u.system) / 1e6;
}

function gcSince(start) {
  return gcPauses.map(([t, d]) => [Math.round(t - start), Math.round(d * 10) / 10]);
}

// Bulk: each tick one POST /api/notifications/bulk with that tick's notifications.
// Latency runs from the tick's time (when the request is sent; later sends are the
// load generator's or the connection pool's queueing, and count) to arrival.
async function bulk(rate, seconds, tickMs, drainMs = 30000) {
  const run = `k${++runCounter}-${Date.now()}`;
  const r = receiptsFor(run);
  renewAgent();
  gcPauses.length = 0;
  const cpu0 = process.cpuUsage();
  const pending = [];
  const errorKinds = {};
  let httpErrors = 0;
  let failedRequests = 0;
  let requests = 0;
  let largest = 0;
  const { start, sent } = await tickLoop(rate, seconds, tickMs, (from, to, sched) => {
    const items = [];
    for (let seq = from; seq < to; seq++) {
      items.push(single(sockets[seq % sockets.length].user, run, seq, { sched }));
    }
    requests++;
    largest = Math.max(largest, items.length);
    pending.push(post({ notifications: items }, "/api/notifications/bulk").then((s) => {
      if (s !== 201) {
        httpErrors += items.length;
        failedRequests++;
        errorKinds[s] = (errorKinds[s] || 0) + 1;
      }
    }));
  });
  await Promise.all(pending);
  const lastResponse = performance.now();
  const expected = sent - httpErrors;
  await waitFor(() => r.unique >= expected, Math.min(drainMs, 60000));
  return summary(r, expected, {
    sent, rate, seconds, tick_ms: tickMs, requests, per_request_max: largest,
    per_request_mean: requests ? sent / requests : null, http_errors: httpErrors,
    failed_requests: failedRequests, http_error_kinds: errorKinds,
    send_span_ms: lastResponse - start, sent_rate: sent / ((lastResponse - start) / 1000),
    loadgen_cpu_s: cpuSince(cpu0), loadgen_gc_ms: gcSince(start),
  });
}

// Outbox: each tick one transaction of the producer's own (BEGIN; one INSERT INTO
// notification_outbox (payload) VALUES (...), (...) with that tick's rows; COMMIT) on a
// pool of OUTBOX_PRODUCERS connections, so a slow commit does not hold the next tick.
// Latency runs from the moment the COMMIT returned to the producer to arrival: both
// clocks are this process's.
const OUTBOX_PRODUCERS = 8;

async function outbox(rate, seconds, tickMs, url, drainMs = 30000) {
  const pool = new pg.Pool({ connectionString: url, max: OUTBOX_PRODUCERS,
                             application_name: "bench outbox producer" });
  try {
    // Connections open before the clock starts.
    const warm = await Promise.all(Array.from({ length: OUTBOX_PRODUCERS }, () => pool.connect()));
    warm.forEach((c) => c.release());
    const run = `o${++runCounter}-${Date.now()}`;
    const r = receiptsFor(run, true);
    gcPauses.length = 0;
    const cpu0 = process.cpuUsage();
    const commitAt = [];
    const commitLag = []; // tick time -> COMMIT returned: the producer's own delay
    const pending = [];
    const errorKinds = {};
    let failed = 0;
    let committed = 0;
    let lastCommit = 0;
    let tx = 0;
    const { start, sent } = await tickLoop(rate, seconds, tickMs, (from, to, sched) => {
      const id = tx++;
      const rows = [];
      for (let seq = from; seq < to; seq++) {
        rows.push(JSON.stringify(single(sockets[seq % sockets.length].user, run, seq, { tx: id })));
      }
      const sql = "INSERT INTO notification_outbox (payload) VALUES "
        + rows.map((_, i) => `($${i + 1}::jsonb)`).join(", ");
      pending.push((async () => {
        const client = await pool.connect();
        try {
          await client.query("BEGIN");
          await client.query(sql, rows);
          await client.query("COMMIT");
          const at = performance.now();
          commitAt[id] = at;
          lastCommit = Math.max(lastCommit, at);
          commitLag.push(at - sched);
          committed += rows.length;
        } catch (err) {
          failed += rows.length;
          const kind = err.code || err.message || "error";
          errorKinds[kind] = (errorKinds[kind] || 0) + 1;
          await client.query("ROLLBACK").catch(() => {});
        } finally {
          client.release();
        }
      })());
    });
    await Promise.all(pending);
    await waitFor(() => r.unique >= committed, Math.min(drainMs, 60000));
    let beforeCommit = 0;
    for (const [id, arrived] of r.arrivals) {
      const lat = arrived - commitAt[id];
      if (lat < 0) beforeCommit++; // the emit's frame read before the COMMIT's answer
      r.latencies.push(lat);
      r.samples.push([commitAt[id], lat]);
    }
    commitLag.sort((a, b) => a - b);
    return summary(r, committed, {
      sent, rate, seconds, tick_ms: tickMs, transactions: tx, per_transaction_mean: tx ? sent / tx : null,
      http_errors: failed, producer_error_kinds: errorKinds, arrived_before_commit: beforeCommit,
      commit_lag_p50_ms: percentile(commitLag, 50), commit_lag_p99_ms: percentile(commitLag, 99),
      send_span_ms: lastCommit - start,
      sent_rate: lastCommit > start ? committed / ((lastCommit - start) / 1000) : 0,
      loadgen_cpu_s: cpuSince(cpu0), loadgen_gc_ms: gcSince(start),
    });
  } finally {
    await pool.end().catch(() => {});
  }
}

// ---- command loop --------------------------------------------------------------------

async function run(cmd) {
  switch (cmd.cmd) {
    case "connect": return connect(cmd.n);
    case "targeted": return targeted(cmd.rate, cmd.seconds, cmd.drain_ms, cmd.receipts);
    case "batch": return batch(cmd.users);
    case "fanout": return batch(cmd.users);
    case "bulk": return bulk(cmd.rate, cmd.seconds, cmd.tick_ms, cmd.drain_ms);
    case "outbox": return outbox(cmd.rate, cmd.seconds, cmd.tick_ms, cmd.pg, cmd.drain_ms);
    case "close": return closeAll();
    case "exit": closeAll(); setImmediate(() => process.exit(0)); return { bye: true };
    default: return { error: `unknown command ${cmd.cmd}` };
  }
}

const rl = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
rl.on("line", (line) => {
  queue = queue.then(async () => {
    let out;
    try {
      out = await run(JSON.parse(line));
    } catch (err) {
      out = { error: String(err && err.stack || err) };
    }
    process.stdout.write(JSON.stringify(out) + "\n");
  });
});
rl.on("close", () => { closeAll(); process.exit(0); });
