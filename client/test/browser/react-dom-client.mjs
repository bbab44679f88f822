// "react-dom/client" for the test page, from the CommonJS build /vendor/react-cjs.js loaded.
export const { createRoot } = globalThis.cjsRequire("react-dom/client");
