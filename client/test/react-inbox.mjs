// The hook's inbox against a real server: <NotificationProvider> under <StrictMode>,
// rendered by react-dom into jsdom, over real socket.io-client. Driven by
// tests/unit/client/test_client_package.py, which starts the server and reads the JSON
// report this prints as its last line. What it measures:
//
//   - notifications stored before the mount: the first page, newest first, with the
//     server's unread count, requested once although StrictMode mounted twice;
//   - loadMore(): the next pages (before = the last page's next_before), one request
//     for two calls at once, none after the last page;
//   - a live notification: at the top, once, counted;
//   - a reload (the tree unmounted and mounted again) after two notifications came
//     while away: they are in the first page and in the socket's replay, and show once;
//     the count is the server's from the first render that shows notifications.
//
// Environment: NOTIFY_URL, NOTIFY_API_KEY, ORIGIN (an origin the server allows), USER,
// TOKEN (that user's).
import {
  nodeSocketOptions, reactInJsdom, recordSockets, sleep, strictApp, until,
} from "./support.mjs";

const env = process.env;
const SERVER = env.NOTIFY_URL;
const PAGE = 10;
const SEEDED = 25;
const SETTLE_MS = 800; // long enough for a stray request or a duplicate to have landed

const react = await reactInJsdom(env.ORIGIN);
const { createRoot } = react;
const { NotificationProvider, useNotifications } = await import(
  "@notification-backend/client/react");

// The inbox requests the client sends (GET /api/notifications), by their query.
const inboxRequests = [];
const realFetch = globalThis.fetch;
globalThis.fetch = (input, init = {}) => {
  const url = new URL(String(input));
  if (url.pathname === "/api/notifications" && (init.method || "GET") === "GET") {
    inboxRequests.push(Object.fromEntries(url.searchParams));
  }
  return realFetch(input, init);
};

const { opened, countingIo } = recordSockets(react.io);

let hook = null;
const renders = []; // what each render showed: {loading, items, unread}
function Probe() {
  hook = useNotifications();
  renders.push({ loading: hook.loading, items: hook.items.length, unread: hook.unreadCount });
  return null;
}

function app() {
  return strictApp(react, NotificationProvider, {
    url: SERVER,
    io: countingIo,
    userId: env.USER,
    getToken: () => env.TOKEN,
    pageSize: PAGE,
    socketOptions: nodeSocketOptions(env.ORIGIN),
  }, Probe);
}

async function call(method, path, key, body) {
  const response = await realFetch(`${SERVER}${path}`, {
    method,
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status}`);
  return response.json();
}

async function store(titles) {
  const answer = await call("POST", "/api/notifications/bulk", env.NOTIFY_API_KEY, {
    notifications: titles.map((title) => ({ user_id: env.USER, type: "inbox-test", title })),
  });
  return answer.results.map((r) => r.notifications[0].id);
}

const ids = () => hook.items.map((n) => n.id);
const settled = () => !hook.loading && hook.connected;

const report = { steps: {} };
let root = createRoot(document.getElementById("root"));
try {
  // 1. Stored before the mount, five of them read: the first page shows on mount.
  const seeded = await store(Array.from({ length: SEEDED }, (_, i) => `stored ${i + 1}`));
  const read = [...seeded.slice(0, 4), seeded[SEEDED - 3]];
  await call("POST", "/api/notifications/read", env.TOKEN, { ids: read });
  root.render(app());
  await until("the first page", () => hook && settled() && hook.items.length >= PAGE);
  await sleep(SETTLE_MS);
  report.steps.mounted = {
    seeded,
    read,
    items: ids(),
    read_items: hook.items.filter((n) => n.read_at).map((n) => n.id),
    unread: hook.unreadCount,
    has_more: hook.hasMore,
    requests: [...inboxRequests],
    sockets: opened.length,
  };

  // 2. loadMore(): two calls at once are one request; then the last page; then none.
  const sent = inboxRequests.length;
  const first = hook.loadMore();
  const second = hook.loadMore();
  await Promise.all([first, second]);
  await until("the second page", () => hook.items.length >= 2 * PAGE);
  const afterSecond = { items: ids(), has_more: hook.hasMore };
  await hook.loadMore();
  await until("the last page", () => hook.items.length >= SEEDED);
  const afterLast = { items: ids(), has_more: hook.hasMore };
  await hook.loadMore(); // nothing older: no request
  report.steps.paged = {
    same_promise: first === second,
    second: afterSecond,
    last: afterLast,
    requests: inboxRequests.slice(sent),
    read_items: hook.items.filter((n) => n.read_at).map((n) => n.id),
  };

  // 3. A live one: at the top, once, counted.
  const [live] = await store(["live"]);
  await until("the live notification", () => hook.items[0]?.id === live);
  await sleep(SETTLE_MS);
  report.steps.live = { id: live, items: ids(), unread: hook.unreadCount };

  // 4. A reload: unmounted, two come while away, mounted again in a new root.
  root.unmount();
  const away = await store(["away 1", "away 2"]);
  const before = inboxRequests.length;
  const firstRender = renders.length;
  root = createRoot(document.getElementById("root"));
  root.render(app());
  await until("the inbox after the reload",
    () => settled() && hook.items.some((n) => n.id === away[1]));
  await sleep(SETTLE_MS);
  const shown = renders.slice(firstRender);
  report.steps.reloaded = {
    away,
    items: ids(),
    unread: hook.unreadCount,
    has_more: hook.hasMore,
    requests: inboxRequests.slice(before),
    // the count on the first render that showed notifications
    unread_when_shown: (shown.find((r) => r.items > 0) || {}).unread,
    badge_over_empty_list: shown.filter((r) => !r.loading && r.items === 0 && r.unread > 0)
      .length,
  };
  root.unmount();
} catch (err) {
  report.error = String(err && err.stack || err);
  report.hook = hook && { state: hook.state, items: hook.items.length, loading: hook.loading,
                          inbox_error: hook.inboxError && hook.inboxError.message };
  try {
    root.unmount();
  } catch {
    // already unmounted
  }
}

for (const socket of opened) socket.disconnect();
console.log(JSON.stringify(report));
process.exit(report.error ? 1 : 0);
