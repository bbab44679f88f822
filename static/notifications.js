// Built from client/src/index.ts by `npm run build` in client/: do not edit; commit it with the source.
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
// Polling first, then an upgrade to WebSocket: polling gets through every proxy and
// captive network, the upgrade makes delivery cheap where WebSocket works. Nothing
// here depends on cookies or headers: Safari drops cross-site cookies (ITP), and
// browsers ignore `extraHeaders` on WebSocket, so the token travels in the Socket.IO
// `auth` payload, which every transport carries. Pass ["websocket"] when the server
// runs several replicas without sticky sessions (SOCKETIO_TRANSPORTS=websocket).
export const DEFAULT_TRANSPORTS = Object.freeze(["polling", "websocket"]);
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
const RECEIPT_RETRIED = new Set(["timeout", "rate_limited", "not_connected",
    "database_unavailable", "internal_error"]);
// markRead() over the socket; these failures are retried once over HTTP.
const MARK_READ_TIMEOUT_MS = 10000;
const MARK_READ_OVER_HTTP = new Set(["timeout", "not_connected", "rate_limited"]);
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
const RETRIED_REFUSALS = new Set(["server_busy", "server_unavailable"]);
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;
/**
 * A failed request (markRead, the preferences and device calls): the server's error
 * code (or "network_error", "timeout"), its message, and the HTTP status.
 */
