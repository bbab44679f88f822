// The notification backend's browser client: wraps socket.io-client 4.x the way the
// server wants to be used. It imports nothing at run time (socket.io-client's `io` is
// passed in, or found on globalThis), so the built file also loads as it is in a page.
//
//   import { io } from "socket.io-client";
//   import { NotificationClient } from "@notification-backend/client";
//   const client = new NotificationClient({
//     url: "https://notify.example.com",
//     io,
//     getToken: async ({ expired }) => (await refreshSession(expired)).accessToken,
//     storageKey: `notifications:last_id:${userId}`,
//   });
//   client.on("notification", (n) => show(n));
//   client.connect();
//   button.onclick = async () => console.log(await client.enablePush());  // Web Push
//   await client.setPreferences({ channels: { push: false } });          // preferences
//
// Events (client.on(name, fn), typed by NotificationClientEvents): "notification"
// (each id once), "auth_success", "sync_complete", "unread_count", "state" ({state,
// reason}), "transport" ({name, upgraded}), "receipts" ({ids, updated} or {ids,
// error}), "error" ({code, message}).
//
// Receipts: every notification the client hands to the app is acknowledged to the
// server ("delivered"), in batches; that stops the server from sending it again as a
// Web Push. Pass {receipts: false} to turn them off.

import type {
  ClientError,
  ConnectAuth,
  DeliveredReply,
  DisablePushResult,
  DocumentLike,
  EnablePushResult,
  ErrorAck,
  EventErrorCode,
  GetToken,
  IoFactory,
  Listener,
  MarkReadReply,
  MarkReadRequest,
  Notification,
  NotificationClientEventName,
  NotificationClientEvents,
  NotificationClientOptions,
  NotificationSocket,
  NotificationsPage,
  NotificationsQuery,
  Preferences,
  PreferencesInput,
  PreferencesPatch,
  PushConfig,
  PushReason,
  PushStatus,
  PushSubscriptionInfo,
  ReceiptsReport,
  StorageLike,
  SyncComplete,
  SyncReply,
  Transport,
  UnreadCount,
  WebPushOptions,
} from "./types.js";

export type * from "./types.js";

// Polling first, then an upgrade to WebSocket: polling gets through every proxy and
// captive network, the upgrade makes delivery cheap where WebSocket works. Nothing
// here depends on cookies or headers: Safari drops cross-site cookies (ITP), and
// browsers ignore `extraHeaders` on WebSocket, so the token travels in the Socket.IO
// `auth` payload, which every transport carries. Pass ["websocket"] when the server
// runs several replicas without sticky sessions (SOCKETIO_TRANSPORTS=websocket).
export const DEFAULT_TRANSPORTS: readonly Transport[] = Object.freeze(["polling", "websocket"]);

const DEFAULT_STORAGE_KEY = "notifications:last_id";
const SYNC_PAGE = 100;
const SYNC_TIMEOUT_MS = 10000;
const SEEN_LIMIT = 1000;
// A receipt waits RECEIPT_DELAY_MS for others to share its event (at most
// RECEIPT_BATCH ids to one); a failed one is resent after RECEIPT_RETRY_MS or at the
// next connect. These failures are worth a retry; any other (validation_error, an
// older server's unknown_event) would fail again.
const RECEIPT_DELAY_MS = 200;
const RECEIPT_BATCH = 100;
const RECEIPT_TIMEOUT_MS = 10000;
const RECEIPT_RETRY_MS = 5000;
const RECEIPT_RETRIED = new Set<string | null>(["timeout", "rate_limited", "not_connected",
  "database_unavailable", "internal_error"]);
// markRead() over the socket; these failures are retried once over HTTP.
const MARK_READ_TIMEOUT_MS = 10000;
const MARK_READ_OVER_HTTP = new Set<string>(["timeout", "not_connected", "rate_limited"]);
// A browser whose push service cannot be reached (a network that blocks it) never
// settles PushManager.subscribe(); enablePush() gives up after this.
const SUBSCRIBE_TIMEOUT_MS = 30000;
// A front end serves its own copy of the package's service worker (the "./sw" export,
// dist/notifications-sw.js) from its own origin: a service worker must come from the
// origin of the page that registers it. This default is where the server's /debug
// page finds it.
export const DEFAULT_SERVICE_WORKER_URL = "/static/notifications-sw.js";

