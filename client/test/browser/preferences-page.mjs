// The test page's app: runs preferences-scenario.mjs in Chromium when the test calls
// window.startScenario(config), and leaves its report in window.scenarioReport.
import { StrictMode, createElement } from "react";
import { createRoot } from "react-dom/client";
import { NotificationClient } from "@notification-backend/client";
import {
  NotificationProvider, useNotifications, usePreferences,
} from "@notification-backend/client/react";
import { runPreferencesScenario } from "/preferences-scenario.mjs";

window.startScenario = (config) => {
  const lib = { createElement, StrictMode, createRoot, NotificationProvider, usePreferences,
                useNotifications, io: globalThis.io };
  runPreferencesScenario(config, lib, document.getElementById("root")).then(
    (report) => { window.scenarioReport = report; },
    (err) => { window.scenarioReport = { error: String((err && err.stack) || err) }; });
};
window.pageReady = typeof NotificationClient === "function";
