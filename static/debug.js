// The /debug page: drives the reference client and shows what the server and the
// connection are doing, and the user's preferences. Loaded as a file (no inline
// script) so a strict CSP works.
//
// The client is the package in client/, built into /static/notifications.js (committed
// with its source). socket.io-client is the classic script before this one (from npm's
// copy on the server, SOCKETIO_CLIENT_URL, or jsDelivr). Both are checked here: when
// one did not load, the page still shows the server's facts and says what is missing
// instead of stopping.
const $ = (id) => document.getElementById(id);
const body = document.body;
const development = body.dataset.development === "1";
const { NotificationClient, WebPush } = await import("./notifications.js").catch((err) => {
  console.error("notifications: the client package could not be loaded", err);
  return {};
});
const clientBuilt = Boolean(NotificationClient && WebPush);
const socketIoLoaded = typeof globalThis.io === "function";
const STORAGE_KEY = "notifications:debug:last_id";
const MAX_EVENTS = 200;
const PING_EVERY_MS = 10000;

let client = null;
let rtts = [];
// Web Push for the user of the token on the page, with the service worker this server
// serves (/static/notifications-sw.js, on this page's origin).
const push = clientBuilt
  ? new WebPush({ url: location.origin, getToken: () => $("token").value.trim() }) : null;

function text(id, value, tone) {
  const el = $(id);
  if (!el) return;
  el.textContent = value;
  el.className = tone || "";
}

function logEvent(name, payload) {
  const item = document.createElement("li");
  const time = new Date().toISOString().slice(11, 23);
  const head = document.createElement("strong");
  head.textContent = `${time} ${name}`;
  item.append(head);
  if (payload !== undefined) {
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(payload, null, 1);
    item.append(pre);
  }
  item.dataset.event = name;
  const list = $("events");
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

async function getJson(url, options) {
  const response = await fetch(url, { cache: "no-store", ...options });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = (data && data.error) || {};
    const failure = new Error(`${response.status} ${error.code || ""} ${error.message || ""}`
      .trim());
    failure.status = response.status;
    failure.code = error.code;
    throw failure;
  }
  return data;
}

async function showFacts() {
  const facts = $("facts");
  try {
    const health = await getJson("/healthz");
    facts.replaceChildren();
    for (const [key, value] of Object.entries(health)) {
      const dt = document.createElement("dt");
      dt.textContent = key.replaceAll("_", " ");
      const dd = document.createElement("dd");
      dd.textContent = Array.isArray(value) ? value.join(", ") : String(value);
      dd.id = `fact-${key}`;
      facts.append(dt, dd);
    }
  } catch (err) {
    text("fact-status", `GET /healthz failed: ${err.message}`, "bad");
  }
}

async function checkOrigin(origin) {
  const data = await getJson(`/debug/origin?origin=${encodeURIComponent(origin)}`);
  return data.allowed;
}

async function showOwnOrigin() {
  const origin = location.origin;
  try {
    const allowed = await checkOrigin(origin);
    text("origin-line", allowed
      ? `This page's origin ${origin} is allowed to connect.`
      : `This page's origin ${origin} is NOT allowed: add it to FRONTEND_URLS.`,
    allowed ? "good" : "bad");
  } catch (err) {
    text("origin-line", `Origin check failed: ${err.message}`, "bad");
  }
}

async function onOriginForm(event) {
  event.preventDefault();
  const origin = $("origin-input").value.trim().replace(/\/+$/, "");
  if (!origin) return;
  try {
    const allowed = await checkOrigin(origin);
    text("origin-other", `${origin} ${allowed ? "is allowed" : "is NOT allowed (not in FRONTEND_URLS)"}`,
      allowed ? "good" : "bad");
  } catch (err) {
    text("origin-other", `Origin check failed: ${err.message}`, "bad");
  }
}

async function mintToken() {
  try {
    const data = await getJson("/debug/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user_id: $("mint-user").value.trim() }),
    });
    $("token").value = data.token;
    logEvent("token minted", { user_id: data.user_id, expires_in: data.expires_in });
  } catch (err) {
    text("error", `Minting failed: ${err.message}`, "bad");
  }
}