// A refusal the server means as "not now" (server_busy: too many connects at once;
// server_unavailable: its database) is retried after the server's retry_after, or
// RETRY_FIRST_MS doubling to RETRY_MAX_MS, each times a random factor of 0.5 to 1.5:
// the clients a server refused together must not come back together.
const RETRIED_REFUSALS = new Set<string>(["server_busy", "server_unavailable"]);
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;

type ConnectError = Error & { data?: { code?: string; retry_after?: number } };

/**
 * A failed request (markRead, the preferences and device calls): the server's error
 * code (or "network_error", "timeout"), its message, and the HTTP status.
 */
export class NotificationRequestError extends Error {
  readonly code: string;
  /** The HTTP status; 0 when the answer came over the socket or never came. */
  readonly status: number;

  constructor(code: string, message: string | undefined, status = 0) {
    super(message || `the request failed (${code})`);
    this.name = "NotificationRequestError";
    this.code = code;
    this.status = status;
  }
}

export class NotificationClient {
  readonly url: string;
  readonly io: IoFactory;
  readonly getToken: GetToken;
  readonly transports: readonly Transport[];
  readonly storage: StorageLike | null;
  readonly storageKey: string;
  readonly socketOptions: NonNullable<NotificationClientOptions["socketOptions"]>;
  readonly document: DocumentLike | null;
  /** Web Push on this device; also through enablePush(), disablePush(), pushStatus(). */
  readonly push: WebPush;
  /** The socket.io-client socket, from the first connect() on. */
  socket: NotificationSocket | null = null;

  private readonly listeners = new Map<NotificationClientEventName, Set<Listener<never>>>();
  private readonly seen = new Set<number>();
  private readonly receipts: Receipts | null;
  private readonly onVisibility = () => this.reconnectIfVisible();
  private syncing = false;
  private pendingMax = 0;
  private tokenExpired = false;
  private retriedExpired = false;
  private refusedInARow = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private closed = true;
  private memoryLastId: string | null = null;

  constructor(options: NotificationClientOptions) {
    const { url, getToken } = options || ({} as Partial<NotificationClientOptions>);
    if (!url || typeof getToken !== "function") {
      throw new TypeError("NotificationClient needs {url, getToken}");
    }
    const io = options.io || (globalThis as { io?: IoFactory }).io;
    if (typeof io !== "function") {
      throw new TypeError("socket.io-client is missing: pass {io} or load it first");
    }
    this.url = url;
    this.io = io;
    this.getToken = getToken;
    this.transports = options.transports || DEFAULT_TRANSPORTS;
    this.storage = options.storage === undefined ? safeStorage() : options.storage;
    this.storageKey = options.storageKey || DEFAULT_STORAGE_KEY;
    this.socketOptions = options.socketOptions || {};
    this.document = options.document === undefined
      ? (globalThis.document as DocumentLike | undefined) || null : options.document;
    this.receipts = options.receipts === false ? null
      : new Receipts(() => this.socket, (result) => this.emit("receipts", result));
    this.push = new WebPush({ url, getToken, serviceWorkerUrl: options.serviceWorkerUrl });
  }

