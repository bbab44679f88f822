// React bindings: <NotificationProvider> owns one NotificationClient for the signed-in
// user, and useNotifications() gives its items, unread count, connection state,
// markRead and Web Push to any component below it.
//
//   <NotificationProvider url={NOTIFY_URL} io={io} userId={user?.id ?? null}
//                         getToken={({ expired }) => getAccessToken({ forceRefresh: expired })}>
//     <App />
//   </NotificationProvider>
//
//   const { items, unreadCount, state, markRead, enablePush } = useNotifications();
//
// The client lives in an effect, never in render, and the effect's clean-up closes
// it: React's development double mount (StrictMode mounts, unmounts and mounts again),
// a change of user, a sign-out (userId null) and an unmount each leave exactly the
// sockets of the current user's one client, or none.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  type ReactElement,
  type ReactNode,
} from "react";

import { DEFAULT_TRANSPORTS, NotificationClient, NotificationRequestError } from "./index.js";
import type {
  ClientError,
  ConnectionState,
  DisablePushResult,
  EnablePushResult,
  MarkReadReply,
  Notification,
  NotificationClientOptions,
  PushStatus,
  Transport,
} from "./index.js";

/** The provider's state: no user, a client on its way, or the client's own state. */
export type NotificationsState = "signed_out" | "connecting" | ConnectionState;

export interface NotificationProviderProps
  extends Omit<NotificationClientOptions, "url" | "getToken"> {
  /** The notification server, e.g. "https://notify.example.com". */
  url: string;
  /** The signed-in user; null or undefined signs out (the socket is closed). */
  userId: string | null | undefined;
  /** The user's JWT; the newest function passed is the one called. */
  getToken: NotificationClientOptions["getToken"];
  /** How many notifications `items` keeps, newest first (default 100). */
  maxItems?: number;
  children?: ReactNode;
}

export interface NotificationsValue {
  /** The user the provider is signed in as, or null. */
  userId: string | null;
  /** Notifications received since sign-in (live, replayed, synced), newest first. */
  items: readonly Notification[];
  /** The server's count at connect, plus what arrived unread since. */
  unreadCount: number;
  state: NotificationsState;
  connected: boolean;
  /** The last connection error, until the next connect. */
  error: ClientError | null;
  /** The provider's client (null when signed out), for its events and socket. */
  client: NotificationClient | null;
  /** Mark ids (or "all") read; `items` and `unreadCount` follow. */
  markRead(target: readonly number[] | "all"): Promise<MarkReadReply>;
  /** Call straight from a click or tap handler (iOS prompts only during a gesture). */
  enablePush(): Promise<EnablePushResult>;
  /** Call before sign-out, while the token is still valid. */
  disablePush(): Promise<DisablePushResult>;
  pushStatus(): Promise<PushStatus>;
}

const DEFAULT_MAX_ITEMS = 100;

interface Session {
  client: NotificationClient | null;
  userId: string | null;
  items: readonly Notification[];
  unreadCount: number;
  state: NotificationsState;
  error: ClientError | null;
}

const SIGNED_OUT: Session = Object.freeze({
  client: null, userId: null, items: [], unreadCount: 0, state: "signed_out", error: null,
});

const NotificationContext = createContext<NotificationsValue | null>(null);
NotificationContext.displayName = "NotificationContext";

function signedOut(): Promise<never> {
  return Promise.reject(new NotificationRequestError("signed_out", "No user is signed in."));
}

// Newest first, each id once, at most `max`.
function withItem(items: readonly Notification[], n: Notification,
  max: number): readonly Notification[] {
  const others = items.filter((item) => item.id !== n.id);
  const at = others.findIndex((item) => item.id < n.id);
  const next = at === -1 ? [...others, n] : [...others.slice(0, at), n, ...others.slice(at)];
  return next.length > max ? next.slice(0, max) : next;
}

