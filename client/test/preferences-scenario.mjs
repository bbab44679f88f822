// usePreferences() against a real server, as one scenario that runs the same in Node
// (react-dom into jsdom: preferences.mjs) and in Chromium (browser/preferences.html).
// It imports only support.mjs (which imports nothing up front): the runner passes
// React, react-dom's createRoot and the package's exports, so each environment loads
// them its own way. It returns a report of what it saw; the Python tests assert on it.
//
// Two components under one <NotificationProvider>, in <StrictMode>, both call
// usePreferences(): they must share one load (one GET, even with StrictMode's mount,
// unmount and mount), show every update's server answer, keep the preferences and
// set `error` on a refused update, follow reload(), a change of user and a sign-out.

import { sleep, until } from "./support.mjs";

// Every request the page makes, as the client sent it: method, path, Content-Type.
// `direct` goes past the record: the test's own requests.
function recordRequests() {
  const seen = [];
  const original = globalThis.fetch;
  const direct = (input, init) => original.call(globalThis, input, init);
  globalThis.fetch = (input, init = {}) => {
    const url = new URL(typeof input === "string" ? input : input.url);
    const headers = new Headers(init.headers || {});
    seen.push({ method: init.method || "GET", path: url.pathname,
                content_type: headers.get("Content-Type") });
    return direct(input, init);
  };
  return { seen, direct, restore: () => { globalThis.fetch = original; } };
}

function summary(value) {
  if (!value) return null;
  return {
    preferences: value.preferences,
    loading: value.loading,
    error: value.error && { name: value.error.name, code: value.error.code,
                            status: value.error.status, message: value.error.message },
  };
}

async function rejection(promise) {
  try {
    await promise;
    return null;
  } catch (err) {
    return { name: err.name, code: err.code, status: err.status, message: err.message };
  }
}

/**
 * env: {url, users: [a, b], tokens: {user: token}, socketOptions}
 * lib: {createElement, StrictMode, createRoot, NotificationProvider, usePreferences,
 *       useNotifications, io}
 */
export async function runPreferencesScenario(env, lib, container) {
  const { createElement, StrictMode, createRoot, NotificationProvider, usePreferences,
          useNotifications, io } = lib;
  const [userA, userB] = env.users;
  const report = { steps: {} };
  const requests = recordRequests();
  const hooks = { settings: null, badge: null, user: null, firstRender: null };

  // Two components of the app that both read the preferences.
  function Settings() {
    const value = usePreferences();
    hooks.settings = value;
    hooks.user = useNotifications().userId;
    if (!hooks.firstRender && hooks.user) hooks.firstRender = summary(value);
    return createElement("pre", { id: "settings" },
      value.preferences ? JSON.stringify(value.preferences) : "loading");
  }
  function Badge() {
    hooks.badge = usePreferences();
    return createElement("span", { id: "badge" },
      hooks.badge.preferences && hooks.badge.preferences.channels.push ? "push on" : "push off");
  }

  function app(userId) {
    return createElement(StrictMode, null,
      createElement(NotificationProvider, {
        url: env.url,
        io,
        userId,
        getToken: () => env.tokens[userId],
        socketOptions: env.socketOptions || {},
      }, createElement(Settings), createElement(Badge)));
  }

  // What the server holds, read past the client.
  async function onServer(userId) {
    const response = await requests.direct(`${env.url}/api/preferences`, {
      headers: { Authorization: `Bearer ${env.tokens[userId]}` }, cache: "no-store" });
    return response.json();
  }
  const preferenceCalls = () => requests.seen.filter((r) => r.path === "/api/preferences");

  const root = createRoot(container);
  try {
    // 1. Mounted under StrictMode: one GET for both components, the defaults shown.
    root.render(app(userA));
    await until("the first preferences", () => hooks.settings && hooks.settings.preferences);
    await until("the badge", () => hooks.badge && hooks.badge.preferences);
    await sleep(300); // a second load, if one were sent, would be on its way by now
    report.steps.loaded = {
      first_render: hooks.firstRender,
      settings: summary(hooks.settings),
      same_in_badge: hooks.badge.preferences === hooks.settings.preferences,
      requests: preferenceCalls(),
    };

    // 2. update(): a merge patch; both components show the server's answer.
    const before = preferenceCalls().length;
    const answer = await hooks.settings.update({
      channels: { push: false }, timezone: "Asia/Seoul",
      quiet_hours: [{ start: "22:00", end: "07:00" }],
    });
    await until("the update shown", () => hooks.settings.preferences === answer
      && hooks.badge.preferences === answer);
    report.steps.updated = {
      answer,
      settings: summary(hooks.settings),
      badge_text: container.ownerDocument.getElementById("badge").textContent,
      on_server: await onServer(userA),
      requests: preferenceCalls().slice(before),
    };

    // 3. A refused update: it rejects, `error` says why, the preferences stay.
    const refused = await rejection(hooks.settings.update({ timezone: "Mars/Olympus_Mons" }));
    await until("the error shown", () => hooks.settings.error && !hooks.settings.loading);
    report.steps.refused = {
      rejection: refused,
      settings: summary(hooks.settings),
      unchanged: hooks.settings.preferences === answer,
    };

    // 4. Another device changes them; reload() shows it and clears the error.
    const elsewhere = await requests.direct(`${env.url}/api/preferences`, {
      method: "PATCH",
      headers: { Authorization: `Bearer ${env.tokens[userA]}`,
                 "Content-Type": "application/merge-patch+json" },
      body: JSON.stringify({ types: { comment: { push: false } } }),
    });
    const reloaded = await hooks.settings.reload();
    await until("the reload shown", () => hooks.settings.preferences === reloaded);
    report.steps.reloaded = {
      other_device_status: elsewhere.status,
      settings: summary(hooks.settings),
      badge_same: hooks.badge.preferences === reloaded,
    };

    // 5. null deletes: the rule and the time zone go, the rest stays.
    const deleted = await hooks.settings.update({ types: { comment: null }, timezone: null });
    await until("the deletion shown", () => hooks.settings.preferences === deleted);
    report.steps.deleted = { settings: summary(hooks.settings) };

    // 6. Another user: their own preferences are loaded.
    root.render(app(userB));
    await until("B's preferences", () => hooks.user === userB && hooks.settings.preferences
      && !hooks.settings.loading);
    report.steps.other_user = { settings: summary(hooks.settings) };

    // 7. Signed out: nothing shown, and update() refuses.
    root.render(app(null));
    await until("signed out", () => hooks.user === null && !hooks.settings.preferences);
    report.steps.signed_out = {
      settings: summary(hooks.settings),
      update: await rejection(hooks.settings.update({ channels: { push: true } })),
    };
    report.steps.totals = { requests: requests.seen.filter(
      (r) => r.path === "/api/preferences").map((r) => r.method) };
  } catch (err) {
    report.error = String((err && err.stack) || err);
    report.hooks = { user: hooks.user, settings: summary(hooks.settings) };
  } finally {
    try {
      root.unmount();
    } catch {
      // already unmounted
    }
    requests.restore();
  }
  return report;
}
