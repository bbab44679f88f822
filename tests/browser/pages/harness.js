// The stand-in front end the browser tests drive. Everything it sees goes into
// window.harness.events, which the tests read back over WebDriver.
import { NotificationClient } from "@notification-backend/client";

const events = [];
let socket = null;
let client = null;

function transportOf(s) {
  const engine = s && s.io && s.io.engine;
  return engine && engine.transport ? engine.transport.name : null;
}

function record(name, data, via) {
  events.push({ name, data: data === undefined ? null : data, transport: via || null,
                at: performance.now() });
}

function watchEngine(s) {
  s.io.on("open", () => {
    record("engine_open", null, transportOf(s));
    s.io.engine.on("upgrade", (t) => record("upgrade", { name: t.name }, t.name));
  });
}

// A raw socket.io-client socket with exactly the options under test.
function open(url, options) {
  close();
  socket = io(url, options);
  watchEngine(socket);
  socket.on("connect", () => record("connect", null, transportOf(socket)));
  socket.on("disconnect", (reason) => record("disconnect", { reason }));
  socket.on("connect_error", (err) =>
    record("connect_error", { message: err.message, data: err.data || null }));
  for (const name of ["auth_success", "notification", "sync_complete", "token_expired"]) {
    socket.on(name, (data) => record(name, data, transportOf(socket)));
  }
}

// What the app answers each time the client asks for a token: the next one queued,
// else harness.token.
function getToken(info) {
  harness.tokenRequests.push(info);
  return harness.tokenQueue.length ? harness.tokenQueue.shift() : harness.token;
}

// The reference client, as an app would use it.
function reference(url, options) {
  close();
  harness.tokenRequests = [];
  client = new NotificationClient({ url, getToken, ...options });
  socket = null;
  for (const name of ["notification", "auth_success", "sync_complete", "error", "state",
                      "receipts"]) {
    client.on(name, (data) => record(`client:${name}`, data, client.transport));
  }
  client.connect();
  watchEngine(client.socket); // the engine opens asynchronously, after this
}

// The reference client for Web Push alone, never connected: harness.push.enablePush()
// and the rest run on this page, the front end's origin.
function pushClient(url, options) {
  harness.tokenRequests = [];
  harness.push = new NotificationClient({ url, getToken, ...options });
}

function close() {
  if (socket) socket.disconnect();
  if (client) client.close();
  socket = null;
  client = null;
}

// Headless browsers never hide the page: the tests stand in for the OS.
function setVisibility(state) {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => state !== "visible" });
  document.dispatchEvent(new Event("visibilitychange"));
}

const harness = {
  events, open, reference, pushClient, close, setVisibility, token: null, tokenQueue: [],
  push: null,
  tokenRequests: [],
  get socket() { return socket || (client && client.socket); },
  get client() { return client; },
  named: (name) => events.filter((e) => e.name === name),
  ready: true,
};
window.harness = harness;