export function NotificationProvider(props: NotificationProviderProps): ReactElement {
  const { url, storageKey, receipts, serviceWorkerUrl, children } = props;
  const userId = props.userId || null;
  // Arrays and functions are compared by what they say, not by identity: an inline
  // `transports={["websocket"]}` or getToken must not reconnect on every render.
  const transports = (props.transports || DEFAULT_TRANSPORTS).join(",");
  const latest = useRef(props);
  useEffect(() => {
    latest.current = props;
  });
  const [session, setSession] = useState<Session>(SIGNED_OUT);

  useEffect(() => {
    if (!userId) {
      setSession(SIGNED_OUT);
      return undefined;
    }
    // io, storage, socketOptions and document are read here, at sign-in.
    const { io, storage, socketOptions, document } = latest.current;
    const client = new NotificationClient({
      url,
      io,
      storage,
      socketOptions,
      document,
      receipts,
      serviceWorkerUrl,
      transports: transports.split(",") as Transport[],
      storageKey: storageKey || `notifications:last_id:${userId}`,
      getToken: (request) => latest.current.getToken(request),
    });
    const update = (change: (s: Session) => Partial<Session>) =>
      setSession((s) => (s.client === client ? { ...s, ...change(s) } : s));
    // auth_success's count already includes the replay; after sync_complete, each
    // unread arrival adds one.
    let synced = false;
    const off = [
      client.on("state", ({ state }) => update(() => (
        state === "connected" ? { state, error: null } : { state }))),
      client.on("error", (error) => update(() => ({ error }))),
      client.on("auth_success", ({ unread_count }) => {
        synced = false;
        update(() => ({ unreadCount: unread_count }));
      }),
      client.on("sync_complete", () => {
        synced = true;
      }),
      client.on("notification", (n) => {
        const counts = synced && !n.read_at;
        update((s) => ({
          items: withItem(s.items, n, latest.current.maxItems ?? DEFAULT_MAX_ITEMS),
          unreadCount: s.unreadCount + (counts ? 1 : 0),
        }));
      }),
      client.on("unread_count", ({ unread_count }) => update(() => ({ unreadCount: unread_count }))),
    ];
    setSession({ ...SIGNED_OUT, client, userId, state: "connecting" });
    client.connect();
    return () => {
      off.forEach((stop) => stop());
      client.close();
      setSession((s) => (s.client === client ? SIGNED_OUT : s));
    };
  }, [url, userId, storageKey, receipts, serviceWorkerUrl, transports]);

  const { client } = session;
  const markRead = useCallback(async (target: readonly number[] | "all") => {
    if (!client) return signedOut();
    const reply = await client.markRead(target);
    const ids = target === "all" ? null : new Set(target);
    const now = new Date().toISOString();
    setSession((s) => (s.client !== client ? s : {
      ...s,
      unreadCount: reply.unread_count,
      items: s.items.map((n) => (!n.read_at && (!ids || ids.has(n.id))
        ? { ...n, read_at: now } : n)),
    }));
    return reply;
  }, [client]);
  // No await before the client's call: Safari prompts only during the tap.
  const enablePush = useCallback(() => (client ? client.enablePush() : signedOut()), [client]);
  const disablePush = useCallback(() => (client ? client.disablePush() : signedOut()), [client]);
  const pushStatus = useCallback(() => (client ? client.pushStatus() : signedOut()), [client]);

  const value = useMemo<NotificationsValue>(() => ({
    userId: session.userId,
    items: session.items,
    unreadCount: session.unreadCount,
    state: session.state,
    connected: session.state === "connected",
    error: session.error,
    client,
    markRead,
    enablePush,
    disablePush,
    pushStatus,
  }), [session, client, markRead, enablePush, disablePush, pushStatus]);

  return createElement(NotificationContext.Provider, { value }, children);
}

/** The nearest NotificationProvider's notifications; throws outside of one. */
export function useNotifications(): NotificationsValue {
  const value = useContext(NotificationContext);
  if (!value) {
    throw new Error("useNotifications() must be called inside a <NotificationProvider>");
  }
  return value;
}