  /** Listen to an event; returns the function that stops listening. */
  on<E extends NotificationClientEventName>(event: E, fn: Listener<E>): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, set = new Set());
    set.add(fn as Listener<never>);
    return () => {
      set.delete(fn as Listener<never>);
    };
  }

  private emit<E extends NotificationClientEventName>(
    event: E, payload: NotificationClientEvents[E]): void {
    for (const fn of this.listeners.get(event) || []) {
      try {
        (fn as Listener<E>)(payload);
      } catch (err) {
        console.error(`notifications: a "${event}" listener failed`, err);
      }
    }
  }

  /** The newest notification id this client has, as kept in storage; null if none. */
  get lastId(): number | null {
    const raw = this.storage ? this.storage.getItem(this.storageKey) : this.memoryLastId;
    const value = Number.parseInt(raw ?? "", 10);
    return Number.isSafeInteger(value) && value >= 0 ? value : null;
  }

  private saveLastId(id: number | null | undefined): void {
    if (!Number.isSafeInteger(id) || (this.lastId !== null && (id as number) <= this.lastId)) {
      return;
    }
    if (this.storage) this.storage.setItem(this.storageKey, String(id));
    else this.memoryLastId = String(id);
  }

  /** Open the socket (again, after close()). */
  connect(): this {
    this.closed = false;
    if (!this.socket) this.socket = this.createSocket();
    this.socket.connect();
    if (this.document) this.document.addEventListener("visibilitychange", this.onVisibility);
    return this;
  }

  /** Close the socket; nothing reconnects until connect(). */
  close(): void {
    this.closed = true;
    this.cancelRetry();
    if (this.document) this.document.removeEventListener("visibilitychange", this.onVisibility);
    if (this.receipts) this.receipts.clear();
    if (this.socket) this.socket.disconnect();
  }

  /**
   * Web Push on this device; see WebPush below. Call enablePush() from a click or tap
   * handler: iOS asks for the permission only from a user gesture.
   */
  enablePush(): Promise<EnablePushResult> {
    return this.push.enable();
  }

  disablePush(): Promise<DisablePushResult> {
    return this.push.disable();
  }

  pushStatus(): Promise<PushStatus> {
    return this.push.status();
  }

  /**
   * Mark some of the user's notifications read (ids), or all of them ("all"). Over
   * the socket when it is connected (over HTTP when it is not, or its answer did not
   * come); the new count is emitted as "unread_count" too. Rejects with a
   * NotificationRequestError.
   */
  async markRead(target: readonly number[] | "all"): Promise<MarkReadReply> {
    const payload: MarkReadRequest = target === "all" ? { all: true } : { ids: [...target] };
    const socket = this.socket;
    if (socket && socket.connected) {
      let reply: MarkReadReply | ErrorAck | null = null;
      try {
        reply = await socket.timeout(MARK_READ_TIMEOUT_MS).emitWithAck("mark_read", payload);
      } catch {
        reply = null; // no answer in time: over HTTP below
      }
      if (reply && !("error" in reply)) return this.markedRead(reply);
      if (reply && !MARK_READ_OVER_HTTP.has(reply.error.code)) {
        throw new NotificationRequestError(reply.error.code, reply.error.message);
      }
    }
    const answer = await apiRequest<MarkReadReply>(this.url, this.getToken, "POST",
      "/api/notifications/read", payload);
    if (!answer.ok || !answer.body) {
      throw new NotificationRequestError(answer.code, answer.message, answer.status);
    }
    return this.markedRead(answer.body);
  }

  /**
   * A page of the user's inbox (GET /api/notifications), newest first: pass the
   * answer's `next_before` as `before` for the next, older one. Rejects with a
   * NotificationRequestError.
   */
  getNotifications(query: NotificationsQuery = {}): Promise<NotificationsPage> {
    const params = new URLSearchParams();
    if (query.limit !== undefined) params.set("limit", String(query.limit));
    if (query.before !== undefined && query.before !== null) {
      params.set("before", String(query.before));
    }
    if (query.unread) params.set("unread", "1");
    const search = params.toString();
    return this.call<NotificationsPage>("GET", `/api/notifications${search ? `?${search}` : ""}`);
  }

  /** The user's unread count (GET /api/notifications/unread-count). */
  async getUnreadCount(): Promise<number> {
    const answer = await this.call<UnreadCount>("GET", "/api/notifications/unread-count");
    return answer.unread_count;
  }

  // -- Preferences and devices (HTTP) -------------------------------------------------

  /** The user's preferences, defaults filled in. Rejects with a NotificationRequestError. */
  getPreferences(): Promise<Preferences> {
    return this.call<Preferences>("GET", "/api/preferences");
  }

  /**
   * Change some preferences: a JSON Merge Patch (RFC 7396), so the keys given change
   * and the others stay; null deletes a key (its default comes back). Answers the
   * whole set as the server now has it. A refused value rejects with a
   * NotificationRequestError whose code is "validation_error" and message says which.
   */
  setPreferences(patch: PreferencesPatch): Promise<Preferences> {
    return this.call<Preferences>("PATCH", "/api/preferences", patch, MERGE_PATCH_TYPE);
  }

  /** Replace every preference: the keys left out take their defaults. */
  replacePreferences(preferences: PreferencesInput): Promise<Preferences> {
    // A set as getPreferences() gave it may come back as it is: updated_at is the
    // server's to set, not an input.
    const body: PreferencesInput & { updated_at?: unknown } = { ...preferences };
    delete body.updated_at;
    return this.call<Preferences>("PUT", "/api/preferences", body);
  }

  /** The user's push subscriptions (devices), newest first. */
  async pushSubscriptions(): Promise<PushSubscriptionInfo[]> {
    const answer = await this.call<{ subscriptions: PushSubscriptionInfo[] }>(
      "GET", "/api/push/subscriptions");
    return answer.subscriptions;
  }

  /**
   * Turn push on or off for one device (an id from enablePush() or
   * pushSubscriptions()) without unsubscribing it. Rejects with "not_found" when
   * it is not one of this user's.
   */
  setPushSubscriptionEnabled(id: number, enabled: boolean): Promise<PushSubscriptionInfo> {
    if (!Number.isSafeInteger(id) || id < 1) {
      return Promise.reject(new NotificationRequestError("validation_error",
        "the subscription id must be a positive integer"));
    }
    return this.call<PushSubscriptionInfo>("PATCH", `/api/push/subscriptions/${id}`,
      { enabled: Boolean(enabled) });
  }

  // An HTTP call whose answer is its JSON body; anything else rejects.
  private async call<T>(method: string, path: string, body?: unknown,
    contentType?: string): Promise<T> {
    const answer = await apiRequest<T>(this.url, this.getToken, method, path, body, contentType);
    if (!answer.ok || !answer.body) {
      throw new NotificationRequestError(answer.code, answer.message, answer.status);
    }
    return answer.body;
  }

  private markedRead(reply: MarkReadReply): MarkReadReply {
    this.emit("unread_count", { unread_count: reply.unread_count });
    return reply;
  }

  get connected(): boolean {
    return Boolean(this.socket && this.socket.connected);
  }

  /** The transport now in use ("polling" or "websocket"), or null. */
  get transport(): string | null {
    const engine = this.socket && this.socket.io.engine;
    return engine && engine.transport ? engine.transport.name : null;
  }

  private createSocket(): NotificationSocket {
    const socket = this.io(this.url, {
      transports: [...this.transports],
      withCredentials: false, // no cookies are used; see the transports comment
      autoConnect: false,
      forceNew: true,
      ...this.socketOptions,
      // A callback, so that every (re)connect asks the app for a current token and
      // sends the newest last_id: a reconnect replays exactly what was missed.
      auth: (send: (auth: ConnectAuth) => void) => {
        this.authPayload().then(send, () => send({ last_id: this.lastId }));
      },
    }) as unknown as NotificationSocket;
    this.bind(socket);
    return socket;
  }

  private async authPayload(): Promise<ConnectAuth> {
    const expired = this.tokenExpired;
    this.tokenExpired = false;
    const token = await this.getToken({ expired });
    this.syncing = true;
    return { token, last_id: this.lastId };
  }

  private bind(socket: NotificationSocket): void {
    socket.on("connect", () => {
      this.refusedInARow = 0;
      this.setState("connected");
      if (this.receipts) this.receipts.flush(); // what waited for the connection
    });
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

  private watchTransport(socket: NotificationSocket): void {
    const engine = socket.io.engine;
    this.emit("transport", { name: engine.transport.name, upgraded: false });
    engine.on("upgrade", (transport) => this.emit("transport", {
      name: transport.name, upgraded: true,
    }));
  }

  private setState(state: NotificationClientEvents["state"]["state"], reason?: string): void {
    this.emit("state", reason === undefined ? { state } : { state, reason });
  }

  private onDisconnect(reason: string): void {
    this.setState("disconnected", reason);
    // socket.io-client does not reconnect after a server-side disconnect; the server
    // does that on token expiry, and then a fresh token is all that is needed.
    if (!this.closed && reason === "io server disconnect" && this.tokenExpired && this.socket) {
      this.socket.connect();
    }
  }

  private onConnectError(err: ConnectError): void {
    const code = (err && err.data && err.data.code) || (err && err.message) || "error";
    this.emit("error", { code, message: describeError(code) });
    // A refusal is final for socket.io-client; an expired token is worth one retry
    // with a fresh one (a second refusal in a row stops, to avoid a tight loop).
    if (code === "token_expired" && !this.retriedExpired && !this.closed && this.socket) {
      this.retriedExpired = true;
      this.tokenExpired = true;
      this.socket.connect();
      return;
    }
    this.retriedExpired = false;
    if (RETRIED_REFUSALS.has(code) && !this.closed && this.socket) {
      this.retryLater(err.data && err.data.retry_after);
    }
  }

  private retryLater(retryAfterSeconds: number | undefined): void {
    this.cancelRetry();
    const backoff = Math.min(RETRY_FIRST_MS * 2 ** this.refusedInARow, RETRY_MAX_MS);
    this.refusedInARow += 1;
    const base = typeof retryAfterSeconds === "number" && retryAfterSeconds > 0
      ? Math.min(retryAfterSeconds * 1000, RETRY_MAX_MS) : backoff;
    this.setState("reconnecting");
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.closed && this.socket && !this.socket.connected) this.socket.connect();
    }, base * (0.5 + Math.random()));
  }

  private cancelRetry(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private onNotification(n: Notification): void {
    if (!n || !Number.isSafeInteger(n.id)) return;
    if (this.seen.has(n.id)) {
      // The server sends an id again when it has no receipt for it (the first one
      // was lost with a connection): acknowledge it again, show it once.
      this.acknowledge(n.id);
      return;
    }
    this.remember(n.id);
    // While a replay is running, the cursor moves only on sync_complete: a live
    // notification held back until the replay ends must not skip what precedes it.
    if (this.syncing) this.pendingMax = Math.max(this.pendingMax, n.id);
    else this.saveLastId(n.id);
    this.emit("notification", n);
    this.acknowledge(n.id);
  }

  private acknowledge(id: number): void {
    if (this.receipts) this.receipts.add(id);
  }

  private remember(id: number): void {
    this.seen.add(id);
    if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.values().next().value as number);
  }

  private onSyncComplete(data: SyncComplete): void {
    this.retriedExpired = false;
    this.emit("sync_complete", data);
    if (data && Number.isSafeInteger(data.last_id)) this.saveLastId(data.last_id);
    if (data && data.has_more && data.last_id !== null) {
      this.page(data.last_id);
      return;
    }
    this.finishSync();
  }

  private finishSync(): void {
    this.syncing = false;
    if (this.pendingMax) this.saveLastId(this.pendingMax);
    this.pendingMax = 0;
  }

  private page(afterId: number): void {
    // More than one replay's worth was missed: fetch the rest in pages, oldest first.
    const socket = this.socket;
    if (!socket) return;
    socket.timeout(SYNC_TIMEOUT_MS).emit("sync", { after_id: afterId, limit: SYNC_PAGE },
      (err: Error | null, reply: SyncReply | ErrorAck) => {
        if (err || !reply || "error" in reply) {
          this.finishSync();
          this.emit("error", { code: "sync_failed", message: describeError("sync_failed") });
          return;
        }
        for (const n of reply.notifications) {
          if (!this.seen.has(n.id)) {
            this.remember(n.id);
            this.emit("notification", n);
          }
          this.acknowledge(n.id);
          this.saveLastId(n.id);
        }
        const last = reply.notifications.at(-1);
        if (reply.has_more && last) this.page(last.id);
        else this.finishSync();
      });
  }

  private reconnectIfVisible(): void {
    if (this.closed || !this.socket || !this.document) return;
    if (this.document.visibilityState !== "visible" || this.socket.connected) return;
    // Waking from the background: don't wait out the reconnection back-off (which
    // may be many seconds by now); restart the attempt at once.
    this.socket.disconnect();
    this.socket.connect();
  }
}

