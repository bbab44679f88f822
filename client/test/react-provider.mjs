// The React entry against a real server: <NotificationProvider> under <StrictMode>,
// rendered with react-dom/client into a jsdom document, over real socket.io-client.
// Driven by tests/unit/client/test_client_package.py, which starts the server and reads the JSON
// report this prints as its last line. What it measures:
//
//   - after StrictMode's double mount, how many sockets the server counts (its
//     /metrics gauge notifier_sockets_connected) and how many this process holds open;
//   - that notifications reach the hook's items, and unreadCount and markRead;
//   - after a change of user, a sign-out (userId null) and an unmount, the same counts.
//
// Environment: NOTIFY_URL, NOTIFY_API_KEY, ORIGIN (an origin the server allows),
// USER_A, USER_B, TOKEN_A, TOKEN_B.
import {
  WAIT_MS, nodeSocketOptions, reactInJsdom, recordSockets, sleep, strictApp, until,
} from "./support.mjs";

const env = process.env;
const URL = env.NOTIFY_URL;
const TOKENS = { [env.USER_A]: env.TOKEN_A, [env.USER_B]: env.TOKEN_B };
const SETTLE_MS = 1500; // long enough for a stray second socket to have connected

const react = await reactInJsdom(env.ORIGIN);
const { createRoot } = react;
const { NotificationProvider, useNotifications } = await import(
  "@notification-backend/client/react");

const report = { steps: {} };
const { opened, countingIo } = recordSockets(react.io); // every socket the clients made

let hook = null; // the latest value useNotifications() gave
let renders = 0;
function Probe() {
  hook = useNotifications();
  renders += 1;
  return null;
}

// As a React app's entry renders it, under <StrictMode>.
function app(userId) {
  return strictApp(react, NotificationProvider, {
    url: URL,
    io: countingIo,
    userId,
    getToken: () => TOKENS[userId],
    socketOptions: nodeSocketOptions(env.ORIGIN),
  }, Probe);
}

async function serverSockets() {
  const text = await (await fetch(`${URL}/metrics`)).text();
  let total = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("notifier_sockets_connected{")) total += Number(line.split(" ").at(-1));
  }
  return total;
}

// The server's count, once it has settled on `expected` (or whatever it shows then).
async function serverSocketsSettled(expected) {
  const deadline = Date.now() + WAIT_MS;
  let count = await serverSockets();
  while (count !== expected && Date.now() < deadline) {
    await sleep(100);
    count = await serverSockets();
  }
  await sleep(SETTLE_MS);
  return serverSockets();
}

async function notify(userId, title) {
  const response = await fetch(`${URL}/api/notifications`, {
    method: "POST",
    headers: { Authorization: `Bearer ${env.NOTIFY_API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ user_id: userId, type: "react-test", title }),
  });
  if (response.status !== 201) throw new Error(`POST /api/notifications: ${response.status}`);
  return (await response.json()).notifications[0].id;
}

function clientSide() {
  return {
    created: opened.length,
    connected: opened.filter((s) => s.connected).length,
    // socket.io-client's `active`: connected, or still trying to (not closed).
    active: opened.filter((s) => s.active).length,
  };
}

async function step(name, measure) {
  report.steps[name] = await measure();
}

const root = createRoot(document.getElementById("root"));
try {
  // 1. Sign in as A under StrictMode: mount, unmount, mount.
  root.render(app(env.USER_A));
  await until("A connected", () => hook && hook.userId === env.USER_A && hook.connected);
  await step("after_double_mount", async () => ({
    server_sockets: await serverSocketsSettled(1),
    ...clientSide(),
    state: hook.state,
    user: hook.userId,
    unread: hook.unreadCount,
  }));

  // 2. Notifications reach the hook's items, newest first, and count as unread.
  const first = await notify(env.USER_A, "first for A");
  const second = await notify(env.USER_A, "second for A");
  await until("A's notifications in items", () => hook.items.length >= 2);
  await sleep(300); // a duplicate, if the server sent one, would land by now
  await step("notifications", async () => ({
    ids: [first, second],
    items: hook.items.map((n) => ({ id: n.id, title: n.title, read_at: n.read_at })),
    unread: hook.unreadCount,
  }));

  // 3. markRead: the server's answer, and the hook's items and count follow it.
  const reply = await hook.markRead([first]);
  await until("markRead reflected", () => hook.unreadCount === reply.unread_count);
  await step("mark_read", async () => ({
    reply,
    unread: hook.unreadCount,
    read: hook.items.filter((n) => n.read_at).map((n) => n.id),
  }));

  // 4. Another user signs in: A's client is closed, B's is the one socket.
  root.render(app(env.USER_B));
  await until("B connected", () => hook.userId === env.USER_B && hook.connected);
  const forA = await notify(env.USER_A, "for A, after the switch");
  const forB = await notify(env.USER_B, "for B");
  await until("B's notification in items", () => hook.items.some((n) => n.id === forB));
  await sleep(500);
  await step("after_user_change", async () => ({
    server_sockets: await serverSocketsSettled(1),
    ...clientSide(),
    user: hook.userId,
    items: hook.items.map((n) => n.id),
    for_a: forA,
    for_b: forB,
  }));

  // 5. Sign-out: no user, no socket.
  root.render(app(null));
  await until("signed out", () => hook.state === "signed_out");
  await step("after_sign_out", async () => ({
    server_sockets: await serverSocketsSettled(0),
    ...clientSide(),
    state: hook.state,
    items: hook.items.length,
    unread: hook.unreadCount,
  }));

  // 6. Signed in again, then the whole tree unmounted: no socket either.
  root.render(app(env.USER_A));
  await until("A connected again", () => hook.userId === env.USER_A && hook.connected);
  const again = await serverSocketsSettled(1);
  root.unmount();
  await step("after_unmount", async () => ({
    server_sockets_before: again,
    server_sockets: await serverSocketsSettled(0),
    ...clientSide(),
  }));
  report.renders = renders;
} catch (err) {
  report.error = String(err && err.stack || err);
  report.hook = hook && { state: hook.state, user: hook.userId, error: hook.error };
  try {
    root.unmount();
  } catch {
    // already unmounted
  }
}

for (const socket of opened) socket.disconnect(); // nothing of ours outlives the run
console.log(JSON.stringify(report));
process.exit(report.error ? 1 : 0);