// A one-time sign-in link (POST /debug/links) opens this page as /debug#code=...; the
// code, which no server saw in the URL, is traded once for a token. It leaves the
// address bar first, so a reload, a bookmark or a screenshot holds no code.
async function signInWithLink() {
  const match = /(?:^|&)code=([^&]+)/.exec(location.hash.slice(1));
  if (!match) return;
  history.replaceState(null, "", location.pathname + location.search);
  text("sign-in", "Signing in with the link…");
  try {
    const data = await getJson("/debug/sign-in", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ code: decodeURIComponent(match[1]) }),
    });
    $("token").value = data.token;
    text("sign-in", `Signed in as ${data.user_id} for ${Math.round(data.expires_in / 60)} `
      + "minutes: Connect to test.", "good");
    logEvent("signed in with a link", { user_id: data.user_id, expires_in: data.expires_in });
  } catch (err) {
    text("sign-in", err.code === "link_spent"
      ? "This sign-in link was used already or has expired: ask for a new one."
      : `Signing in with the link failed: ${err.message}`, "bad");
  }
}

function showLastId() {
  text("last-id", client && client.lastId !== null ? String(client.lastId)
    : localStorage.getItem(STORAGE_KEY) || "none");
}

function setButtons(connected) {
  $("connect").disabled = !socketIoLoaded || !clientBuilt;
  $("disconnect").disabled = !client;
  $("ping").disabled = !connected;
  if ($("notify")) $("notify").disabled = !connected;
}

function connect() {
  if (client) client.close();
  rtts = [];
  const transports = $("transports").value.split(",");
  client = new NotificationClient({
    url: location.origin,
    transports,
    storageKey: STORAGE_KEY,
    // Asked on every (re)connect; the page only has what was pasted or minted.
    getToken: ({ expired }) => {
      if (expired) logEvent("client asked for a fresh token (the old one expired)");
      return $("token").value.trim();
    },
    socketOptions: { reconnectionDelayMax: 5000 },
  });
  wire(client);
  client.connect();
  text("state", "connecting…");
  setButtons(false);
}

function wire(c) {
  c.on("state", ({ state, reason }) => {
    text("state", reason ? `${state} (${reason})` : state,
      state === "connected" ? "good" : state === "disconnected" ? "bad" : "");
    logEvent(state, reason ? { reason } : undefined);
    setButtons(state === "connected");
    if (state === "connected") {
      text("error", "–");
      measurePing();
    }
  });
  c.on("transport", ({ name, upgraded }) => {
    text("transport", upgraded ? `${name} (upgraded from polling)` : name);
    logEvent(upgraded ? "transport upgraded" : "transport", { name });
  });
  c.on("auth_success", (data) => {
    text("user", data.user_id);
    text("unread", String(data.unread_count));
    logEvent("auth_success", data);
  });
  c.on("notification", (n) => {
    logEvent("notification", n);
    showLastId();
  });
  c.on("sync_complete", (data) => {
    logEvent("sync_complete", data);
    showLastId();
  });
  c.on("receipts", (data) => logEvent(data.error ? "receipts failed" : "receipts acked", data));
  c.on("unread_count", (data) => {
    text("unread", String(data.unread_count));
    logEvent("unread_count", data);
  });
  c.on("error", ({ code, message }) => {
    text("error", `${code}: ${message}`, "bad");
    logEvent("connect_error", { code, meaning: message });
  });
}

function disconnect() {
  if (client) client.close();
  client = null;
  text("state", "not connected");
  setButtons(false);
}

function measurePing() {
  if (!client || !client.connected) return;
  // An application-level round trip: the server acks an unknown event at once with
  // {"error": {"code": "unknown_event"}}, so this times a full request and answer
  // through the same transport the notifications use.
  const started = performance.now();
  client.socket.timeout(10000).emit("rtt_probe", (err) => {
    if (err) {
      text("rtt", "no answer within 10 s", "bad");
      return;
    }
    const ms = Math.round(performance.now() - started);
    rtts = [...rtts.slice(-9), ms];
    const avg = Math.round(rtts.reduce((a, b) => a + b, 0) / rtts.length);
    text("rtt", `${ms} ms (average of ${rtts.length}: ${avg} ms)`);
  });
}

async function sendTest() {
  try {
    const data = await getJson("/debug/notify", {
      method: "POST",
      headers: { Authorization: `Bearer ${$("token").value.trim()}` },
    });
    logEvent("test notification sent", data);
  } catch (err) {
    text("error", `Sending failed: ${err.message}`, "bad");
  }
}

