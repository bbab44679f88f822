// Built from client/src/notifications-sw.ts by `npm run build` in client/: do not edit; commit it with the source.
"use strict";
// Service worker for Web Push from the notification backend. A front end serves its
// own copy of this file (the package's "./sw" export) from its own origin, since a
// service worker must come from the page's origin, and registers it through
// NotificationClient.enablePush() (serviceWorkerUrl).
//
// The push payload is the notification's JSON: {id, type, title, body, data,
// created_at, read_at, delivered_at}, plus "truncated": true when the server cut the
// body and dropped data to fit the push service's 4 KB. The server's test push
// (POST /api/push/test) has type "push_test" and id 0.
//
// It has no install, activate or fetch handler: imported into an app's own worker
// (importScripts), it changes nothing of how that worker updates or serves pages.
// A classic script, not a module, for that reason (tsconfig.sw.json).
// Inside a function: imported by importScripts(), nothing leaks into the app's worker.
(() => {
    const worker = self;
    const FALLBACK_TITLE = "New notification";
    const FALLBACK_BODY = "Open the app to see it.";
    worker.addEventListener("push", (event) => {
        // Every push shows a notification, whatever it holds: Safari revokes the push
        // permission of a site whose push showed nothing, and Chrome shows a generic one.
        event.waitUntil(show(readPayload(event)));
    });
    worker.addEventListener("notificationclick", (event) => {
        event.notification.close();
        event.waitUntil(openApp(event.notification.data));
    });
    function readPayload(event) {
        if (!event.data)
            return null;
        try {
            const payload = event.data.json();
            return payload && typeof payload === "object" && !Array.isArray(payload)
                ? payload : null;
        }
        catch {
            return null; // not JSON: still show something (see the push listener)
        }
    }
    function show(payload) {
        if (!payload) {
            return worker.registration.showNotification(FALLBACK_TITLE, { body: FALLBACK_BODY });
        }
        const title = typeof payload.title === "string" && payload.title ? payload.title
            : FALLBACK_TITLE;
        const options = {
            body: typeof payload.body === "string" ? payload.body : "",
            data: payload,
        };
        // The same id pushed twice (a retry, or a push after the socket's re-emit) replaces
        // the notification shown first instead of stacking a second one.
        if (payload.id !== undefined && payload.id !== null)
            options.tag = String(payload.id);
        return worker.registration.showNotification(title, options);
    }
    async function openApp(payload) {
        const windows = await worker.clients.matchAll({ type: "window", includeUncontrolled: true });
        const open = windows.find((client) => "focus" in client);
        if (open)
            return open.focus();
        return worker.clients.openWindow(targetUrl(payload));
    }
    // data.url from the producer, resolved against this worker's origin; anything but an
    // http(s) URL (javascript:, data:) opens the app's start page instead.
    function targetUrl(payload) {
        const wanted = payload && payload.data && payload.data.url;
        if (typeof wanted !== "string" || !wanted)
            return "/";
        try {
            const url = new URL(wanted, worker.location.origin);
            return url.protocol === "https:" || url.protocol === "http:" ? url.href : "/";
        }
        catch {
            return "/";
        }
    }
})();
