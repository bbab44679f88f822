// "react" for the test page: the CommonJS build /vendor/react-cjs.js loaded, as ES
// module exports (the names the package and the page import).
const React = globalThis.cjsRequire("react");

export default React;
export const {
  StrictMode, createContext, createElement, useCallback, useContext, useEffect, useMemo,
  useRef, useState, useSyncExternalStore,
} = React;