async function showPushStatus() {
  if (!push) {
    text("push-supported", "unknown: the notification client is not built", "bad");
    return;
  }
  try {
    const status = await push.status();
    text("push-supported", status.supported ? "can receive Web Push"
      : `no (${status.reason}): ${status.message}`, status.supported ? "good" : "bad");
    text("push-permission", status.permission,
      { granted: "good", denied: "bad" }[status.permission] || "");
    text("push-server", status.serverEnabled === null ? "GET /api/push/config failed"
      : status.serverEnabled ? "push enabled" : "push disabled (VAPID_PRIVATE_KEY is not set)",
    status.serverEnabled ? "good" : "bad");
    text("push-subscribed", status.subscribed
      ? `this browser is subscribed (push service ${status.endpointOrigin})` : "none here");
  } catch (err) {
    text("push-supported", `Checking push failed: ${err.message}`, "bad");
  }
}

function showPushResult(name, result) {
  text("push-result", result.ok ? describePush(result) : `${result.reason}: ${result.message}`,
    result.ok ? "good" : "bad");
  logEvent(name, result);
  showPushStatus();
}

function describePush(result) {
  if (result.id !== undefined) return `subscribed: subscription ${result.id} on the server`;
  if (!result.removed) return "this browser had no subscription";
  return result.serverError ? `unsubscribed here; the server said ${result.serverError}`
    : "unsubscribed here and on the server";
}

function enablePush() {
  // Straight from the click: enable() asks for the permission before it awaits
  // anything, as Safari shows the prompt only during a user gesture.
  push.enable().then((result) => showPushResult("enablePush", result),
    (err) => text("push-result", `enablePush failed: ${err.message}`, "bad"));
}

function disablePush() {
  push.disable().then((result) => showPushResult("disablePush", result),
    (err) => text("push-result", `disablePush failed: ${err.message}`, "bad"));
}

async function sendTestPush() {
  try {
    const data = await getJson("/api/push/test", {
      method: "POST",
      headers: { Authorization: `Bearer ${$("token").value.trim()}` },
    });
    const items = data.results.map((r) => {
      const item = document.createElement("li");
      item.dataset.outcome = r.outcome;
      item.textContent = `subscription ${r.id} (${r.origin}): ${r.outcome}`
        + (r.status ? `, push service answered ${r.status}` : "");
      return item;
    });
    $("push-results").replaceChildren(...items);
    const sent = data.results.filter((r) => r.outcome === "sent").length;
    text("push-result", data.results.length
      ? `test push: sent to ${sent} of ${data.results.length} subscription(s)`
      : "this user has no push subscription", sent ? "good" : "bad");
    logEvent("test push", data);
  } catch (err) {
    text("push-result", `Test push failed: ${err.message}`, "bad");
  }
}

// -- Preferences ----------------------------------------------------------------------

// HTTP only: this client never connects. Its constructor wants socket.io-client's
// io, which its HTTP calls do not use; the page may have no socket.io-client at all.
const preferences = clientBuilt ? new NotificationClient({
  url: location.origin,
  io: globalThis.io || (() => { throw new Error("socket.io-client is not loaded"); }),
  getToken: () => $("token").value.trim(),
  storage: null,
  document: null,
  receipts: false,
}) : null;
let loadedPreferences = null; // what the server last answered: Save sends the difference

function showPreferences(prefs) {
  loadedPreferences = prefs;
  $("prefs-json").textContent = JSON.stringify(prefs, null, 2);
  $("prefs-in-app").checked = prefs.channels.in_app;
  $("prefs-push").checked = prefs.channels.push;
  $("prefs-timezone").value = prefs.timezone || "";
  const [first] = prefs.quiet_hours;
  $("prefs-quiet-start").value = first ? first.start : "";
  $("prefs-quiet-end").value = first ? first.end : "";
  const more = prefs.quiet_hours.length - 1;
  $("prefs-more").hidden = more < 1;
  $("prefs-more").textContent = more > 0 ? `…and ${more} more window(s). Saving a changed `
    + "window replaces them all with it." : "";
  $("prefs-fields").disabled = false;
}

function preferencesFailed(what, err) {
  text("prefs-result", `${what} failed: ${err.code || err.name}: ${err.message}`, "bad");
  logEvent(`preferences: ${what.toLowerCase()} failed`,
    { code: err.code, status: err.status, message: err.message });
}

async function loadPreferences() {
  text("prefs-result", "loading…");
  try {
    const prefs = await preferences.getPreferences();
    showPreferences(prefs);
    text("prefs-result", prefs.updated_at ? `loaded (last changed ${prefs.updated_at})`
      : "loaded: the defaults (this user never changed them)", "good");
  } catch (err) {
    preferencesFailed("Loading", err);
  }
}