// Delivery receipts: the ids this device received, sent to the server as
// `delivered` {ids} in batches (the first id waits RECEIPT_DELAY_MS for others, a
// full batch goes at once). Ids that found no connection wait for the next connect;
// ids whose ack failed or never came, for that or RECEIPT_RETRY_MS, whichever is first.
class Receipts {
  private readonly queued = new Set<number>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private due = 0;

  constructor(
    private readonly currentSocket: () => NotificationSocket | null,
    private readonly report: (result: ReceiptsReport) => void,
  ) {}

  add(id: number): void {
    this.queued.add(id);
    if (this.queued.size >= RECEIPT_BATCH) this.flush();
    else this.flushIn(RECEIPT_DELAY_MS);
  }

  // A flush due sooner wins: ids waiting for a retry go with the next batch.
  private flushIn(ms: number): void {
    const due = Date.now() + ms;
    if (this.timer && this.due <= due) return;
    if (this.timer) clearTimeout(this.timer);
    this.due = due;
    this.timer = setTimeout(() => this.flush(), ms);
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const socket = this.currentSocket();
    if (!socket || !socket.connected) return; // the client flushes again on connect
    while (this.queued.size) {
      const ids = [...this.queued].slice(0, RECEIPT_BATCH);
      ids.forEach((id) => this.queued.delete(id));
      socket.timeout(RECEIPT_TIMEOUT_MS).emit("delivered", { ids },
        (err: Error | null, reply: DeliveredReply | ErrorAck) => this.answered(ids, err, reply));
    }
  }

