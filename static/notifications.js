// Reference client for the notification backend: a small, dependency-free ES module
// that wraps socket.io-client 4.x the way this server wants to be used.
//
//   import { NotificationClient } from "/static/notifications.js";
//   const client = new NotificationClient({
//     url: "https://notify.example.com",
//     io,                                   // socket.io-client's io (else globalThis.io)
//     getToken: async ({ expired }) => (await refreshSession(expired)).accessToken,
//     storageKey: `notifications:last_id:${userId}`,
//   });
//   client.on("notification", (n) => show(n));
//   client.connect();
//
// Events it emits (client.on(name, fn)): "notification" (each id once),
// "auth_success", "sync_complete", "unread_count", "state" ({state, reason}),
// "transport" ({name, upgraded}), "error" ({code, message}).

// Polling first, then an upgrade to WebSocket: polling gets through every proxy and
// captive network, the upgrade makes delivery cheap where WebSocket works. Nothing
// here depends on cookies or headers: Safari drops cross-site cookies (ITP), and
// browsers ignore `extraHeaders` on WebSocket, so the token travels in the Socket.IO
// `auth` payload, which every transport carries. Pass ["websocket"] when the server
// runs several replicas without sticky sessions (SOCKETIO_TRANSPORTS=websocket).
export const DEFAULT_TRANSPORTS = Object.freeze(["polling", "websocket"]);

const DEFAULT_STORAGE_KEY = "notifications:last_id";
const SYNC_PAGE = 100;
const SEEN_LIMIT = 1000;

