// Preferences against a real server, in Node: NotificationClient's getPreferences,
// setPreferences, replacePreferences, pushSubscriptions and setPushSubscriptionEnabled,
// then usePreferences() rendered by react-dom into jsdom under <StrictMode>
// (preferences-scenario.mjs, which Chromium runs too). Driven by
// tests/unit/client/test_client_package.py, which starts the server and reads the JSON
// report this prints as its last line.
//
// Environment: NOTIFY_URL, ORIGIN (an origin the server allows), USER_A and USER_B
// with TOKEN_A and TOKEN_B (the client's calls), SUB_ID (a push subscription of
// USER_A's), USER_C and USER_D with TOKEN_C and TOKEN_D (the hook's, new users).
import { nodeSocketOptions, reactInJsdom } from "./support.mjs";

const env = process.env;
const URL_ = env.NOTIFY_URL;
const TOKENS = { [env.USER_A]: env.TOKEN_A, [env.USER_B]: env.TOKEN_B };

const { createElement, StrictMode, createRoot, io } = await reactInJsdom(env.ORIGIN);
const { NotificationClient, NotificationRequestError } = await import(
  "@notification-backend/client");
const { NotificationProvider, useNotifications, usePreferences } = await import(
  "@notification-backend/client/react");
const { runPreferencesScenario } = await import("./preferences-scenario.mjs");

// Every request the client sends: method, path and Content-Type, as they went out.
const sent = [];
const realFetch = globalThis.fetch;
globalThis.fetch = (input, init = {}) => {
  sent.push({ method: init.method || "GET", path: new URL(input).pathname,
              content_type: new Headers(init.headers || {}).get("Content-Type") });
  return realFetch(input, init);
};

function clientOf(userId) {
  // HTTP calls only: the socket is never opened.
  return new NotificationClient({ url: URL_, io, getToken: () => TOKENS[userId],
                                  storage: null, document: null });
}

async function failure(promise) {
  try {
    await promise;
    return null;
  } catch (err) {
    return { instance: err instanceof NotificationRequestError, name: err.name,
             code: err.code, status: err.status, message: err.message };
  }
}

function requestsSince(mark) {
  return sent.slice(mark);
}

const report = { client: {}, hook: null };
try {
  const a = clientOf(env.USER_A);
  const b = clientOf(env.USER_B);
  const steps = report.client;

  let mark = sent.length;
  steps.defaults = { answer: await a.getPreferences(), requests: requestsSince(mark) };

  mark = sent.length;
  steps.patched = {
    answer: await a.setPreferences({
      channels: { push: false },
      types: { comment: { push: false }, mention: { in_app: false } },
      timezone: "Asia/Seoul",
      quiet_hours: [{ start: "22:00", end: "07:00" }],
    }),
    requests: requestsSince(mark),
  };
  steps.read_back = await a.getPreferences();

  // A merge: only what the patch names changes; null deletes.
  steps.merged = await a.setPreferences({ types: { comment: null }, timezone: null,
                                          channels: { in_app: false } });

  // Refused values: a NotificationRequestError with the server's code and message.
  steps.refused = {
    timezone: await failure(a.setPreferences({ timezone: "Mars/Olympus_Mons" })),
    channel: await failure(a.setPreferences({ channels: { push: "no" } })),
    window: await failure(a.setPreferences({ quiet_hours: [{ start: "09:00", end: "09:00" }] })),
    unknown_key: await failure(a.replacePreferences({ sound: true })),
    after: await a.getPreferences(),
  };

  // PUT: what is left out takes its default; a set as GET gave it goes back as it is.
  mark = sent.length;
  steps.replaced = {
    answer: await a.replacePreferences({ quiet_hours: [{ start: "12:00", end: "13:00" }] }),
    requests: requestsSince(mark),
  };
  const current = await a.getPreferences();
  steps.round_trip = { before: current, answer: await a.replacePreferences(current) };

  // Each user has their own.
  steps.other_user = await b.getPreferences();

  // One device's push, on and off, without unsubscribing it.
  const id = Number(env.SUB_ID);
  mark = sent.length;
  steps.device = {
    off: await a.setPushSubscriptionEnabled(id, false),
    listed_off: await a.pushSubscriptions(),
    on: await a.setPushSubscriptionEnabled(id, true),
    listed_on: await a.pushSubscriptions(),
    requests: requestsSince(mark),
    not_yours: await failure(b.setPushSubscriptionEnabled(id, false)),
    bad_id: await failure(a.setPushSubscriptionEnabled(0, false)),
    after_not_yours: await a.pushSubscriptions(),
  };

  // A token the server refuses: the same error type, with the HTTP status.
  const stranger = new NotificationClient({ url: URL_, io, getToken: () => "not-a-token",
                                            storage: null, document: null });
  steps.bad_token = await failure(stranger.getPreferences());
  const nowhere = new NotificationClient({ url: "http://127.0.0.1:9", io,
                                           getToken: () => "t", storage: null, document: null });
  steps.unreachable = await failure(nowhere.getPreferences());

  // The hook, as a React app renders it.
  globalThis.fetch = realFetch;
  report.hook = await runPreferencesScenario(
    {
      url: URL_,
      users: [env.USER_C, env.USER_D],
      tokens: { [env.USER_C]: env.TOKEN_C, [env.USER_D]: env.TOKEN_D },
      socketOptions: nodeSocketOptions(env.ORIGIN),
    },
    { createElement, StrictMode, createRoot, NotificationProvider, usePreferences,
      useNotifications, io },
    document.getElementById("root"));
} catch (err) {
  report.error = String((err && err.stack) || err);
}

console.log(JSON.stringify(report));
process.exit(report.error || (report.hook && report.hook.error) ? 1 : 0);
