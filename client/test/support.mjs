// What the package's test scripts share. Waiting works in Node and in Chromium
// (preferences-scenario.mjs runs in both, so this module imports nothing up front);
// reactInJsdom() and its helpers are for the Node scripts that render React.

export const WAIT_MS = 15000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Resolves once check() holds; throws naming `what` after `timeout` ms.
export async function until(what, check, timeout = WAIT_MS) {
  const deadline = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

// A browser-like global scope for react-dom and the client (document, localStorage)
// from jsdom at `origin`, then React, react-dom's createRoot and socket.io-client,
// loaded once those globals exist, as in a browser: react-dom looks for them when it
// loads. The scripts load the package after this, by its own name
// (client/package.json's "exports"), which is the build in dist/.
export async function reactInJsdom(origin) {
  const { JSDOM } = await import("jsdom");
  const dom = new JSDOM("<!doctype html><div id=root></div>", { url: origin });
  for (const name of ["window", "document", "localStorage", "navigator"]) {
    Object.defineProperty(globalThis, name, { configurable: true, value: dom.window[name] });
  }
  const { createElement, StrictMode } = await import("react");
  const { createRoot } = await import("react-dom/client");
  const { io } = await import("socket.io-client");
  return { createElement, StrictMode, createRoot, io };
}

// Node's socket.io-client sends no Origin by itself; a browser would send `origin`.
export function nodeSocketOptions(origin) {
  return { extraHeaders: { Origin: origin }, reconnectionDelayMax: 1000 };
}

// socket.io-client's io(), keeping every socket it makes in `opened`, in order.
export function recordSockets(io) {
  const opened = [];
  function countingIo(url, options) {
    const socket = io(url, options);
    opened.push(socket);
    return socket;
  }
  return { opened, countingIo };
}

// An app's entry as Vite's and Next.js's templates write it: <StrictMode> at the root,
// the provider (with `props`) inside, around <Child>. Only a StrictMode root makes
// React 19 mount, unmount and mount the effects of a new tree.
export function strictApp({ createElement, StrictMode }, Provider, props, Child) {
  return createElement(StrictMode, null, createElement(Provider, props, createElement(Child)));
}