  private answered(ids: number[], err: Error | null, reply: DeliveredReply | ErrorAck): void {
    const error: EventErrorCode | "timeout" | null = err ? "timeout"
      : (reply && "error" in reply && reply.error && reply.error.code) || null;
    this.report(error ? { ids, error } : { ids, updated: (reply as DeliveredReply).updated });
    if (!RECEIPT_RETRIED.has(error)) return;
    ids.forEach((id) => this.queued.add(id));
    this.flushIn(RECEIPT_RETRY_MS);
  }

  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.queued.clear();
  }
}

// -- HTTP -----------------------------------------------------------------------------

const JSON_TYPE = "application/json";
// PATCH /api/preferences takes a JSON Merge Patch (RFC 7396), under its own media type.
const MERGE_PATCH_TYPE = "application/merge-patch+json";

interface ApiAnswer<T> {
  ok: boolean;
  status: number;
  body: T | null;
  code: string;
  message: string | undefined;
}

// A call to the server with the user's token; a refused, expired token is renewed once.
// `body` undefined sends none (GET); `contentType` is the body's media type.
async function apiRequest<T>(base: string, getToken: GetToken, method: string, path: string,
  body: unknown, contentType = JSON_TYPE, expired = false): Promise<ApiAnswer<T>> {
  let response: Response;
  try {
    const token = await getToken({ expired });
    const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = contentType;
    response = await fetch(`${base.replace(/\/+$/, "")}${path}`, {
      method,
      credentials: "omit",
      cache: "no-store", // the user's own state: never an earlier answer from a cache
      headers,
      body: body === undefined ? null : JSON.stringify(body),
    });
  } catch (err) {
    return { ok: false, status: 0, body: null, code: "network_error", message: errorMessage(err) };
  }
  const data = await response.json().catch(() => null);
  const error = (data && data.error) || {};
  if (response.status === 401 && error.code === "token_expired" && !expired) {
    return apiRequest(base, getToken, method, path, body, contentType, true);
  }
  return { ok: response.ok, status: response.status, body: data,
           code: error.code || `http_${response.status}`, message: error.message };
}