export class NotificationClient {
  constructor(options) {
    const { url, getToken } = options || {};
    if (!url || typeof getToken !== "function") {
      throw new TypeError("NotificationClient needs {url, getToken}");
    }
    this.url = url;
    this.io = options.io || globalThis.io;
    if (typeof this.io !== "function") {
      throw new TypeError("socket.io-client is missing: pass {io} or load it first");
    }
    this.getToken = getToken;
    this.transports = options.transports || DEFAULT_TRANSPORTS;
    this.storage = options.storage === undefined ? safeStorage() : options.storage;
    this.storageKey = options.storageKey || DEFAULT_STORAGE_KEY;
    this.socketOptions = options.socketOptions || {};
    this.document = options.document === undefined ? globalThis.document : options.document;
    this.listeners = new Map();
    this.seen = new Set();
    this.syncing = false;
    this.pendingMax = 0;
    this.tokenExpired = false;
    this.closed = true;
    this.socket = null;
    this.onVisibility = () => this.reconnectIfVisible();
  }

  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event).delete(fn);
  }

  emit(event, payload) {
    for (const fn of this.listeners.get(event) || []) {
      try {
        fn(payload);
      } catch (err) {
        console.error(`notifications: a "${event}" listener failed`, err);
      }
    }
  }

  get lastId() {
    const raw = this.storage ? this.storage.getItem(this.storageKey) : this.memoryLastId;
    const value = Number.parseInt(raw, 10);
    return Number.isSafeInteger(value) && value >= 0 ? value : null;
  }

  saveLastId(id) {
    if (!Number.isSafeInteger(id) || (this.lastId !== null && id <= this.lastId)) return;
    if (this.storage) this.storage.setItem(this.storageKey, String(id));
    else this.memoryLastId = String(id);
  }

  connect() {
    this.closed = false;
    if (!this.socket) this.socket = this.createSocket();
    this.socket.connect();
    if (this.document) this.document.addEventListener("visibilitychange", this.onVisibility);
    return this;
  }

  close() {
    this.closed = true;
    if (this.document) this.document.removeEventListener("visibilitychange", this.onVisibility);
    if (this.socket) this.socket.disconnect();
  }

  get connected() {
    return Boolean(this.socket && this.socket.connected);
  }

  get transport() {
    const engine = this.socket && this.socket.io.engine;
    return engine && engine.transport ? engine.transport.name : null;
  }

  createSocket() {
    const socket = this.io(this.url, {
      transports: this.transports,
      withCredentials: false, // no cookies are used; see the transports comment
      autoConnect: false,
      forceNew: true,
      ...this.socketOptions,
      // A callback, so that every (re)connect asks the app for a current token and
      // sends the newest last_id: a reconnect replays exactly what was missed.
      auth: (send) => this.authPayload().then(send, () => send({ last_id: this.lastId })),
    });
    this.bind(socket);
    return socket;
  }

  async authPayload() {
    const expired = this.tokenExpired;
    this.tokenExpired = false;
    const token = await this.getToken({ expired });
    this.syncing = true;
    return { token, last_id: this.lastId };
  }

  bind(socket) {
    socket.on("connect", () => this.setState("connected"));
    socket.on("disconnect", (reason) => this.onDisconnect(reason));
    socket.on("connect_error", (err) => this.onConnectError(err));
    socket.on("auth_success", (data) => this.emit("auth_success", data));
    socket.on("notification", (n) => this.onNotification(n));
    socket.on("sync_complete", (data) => this.onSyncComplete(data));
    socket.on("unread_count", (data) => this.emit("unread_count", data));
    socket.on("token_expired", () => {
      // The server disconnects right after this; reconnect with a fresh token.
      this.tokenExpired = true;
    });
    socket.io.on("open", () => this.watchTransport(socket));
    socket.io.on("reconnect_attempt", () => this.setState("reconnecting"));
  }

  watchTransport(socket) {
    const engine = socket.io.engine;
    this.emit("transport", { name: engine.transport.name, upgraded: false });
    engine.on("upgrade", (transport) => this.emit("transport", {
      name: transport.name, upgraded: true,
    }));
  }

  setState(state, reason) {
    this.emit("state", { state, reason });
  }

  onDisconnect(reason) {
    this.setState("disconnected", reason);
    // socket.io-client does not reconnect after a server-side disconnect; the server
    // does that on token expiry, and then a fresh token is all that is needed.
    if (!this.closed && reason === "io server disconnect" && this.tokenExpired) {
      this.socket.connect();
    }
  }

  onConnectError(err) {
    const code = (err && err.data && err.data.code) || (err && err.message) || "error";
    this.emit("error", { code, message: describeError(code) });
    // A refusal is final for socket.io-client; an expired token is worth one retry
    // with a fresh one (a second refusal in a row stops, to avoid a tight loop).
    if (code === "token_expired" && !this.retriedExpired && !this.closed) {
      this.retriedExpired = true;
      this.tokenExpired = true;
      this.socket.connect();
      return;
    }
    this.retriedExpired = false;
  }

  onNotification(n) {
    if (!n || !Number.isSafeInteger(n.id) || this.seen.has(n.id)) return;
    this.remember(n.id);
    // While a replay is running, the cursor moves only on sync_complete: a live
    // notification held back until the replay ends must not skip what precedes it.
    if (this.syncing) this.pendingMax = Math.max(this.pendingMax, n.id);
    else this.saveLastId(n.id);
    this.emit("notification", n);
  }

  remember(id) {
    this.seen.add(id);
    if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.values().next().value);
  }

  onSyncComplete(data) {
    this.retriedExpired = false;
    this.emit("sync_complete", data);
    if (data && Number.isSafeInteger(data.last_id)) this.saveLastId(data.last_id);
    if (data && data.has_more) {
      this.page(data.last_id);
      return;
    }
    this.finishSync();
  }

  finishSync() {
    this.syncing = false;
    if (this.pendingMax) this.saveLastId(this.pendingMax);
    this.pendingMax = 0;
  }

  page(afterId) {
    // More than one replay's worth was missed: fetch the rest in pages, oldest first.
    this.socket.timeout(10000).emit("sync", { after_id: afterId, limit: SYNC_PAGE },
      (err, reply) => {
        if (err || !reply || reply.error) {
          this.finishSync();
          this.emit("error", { code: "sync_failed", message: describeError("sync_failed") });
          return;
        }
        for (const n of reply.notifications) {
          if (!this.seen.has(n.id)) {
            this.remember(n.id);
            this.emit("notification", n);
          }
          this.saveLastId(n.id);
        }
        const last = reply.notifications.at(-1);
        if (reply.has_more && last) this.page(last.id);
        else this.finishSync();
      });
  }

  reconnectIfVisible() {
    if (this.closed || !this.socket || this.document.visibilityState !== "visible") return;
    if (this.socket.connected) return;
    // Waking from the background: don't wait out the reconnection back-off (which
    // may be many seconds by now); restart the attempt at once.
    this.socket.disconnect();
    this.socket.connect();
  }
}

const MESSAGES = {
  token_missing: "No token was sent. Sign in again.",
  token_invalid: "The token was not accepted (bad signature, wrong audience or malformed).",
  token_expired: "The token has expired. A fresh one is needed.",
  server_unavailable: "The server could not check the token just now (its database?).",
  sync_failed: "Fetching missed notifications failed; they will come on the next connect.",
  "xhr poll error": "The server could not be reached over HTTP (down, blocked, or CORS).",
  "websocket error": "The WebSocket could not be opened (proxy, firewall or origin).",
  "timeout": "The server did not answer the handshake in time.",
};

export function describeError(code) {
  return MESSAGES[code] || `Connection failed: ${code}`;
}

function safeStorage() {
  // Safari's private mode and some embedded views throw on localStorage access.
  try {
    const storage = globalThis.localStorage;
    const probe = "__notifications_probe__";
    storage.setItem(probe, "1");
    storage.removeItem(probe);
    return storage;
  } catch {
    return null;
  }
}