export class NotificationRequestError extends Error {
    code;
    /** The HTTP status; 0 when the answer came over the socket or never came. */
    status;
    constructor(code, message, status = 0) {
        super(message || `the request failed (${code})`);
        this.name = "NotificationRequestError";
        this.code = code;
        this.status = status;
    }
}
export class NotificationClient {
    url;
    io;
    getToken;
    transports;
    storage;
    storageKey;
    socketOptions;
    document;
    /** Web Push on this device; also through enablePush(), disablePush(), pushStatus(). */
    push;
    /** The socket.io-client socket, from the first connect() on. */
    socket = null;
    listeners = new Map();
    seen = new Set();
    receipts;
    onVisibility = () => this.reconnectIfVisible();
    syncing = false;
    pendingMax = 0;
    tokenExpired = false;
    retriedExpired = false;
    refusedInARow = 0;
    retryTimer = null;
    closed = true;
    memoryLastId = null;
    constructor(options) {
        const { url, getToken } = options || {};
        if (!url || typeof getToken !== "function") {
            throw new TypeError("NotificationClient needs {url, getToken}");
        }
        const io = options.io || globalThis.io;
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
            ? globalThis.document || null : options.document;
        this.receipts = options.receipts === false ? null
            : new Receipts(() => this.socket, (result) => this.emit("receipts", result));
        this.push = new WebPush({ url, getToken, serviceWorkerUrl: options.serviceWorkerUrl });
    }
    /** Listen to an event; returns the function that stops listening. */
    on(event, fn) {
        let set = this.listeners.get(event);
        if (!set)
            this.listeners.set(event, set = new Set());
        set.add(fn);
        return () => {
            set.delete(fn);
        };
    }
    emit(event, payload) {
        for (const fn of this.listeners.get(event) || []) {
            try {
                fn(payload);
            }
            catch (err) {
                console.error(`notifications: a "${event}" listener failed`, err);
            }
        }
    }
    /** The newest notification id this client has, as kept in storage; null if none. */
    get lastId() {
        const raw = this.storage ? this.storage.getItem(this.storageKey) : this.memoryLastId;
        const value = Number.parseInt(raw ?? "", 10);
        return Number.isSafeInteger(value) && value >= 0 ? value : null;
    }
    saveLastId(id) {
        if (!Number.isSafeInteger(id) || (this.lastId !== null && id <= this.lastId)) {
            return;
        }
        if (this.storage)
            this.storage.setItem(this.storageKey, String(id));
        else
            this.memoryLastId = String(id);
    }
    /** Open the socket (again, after close()). */
    connect() {
        this.closed = false;
        if (!this.socket)
            this.socket = this.createSocket();
        this.socket.connect();
        if (this.document)
            this.document.addEventListener("visibilitychange", this.onVisibility);
        return this;
    }
    /** Close the socket; nothing reconnects until connect(). */
    close() {
        this.closed = true;
        this.cancelRetry();
        if (this.document)
            this.document.removeEventListener("visibilitychange", this.onVisibility);
        if (this.receipts)
            this.receipts.clear();
        if (this.socket)
            this.socket.disconnect();
    }
    /**
     * Web Push on this device; see WebPush below. Call enablePush() from a click or tap
     * handler: iOS asks for the permission only from a user gesture.
     */
    enablePush() {
        return this.push.enable();
    }
    disablePush() {
        return this.push.disable();
    }
    pushStatus() {
        return this.push.status();
    }
    /**
     * Mark some of the user's notifications read (ids), or all of them ("all"). Over
     * the socket when it is connected (over HTTP when it is not, or its answer did not
     * come); the new count is emitted as "unread_count" too. Rejects with a
     * NotificationRequestError.
     */
    async markRead(target) {
        const payload = target === "all" ? { all: true } : { ids: [...target] };
        const socket = this.socket;
        if (socket && socket.connected) {
            let reply = null;
            try {
                reply = await socket.timeout(MARK_READ_TIMEOUT_MS).emitWithAck("mark_read", payload);
            }
            catch {
                reply = null; // no answer in time: over HTTP below
            }
            if (reply && !("error" in reply))
                return this.markedRead(reply);
            if (reply && !MARK_READ_OVER_HTTP.has(reply.error.code)) {
                throw new NotificationRequestError(reply.error.code, reply.error.message);
            }
        }
        const answer = await apiRequest(this.url, this.getToken, "POST", "/api/notifications/read", payload);
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
    getNotifications(query = {}) {
        const params = new URLSearchParams();
        if (query.limit !== undefined)
            params.set("limit", String(query.limit));
        if (query.before !== undefined && query.before !== null) {
            params.set("before", String(query.before));
        }
        if (query.unread)
            params.set("unread", "1");
        const search = params.toString();
        return this.call("GET", `/api/notifications${search ? `?${search}` : ""}`);
    }
    /** The user's unread count (GET /api/notifications/unread-count). */
    async getUnreadCount() {
        const answer = await this.call("GET", "/api/notifications/unread-count");
        return answer.unread_count;
    }
    // -- Preferences and devices (HTTP) -------------------------------------------------
    /** The user's preferences, defaults filled in. Rejects with a NotificationRequestError. */
    getPreferences() {
        return this.call("GET", "/api/preferences");
    }
    /**
     * Change some preferences: a JSON Merge Patch (RFC 7396), so the keys given change
     * and the others stay; null deletes a key (its default comes back). Answers the
     * whole set as the server now has it. A refused value rejects with a
     * NotificationRequestError whose code is "validation_error" and message says which.
     */
    setPreferences(patch) {
        return this.call("PATCH", "/api/preferences", patch, MERGE_PATCH_TYPE);
    }
    /** Replace every preference: the keys left out take their defaults. */
    replacePreferences(preferences) {
        // A set as getPreferences() gave it may come back as it is: updated_at is the
        // server's to set, not an input.
        const body = { ...preferences };
        delete body.updated_at;
        return this.call("PUT", "/api/preferences", body);
    }
    /** The user's push subscriptions (devices), newest first. */
    async pushSubscriptions() {
        const answer = await this.call("GET", "/api/push/subscriptions");
        return answer.subscriptions;
    }
    /**
     * Turn push on or off for one device (an id from enablePush() or
     * pushSubscriptions()) without unsubscribing it. Rejects with "not_found" when
     * it is not one of this user's.
     */
    setPushSubscriptionEnabled(id, enabled) {
        if (!Number.isSafeInteger(id) || id < 1) {
            return Promise.reject(new NotificationRequestError("validation_error", "the subscription id must be a positive integer"));
        }
        return this.call("PATCH", `/api/push/subscriptions/${id}`, { enabled: Boolean(enabled) });
    }
    // An HTTP call whose answer is its JSON body; anything else rejects.
    async call(method, path, body, contentType) {
        const answer = await apiRequest(this.url, this.getToken, method, path, body, contentType);
        if (!answer.ok || !answer.body) {
            throw new NotificationRequestError(answer.code, answer.message, answer.status);
        }
        return answer.body;
    }
    markedRead(reply) {
        this.emit("unread_count", { unread_count: reply.unread_count });
        return reply;
    }
    get connected() {
        return Boolean(this.socket && this.socket.connected);
    }
    /** The transport now in use ("polling" or "websocket"), or null. */
    get transport() {
        const engine = this.socket && this.socket.io.engine;
        return engine && engine.transport ? engine.transport.name : null;
    }
    createSocket() {
        const socket = this.io(this.url, {
            transports: [...this.transports],
            withCredentials: false, // no cookies are used; see the transports comment
            autoConnect: false,
            forceNew: true,
            ...this.socketOptions,
            // A callback, so that every (re)connect asks the app for a current token and
            // sends the newest last_id: a reconnect replays exactly what was missed.
            auth: (send) => {
                this.authPayload().then(send, () => send({ last_id: this.lastId }));
            },
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
        socket.on("connect", () => {
            this.refusedInARow = 0;
            this.setState("connected");
            if (this.receipts)
                this.receipts.flush(); // what waited for the connection
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
    watchTransport(socket) {
        const engine = socket.io.engine;
        this.emit("transport", { name: engine.transport.name, upgraded: false });
        engine.on("upgrade", (transport) => this.emit("transport", {
            name: transport.name, upgraded: true,
        }));
    }
    setState(state, reason) {
        this.emit("state", reason === undefined ? { state } : { state, reason });
    }
    onDisconnect(reason) {
        this.setState("disconnected", reason);
        // socket.io-client does not reconnect after a server-side disconnect; the server
        // does that on token expiry, and then a fresh token is all that is needed.
        if (!this.closed && reason === "io server disconnect" && this.tokenExpired && this.socket) {
            this.socket.connect();
        }
    }
    onConnectError(err) {
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
    retryLater(retryAfterSeconds) {
        this.cancelRetry();
        const backoff = Math.min(RETRY_FIRST_MS * 2 ** this.refusedInARow, RETRY_MAX_MS);
        this.refusedInARow += 1;
        const base = typeof retryAfterSeconds === "number" && retryAfterSeconds > 0
            ? Math.min(retryAfterSeconds * 1000, RETRY_MAX_MS) : backoff;
        this.setState("reconnecting");
        this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            if (!this.closed && this.socket && !this.socket.connected)
                this.socket.connect();
        }, base * (0.5 + Math.random()));
    }
    cancelRetry() {
        if (this.retryTimer !== null)
            clearTimeout(this.retryTimer);
        this.retryTimer = null;
    }
    onNotification(n) {
        if (!n || !Number.isSafeInteger(n.id))
            return;
        if (this.seen.has(n.id)) {
            // The server sends an id again when it has no receipt for it (the first one
            // was lost with a connection): acknowledge it again, show it once.
            this.acknowledge(n.id);
            return;
        }
        this.remember(n.id);
        // While a replay is running, the cursor moves only on sync_complete: a live
        // notification held back until the replay ends must not skip what precedes it.
        if (this.syncing)
            this.pendingMax = Math.max(this.pendingMax, n.id);
        else
            this.saveLastId(n.id);
        this.emit("notification", n);
        this.acknowledge(n.id);
    }
    acknowledge(id) {
        if (this.receipts)
            this.receipts.add(id);
    }
    remember(id) {
        this.seen.add(id);
        if (this.seen.size > SEEN_LIMIT)
            this.seen.delete(this.seen.values().next().value);
    }
    onSyncComplete(data) {
        this.retriedExpired = false;
        this.emit("sync_complete", data);
        if (data && Number.isSafeInteger(data.last_id))
            this.saveLastId(data.last_id);
        if (data && data.has_more && data.last_id !== null) {
            this.page(data.last_id);
            return;
        }
        this.finishSync();
    }
    finishSync() {
        this.syncing = false;
        if (this.pendingMax)
            this.saveLastId(this.pendingMax);
        this.pendingMax = 0;
    }
    page(afterId) {
        // More than one replay's worth was missed: fetch the rest in pages, oldest first.
        const socket = this.socket;
        if (!socket)
            return;
        socket.timeout(SYNC_TIMEOUT_MS).emit("sync", { after_id: afterId, limit: SYNC_PAGE }, (err, reply) => {
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
            if (reply.has_more && last)
                this.page(last.id);
            else
                this.finishSync();
        });
    }
    reconnectIfVisible() {
        if (this.closed || !this.socket || !this.document)
            return;
        if (this.document.visibilityState !== "visible" || this.socket.connected)
            return;
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
    currentSocket;
    report;
    queued = new Set();
    timer = null;
    due = 0;
    constructor(currentSocket, report) {
        this.currentSocket = currentSocket;
        this.report = report;
    }
    add(id) {
        this.queued.add(id);
        if (this.queued.size >= RECEIPT_BATCH)
            this.flush();
        else
            this.flushIn(RECEIPT_DELAY_MS);
    }
    // A flush due sooner wins: ids waiting for a retry go with the next batch.
    flushIn(ms) {
        const due = Date.now() + ms;
        if (this.timer && this.due <= due)
            return;
        if (this.timer)
            clearTimeout(this.timer);
        this.due = due;
        this.timer = setTimeout(() => this.flush(), ms);
    }
    flush() {
        if (this.timer)
            clearTimeout(this.timer);
        this.timer = null;
        const socket = this.currentSocket();
        if (!socket || !socket.connected)
            return; // the client flushes again on connect
        while (this.queued.size) {
            const ids = [...this.queued].slice(0, RECEIPT_BATCH);
            ids.forEach((id) => this.queued.delete(id));
            socket.timeout(RECEIPT_TIMEOUT_MS).emit("delivered", { ids }, (err, reply) => this.answered(ids, err, reply));
        }
    }
    answered(ids, err, reply) {
        const error = err ? "timeout"
            : (reply && "error" in reply && reply.error && reply.error.code) || null;
        this.report(error ? { ids, error } : { ids, updated: reply.updated });
        if (!RECEIPT_RETRIED.has(error))
            return;
        ids.forEach((id) => this.queued.add(id));
        this.flushIn(RECEIPT_RETRY_MS);
    }
    clear() {
        if (this.timer)
            clearTimeout(this.timer);
        this.timer = null;
        this.queued.clear();
    }
}
// -- HTTP -----------------------------------------------------------------------------
const JSON_TYPE = "application/json";
// PATCH /api/preferences takes a JSON Merge Patch (RFC 7396), under its own media type.
const MERGE_PATCH_TYPE = "application/merge-patch+json";
// A call to the server with the user's token; a refused, expired token is renewed once.
// `body` undefined sends none (GET); `contentType` is the body's media type.
async function apiRequest(base, getToken, method, path, body, contentType = JSON_TYPE, expired = false) {
    let response;
    try {
        const token = await getToken({ expired });
        const headers = { Authorization: `Bearer ${token}` };
        if (body !== undefined)
            headers["Content-Type"] = contentType;
        response = await fetch(`${base.replace(/\/+$/, "")}${path}`, {
            method,
            credentials: "omit",
            cache: "no-store", // the user's own state: never an earlier answer from a cache
            headers,
            body: body === undefined ? null : JSON.stringify(body),
        });
    }
    catch (err) {
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
function errorMessage(err) {
    return err && typeof err === "object" && "message" in err ? String(err.message) : undefined;
}
function errorName(err) {
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
    url;
    getToken;
    serviceWorkerUrl;
    constructor({ url, getToken, serviceWorkerUrl }) {
        this.url = url.replace(/\/+$/, "");
        this.getToken = getToken;
        this.serviceWorkerUrl = serviceWorkerUrl || DEFAULT_SERVICE_WORKER_URL;
    }
    /**
     * Call from a click or tap handler, and nothing awaited before: Safari shows the
     * permission prompt only during a user gesture, so it is asked for first.
     */
    async enable() {
        const unavailable = pushUnavailable();
        if (unavailable)
            return unavailable;
        const permission = Promise.resolve(globalThis.Notification.requestPermission())
            .catch(() => "denied");
        const server = await this.config().then((config) => ({ config, failed: null }), (err) => ({ config: null, failed: err }));
        if (!server.config)
            return subscribeFailed("network_error", errorMessage(server.failed));
        if (!server.config.enabled || !server.config.vapid_public_key) {
            return refusal("server_disabled");
        }
        const granted = await permission;
        if (granted !== "granted")
            return refusal("permission_denied", PERMISSION[granted]);
        let registration;
        try {
            registration = await activated(await navigator.serviceWorker.register(this.workerUrl()));
        }
        catch (err) { // most often: the front end does not serve the file at that URL
            return subscribeFailed("service_worker_failed", `${this.workerUrl()}: ${errorMessage(err)}`);
        }
        let subscription;
        try {
            subscription = await withTimeout(SUBSCRIBE_TIMEOUT_MS, "push_service_timeout", subscribeWith(registration, base64UrlToBytes(server.config.vapid_public_key)));
        }
        catch (err) {
            if (errorName(err) === "NotAllowedError")
                return refusal("permission_denied");
            return subscribeFailed(errorName(err) || "browser_error", errorMessage(err));
        }
        const answer = await this.request("POST", subscription.toJSON());
        if (!answer.ok || !answer.body)
            return subscribeFailed(answer.code, answer.message);
        return { ok: true, id: answer.body.id };
    }
    /**
     * Unsubscribes this browser (no push reaches it any more), then tells the server:
     * {ok: true, removed}, removed false when there was no subscription. A failed DELETE
     * is reported in serverError (its code); the server drops the subscription anyway at
     * its next push, which the push service answers with 410. {ok: false, reason:
     * "unsubscribe_failed", message} when the browser could not unsubscribe.
     */
    async disable() {
        if (pushUnavailable())
            return { ok: true, removed: false };
        const registration = await this.registration();
        const subscription = registration && await registration.pushManager.getSubscription();
        if (!subscription)
            return { ok: true, removed: false };
        const { endpoint } = subscription;
        try {
            await subscription.unsubscribe();
        }
        catch (err) {
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
    async status() {
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
    workerUrl() {
        return new URL(this.serviceWorkerUrl, globalThis.location.href).href;
    }
    /** This client's service worker registration (not another worker of the app's). */
    async registration() {
        const registration = await navigator.serviceWorker.getRegistration(this.workerUrl());
        const worker = registration &&
            (registration.active || registration.waiting || registration.installing);
        return worker && worker.scriptURL === this.workerUrl() ? registration : null;
    }
    async config() {
        const response = await fetch(`${this.url}/api/push/config`, { cache: "no-store", credentials: "omit" });
        if (!response.ok)
            throw new Error(`GET /api/push/config answered ${response.status}`);
        return response.json();
    }
    /** A call to /api/push/subscriptions with the user's token (renewed once if expired). */
    request(method, body) {
        return apiRequest(this.url, this.getToken, method, "/api/push/subscriptions", body);
    }
}
/** Why push cannot work in this browser, as enable() answers it, or null. */
export function pushUnavailable(scope = globalThis) {
    const where = scope;
    const nav = where.navigator || {};
    if ("serviceWorker" in nav && "PushManager" in scope && "Notification" in scope)
        return null;
    const apple = isAppleMobile(nav);
    if (apple && !isStandalone(nav, where)) {
        return refusal("ios_not_standalone");
    }
    if (!where.isSecureContext)
        return refusal("unsupported", PUSH_MESSAGES.insecure);
    return refusal("unsupported", apple ? PUSH_MESSAGES.old_ios : undefined);
}
// iPadOS presents itself as a Mac; its touch screen tells it apart.
function isAppleMobile(nav) {
    const agent = nav.userAgent || "";
    return /iPhone|iPad|iPod/.test(agent) ||
        (/Macintosh/.test(agent) && (nav.maxTouchPoints || 0) > 1);
}
// Opened from the Home Screen: Safari's own flag, or the manifest's display mode.
function isStandalone(nav, scope) {
    if (nav.standalone === true)
        return true;
    return Boolean(scope.matchMedia && scope.matchMedia("(display-mode: standalone)").matches);
}
// PushManager.subscribe() needs an active worker; a worker registered for a scope
// that does not cover this page never becomes navigator.serviceWorker.ready.
function activated(registration) {
    if (registration.active)
        return Promise.resolve(registration);
    const worker = (registration.installing || registration.waiting);
    return new Promise((resolve, reject) => {
        worker.addEventListener("statechange", () => {
            if (worker.state === "activated")
                resolve(registration);
            if (worker.state === "redundant")
                reject(new Error("the service worker failed to install"));
        });
    });
}
// The browser's subscription, made anew when it was made with another server key
// (VAPID keys rotated): pushes signed with the new key would be refused.
async function subscribeWith(registration, key) {
    const existing = await registration.pushManager.getSubscription();
    const previousKey = existing && existing.options && existing.options.applicationServerKey;
    if (existing && (!previousKey || sameBytes(new Uint8Array(previousKey), key)))
        return existing;
    if (existing)
        await existing.unsubscribe();
    return registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
}
function withTimeout(ms, name, promise) {
    let timer;
    const late = new Promise((_, reject) => {
        timer = setTimeout(() => {
            const err = new Error(`the browser's push service did not answer within ${ms / 1000} s`);
            err.name = name;
            reject(err);
        }, ms);
    });
    return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
function sameBytes(a, b) {
    return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
/** A VAPID public key (base64url) as the bytes PushManager.subscribe() takes. */
export function base64UrlToBytes(text) {
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
};
const PERMISSION = {
    default: "The permission prompt was dismissed: ask again from a click.",
    denied: PUSH_MESSAGES.permission_denied,
};
function refusal(reason, message) {
    return { ok: false, reason, message: message || PUSH_MESSAGES[reason] };
}
function subscribeFailed(code, detail) {
    const message = `${PUSH_MESSAGES.subscribe_failed} (${code})${detail ? `: ${detail}` : "."}`;
    return { ok: false, reason: "subscribe_failed", code, message };
}
// -- Errors in plain words ------------------------------------------------------------
const MESSAGES = {
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
    }
    catch {
        return null;
    }
}