function errorMessage(err: unknown): string | undefined {
  return err && typeof err === "object" && "message" in err ? String(err.message) : undefined;
}

function errorName(err: unknown): string | undefined {
  return err && typeof err === "object" && "name" in err ? String(err.name) : undefined;
}

// -- Web Push -------------------------------------------------------------------------

/**
 * Web Push on this device: the service worker, the browser's PushSubscription, and
 * the server's record of it. Usable alone (new WebPush({url, getToken})) or through
 * NotificationClient's enablePush(), disablePush() and pushStatus().
 *
 * enable() answers {ok: true, id} or {ok: false, reason, message} (and `code` with
 * subscribe_failed). Reasons: "unsupported", "ios_not_standalone",
 * "permission_denied", "server_disabled", "subscribe_failed".
 */
export class WebPush {
  readonly url: string;
  readonly getToken: GetToken;
  readonly serviceWorkerUrl: string;

  constructor({ url, getToken, serviceWorkerUrl }: WebPushOptions) {
    this.url = url.replace(/\/+$/, "");
    this.getToken = getToken;
    this.serviceWorkerUrl = serviceWorkerUrl || DEFAULT_SERVICE_WORKER_URL;
  }

  /**
   * Call from a click or tap handler, and nothing awaited before: Safari shows the
   * permission prompt only during a user gesture, so it is asked for first.
   */
  async enable(): Promise<EnablePushResult> {
    const unavailable = pushUnavailable();
    if (unavailable) return unavailable;
    const permission = Promise.resolve(globalThis.Notification.requestPermission())
      .catch((): NotificationPermission => "denied");
    const server = await this.config().then((config) => ({ config, failed: null }),
      (err: unknown) => ({ config: null, failed: err }));
    if (!server.config) return subscribeFailed("network_error", errorMessage(server.failed));
    if (!server.config.enabled || !server.config.vapid_public_key) {
      return refusal("server_disabled");
    }
    const granted = await permission;
    if (granted !== "granted") return refusal("permission_denied", PERMISSION[granted]);

    let registration: ServiceWorkerRegistration;
    try {
      registration = await activated(await navigator.serviceWorker.register(this.workerUrl()));
    } catch (err) { // most often: the front end does not serve the file at that URL
      return subscribeFailed("service_worker_failed", `${this.workerUrl()}: ${errorMessage(err)}`);
    }
    let subscription: PushSubscription;
    try {
      subscription = await withTimeout(SUBSCRIBE_TIMEOUT_MS, "push_service_timeout",
        subscribeWith(registration, base64UrlToBytes(server.config.vapid_public_key)));
    } catch (err) {
      if (errorName(err) === "NotAllowedError") return refusal("permission_denied");
      return subscribeFailed(errorName(err) || "browser_error", errorMessage(err));
    }
    const answer = await this.request<{ id: number }>("POST", subscription.toJSON());
    if (!answer.ok || !answer.body) return subscribeFailed(answer.code, answer.message);
    return { ok: true, id: answer.body.id };
  }