// The merge patch: what the form changed since the last answer, and nothing else (a
// window left as it was keeps the user's other windows).
function preferencesPatch(before) {
  const patch = {};
  const channels = {};
  for (const [name, id] of [["in_app", "prefs-in-app"], ["push", "prefs-push"]]) {
    if ($(id).checked !== before.channels[name]) channels[name] = $(id).checked;
  }
  if (Object.keys(channels).length) patch.channels = channels;
  const timezone = $("prefs-timezone").value.trim() || null;
  if (timezone !== before.timezone) patch.timezone = timezone;
  const start = $("prefs-quiet-start").value.trim();
  const end = $("prefs-quiet-end").value.trim();
  if (Boolean(start) !== Boolean(end)) {
    throw new Error("Give both ends of the quiet window (HH:MM), or neither.");
  }
  const [first] = before.quiet_hours;
  const same = start ? Boolean(first) && first.start === start && first.end === end
    : before.quiet_hours.length === 0;
  if (!same) patch.quiet_hours = start ? [{ start, end }] : [];
  return patch;
}

async function savePreferences(event) {
  event.preventDefault();
  if (!loadedPreferences) return;
  let patch;
  try {
    patch = preferencesPatch(loadedPreferences);
  } catch (err) {
    text("prefs-result", err.message, "bad");
    return;
  }
  if (!Object.keys(patch).length) {
    text("prefs-result", "Nothing changed.");
    return;
  }
  $("prefs-save").disabled = true;
  text("prefs-result", "saving…");
  try {
    const prefs = await preferences.setPreferences(patch);
    showPreferences(prefs);
    text("prefs-result", `saved: ${Object.keys(patch).join(", ")}`, "good");
    logEvent("preferences saved", { patch, answer: prefs });
  } catch (err) {
    preferencesFailed("Saving", err);
  } finally {
    $("prefs-save").disabled = false;
  }
}

// The browser's time zones as suggestions, its own as the placeholder.
function suggestZones() {
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone")
    : [];
  $("prefs-zones").replaceChildren(...zones.map((zone) => {
    const option = document.createElement("option");
    option.value = zone;
    return option;
  }));
  $("prefs-timezone").placeholder = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
}

function forget() {
  localStorage.removeItem(STORAGE_KEY);
  showLastId();
  logEvent("last_id forgotten: the next connect replays nothing");
}

// What did not load, said on the page: static/notifications.js (a broken deployment,
// a proxy that blocks it) or socket.io-client (npm's copy missing and jsDelivr out of
// reach, or a SOCKETIO_CLIENT_URL that fails).
function banner(id, message) {
  const item = document.createElement("p");
  item.id = id;
  item.className = "banner bad";
  item.textContent = message;
  document.querySelector("main h1").after(item);
}

function showMissingClient() {
  if (!socketIoLoaded) {
    const script = document.querySelector("script:not([type=module])");
    banner("no-client", `socket.io-client did not load from ${script ? script.src : "?"}: `
      + "run npm ci on the server, or set SOCKETIO_CLIENT_URL to a copy this device can "
      + "reach. Connect needs it; the server facts below still work.");
  }
  if (clientBuilt) return;
  for (const id of ["push-enable", "push-disable", "prefs-load"]) $(id).disabled = true;
  banner("no-notification-client", "The notification client (/static/notifications.js) "
    + "did not load: the server's copy is missing or blocked (it comes with the "
    + "repository; npm run build in client/ writes it again). Connect, Web Push and "
    + "preferences need it; the server facts below still work.");
}

function start() {
  showMissingClient();
  $("connect").addEventListener("click", connect);
  $("disconnect").addEventListener("click", disconnect);
  $("forget").addEventListener("click", forget);
  $("ping").addEventListener("click", measurePing);
  $("clear").addEventListener("click", () => $("events").replaceChildren());
  $("origin-form").addEventListener("submit", onOriginForm);
  $("push-enable").addEventListener("click", enablePush);
  $("push-disable").addEventListener("click", disablePush);
  $("push-test").addEventListener("click", sendTestPush);
  if (preferences) {
    $("prefs-load").addEventListener("click", loadPreferences);
    $("prefs-form").addEventListener("submit", savePreferences);
  }
  suggestZones();
  if (development) {
    $("mint").addEventListener("click", mintToken);
    $("notify").addEventListener("click", sendTest);
  }
  document.addEventListener("visibilitychange", () => logEvent(`page ${document.visibilityState}`));
  setInterval(measurePing, PING_EVERY_MS);
  showFacts();
  showOwnOrigin();
  showLastId();
  showPushStatus();
  setButtons(false);
  body.dataset.ready = "1";
  signInWithLink();
}

start();