  /**
   * Unsubscribes this browser (no push reaches it any more), then tells the server:
   * {ok: true, removed}, removed false when there was no subscription. A failed DELETE
   * is reported in serverError (its code); the server drops the subscription anyway at
   * its next push, which the push service answers with 410. {ok: false, reason:
   * "unsubscribe_failed", message} when the browser could not unsubscribe.
   */
  async disable(): Promise<DisablePushResult> {
    if (pushUnavailable()) return { ok: true, removed: false };
    const registration = await this.registration();
    const subscription = registration && await registration.pushManager.getSubscription();
    if (!subscription) return { ok: true, removed: false };
    const { endpoint } = subscription;
    try {
      await subscription.unsubscribe();
    } catch (err) {
      return { ok: false, reason: "unsubscribe_failed", message: errorMessage(err) };
    }
    const answer = await this.request("DELETE", { endpoint });
    const known = answer.ok || answer.status === 404; // 404: the server had dropped it
    return { ok: true, removed: true, serverError: known ? null : answer.code };
  }

  /**
   * What the /debug page shows: {supported, reason, message, permission,
   * serverEnabled (null when the server was not reached), subscribed, endpointOrigin}.
   */
  async status(): Promise<PushStatus> {
    const unavailable = pushUnavailable();
    const server = await this.config().catch(() => null);
    const registration = unavailable ? null : await this.registration();
    const subscription = registration && await registration.pushManager.getSubscription();
    return {
      supported: !unavailable,
      reason: unavailable ? unavailable.reason : null,
      message: unavailable ? unavailable.message : null,
      permission: "Notification" in globalThis ? globalThis.Notification.permission
        : "unsupported",
      serverEnabled: server ? Boolean(server.enabled) : null,
      subscribed: Boolean(subscription),
      endpointOrigin: subscription ? new URL(subscription.endpoint).origin : null,
    };
  }

  workerUrl(): string {
    return new URL(this.serviceWorkerUrl, globalThis.location.href).href;
  }

  /** This client's service worker registration (not another worker of the app's). */
  async registration(): Promise<ServiceWorkerRegistration | null> {
    const registration = await navigator.serviceWorker.getRegistration(this.workerUrl());
    const worker = registration &&
      (registration.active || registration.waiting || registration.installing);
    return worker && worker.scriptURL === this.workerUrl() ? registration! : null;
  }

  async config(): Promise<PushConfig> {
    const response = await fetch(`${this.url}/api/push/config`,
      { cache: "no-store", credentials: "omit" });
    if (!response.ok) throw new Error(`GET /api/push/config answered ${response.status}`);
    return response.json();
  }

  /** A call to /api/push/subscriptions with the user's token (renewed once if expired). */
  request<T = unknown>(method: string, body: unknown): Promise<ApiAnswer<T>> {
    return apiRequest<T>(this.url, this.getToken, method, "/api/push/subscriptions", body);
  }
}

/** pushUnavailable()'s answer: the refusals a page can tell before asking anything. */
export interface PushUnavailable {
  ok: false;
  reason: "unsupported" | "ios_not_standalone";
  message: string;
}
type Unavailable = PushUnavailable;

interface PushScope {
  navigator?: Partial<Navigator> & { standalone?: boolean };
  isSecureContext?: boolean;
  matchMedia?: (query: string) => { matches: boolean };
}

/** Why push cannot work in this browser, as enable() answers it, or null. */
export function pushUnavailable(scope: object = globalThis): Unavailable | null {
  const where = scope as PushScope;
  const nav = where.navigator || {};
  if ("serviceWorker" in nav && "PushManager" in scope && "Notification" in scope) return null;
  const apple = isAppleMobile(nav);
  if (apple && !isStandalone(nav, where)) {
    return refusal("ios_not_standalone") as Unavailable;
  }
  if (!where.isSecureContext) return refusal("unsupported", PUSH_MESSAGES.insecure) as Unavailable;
  return refusal("unsupported", apple ? PUSH_MESSAGES.old_ios : undefined) as Unavailable;
}

// iPadOS presents itself as a Mac; its touch screen tells it apart.
function isAppleMobile(nav: PushScope["navigator"] & object): boolean {
  const agent = nav.userAgent || "";
  return /iPhone|iPad|iPod/.test(agent) ||
    (/Macintosh/.test(agent) && (nav.maxTouchPoints || 0) > 1);
}

// Opened from the Home Screen: Safari's own flag, or the manifest's display mode.
function isStandalone(nav: PushScope["navigator"] & object, scope: PushScope): boolean {
  if (nav.standalone === true) return true;
  return Boolean(scope.matchMedia && scope.matchMedia("(display-mode: standalone)").matches);
}

// PushManager.subscribe() needs an active worker; a worker registered for a scope
// that does not cover this page never becomes navigator.serviceWorker.ready.
function activated(registration: ServiceWorkerRegistration): Promise<ServiceWorkerRegistration> {
  if (registration.active) return Promise.resolve(registration);
  const worker = (registration.installing || registration.waiting)!;
  return new Promise((resolve, reject) => {
    worker.addEventListener("statechange", () => {
      if (worker.state === "activated") resolve(registration);
      if (worker.state === "redundant") reject(new Error("the service worker failed to install"));
    });
  });
}

// The browser's subscription, made anew when it was made with another server key
// (VAPID keys rotated): pushes signed with the new key would be refused.
async function subscribeWith(registration: ServiceWorkerRegistration,
  key: Uint8Array<ArrayBuffer>): Promise<PushSubscription> {
  const existing = await registration.pushManager.getSubscription();
  const previousKey = existing && existing.options && existing.options.applicationServerKey;
  if (existing && (!previousKey || sameBytes(new Uint8Array(previousKey), key))) return existing;
  if (existing) await existing.unsubscribe();
  return registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
}

function withTimeout<T>(ms: number, name: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new Error(`the browser's push service did not answer within ${ms / 1000} s`);
      err.name = name;
      reject(err);
    }, ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** A VAPID public key (base64url) as the bytes PushManager.subscribe() takes. */
export function base64UrlToBytes(text: string): Uint8Array<ArrayBuffer> {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64.padEnd(Math.ceil(base64.length / 4) * 4, "=");
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

const PUSH_MESSAGES = {
  unsupported: "This browser cannot receive Web Push (no service worker, PushManager or "
    + "Notification).",
  insecure: "Web Push needs a secure page: HTTPS, or localhost while developing.",
  old_ios: "Web Push on iPhone and iPad needs iOS/iPadOS 16.4 or later.",
  ios_not_standalone: "On iPhone and iPad, Web Push works only in the web app opened from "
    + "the Home Screen: tap Share, then Add to Home Screen, and open it from there.",
  permission_denied: "Notifications are blocked for this site: allow them in the browser's "
    + "site settings (on iPhone: Settings > Notifications > this app).",
  server_disabled: "The notification server has Web Push turned off (no VAPID_PRIVATE_KEY).",
  subscribe_failed: "Subscribing to Web Push failed",
} as const;

const PERMISSION: Partial<Record<NotificationPermission, string>> = {
  default: "The permission prompt was dismissed: ask again from a click.",
  denied: PUSH_MESSAGES.permission_denied,
};

function refusal(reason: Exclude<PushReason, "subscribe_failed">,
  message?: string): EnablePushResult {
  return { ok: false, reason, message: message || PUSH_MESSAGES[reason] };
}

function subscribeFailed(code: string, detail: string | undefined): EnablePushResult {
  const message = `${PUSH_MESSAGES.subscribe_failed} (${code})${detail ? `: ${detail}` : "."}`;
  return { ok: false, reason: "subscribe_failed", code, message };
}

// -- Errors in plain words ------------------------------------------------------------

const MESSAGES: Record<string, string> = {
  token_missing: "No token was sent. Sign in again.",
  token_invalid: "The token was not accepted (bad signature, wrong audience or malformed).",
  token_expired: "The token has expired. A fresh one is needed.",
  server_unavailable: "The server could not check the token just now (its database?); retrying.",
  server_busy: "The server is taking many connections at once; retrying shortly.",
  sync_failed: "Fetching missed notifications failed; they will come on the next connect.",
  "xhr poll error": "The server could not be reached over HTTP (down, blocked, or CORS).",
  "websocket error": "The WebSocket could not be opened (proxy, firewall or origin).",
  "timeout": "The server did not answer the handshake in time.",
};

/** A connection error's code in plain words. */
export function describeError(code: ClientError["code"]): string {
  return MESSAGES[code] || `Connection failed: ${code}`;
}

function safeStorage(): StorageLike | null {
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
