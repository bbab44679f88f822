// React bindings: <NotificationProvider> owns one NotificationClient for the signed-in
// user, and useNotifications() gives its inbox (loaded over HTTP, then kept current by
// the socket), unread count, connection state, markRead and Web Push to any component
// below it.
//
//   <NotificationProvider url={NOTIFY_URL} io={io} userId={user?.id ?? null}
//                         getToken={({ expired }) => getAccessToken({ forceRefresh: expired })}>
//     <App />
//   </NotificationProvider>
//
//   const { items, unreadCount, hasMore, loadMore, markRead } = useNotifications();
//   const { preferences, loading, error, update } = usePreferences();
//
// The client lives in an effect, never in render, and the effect's clean-up closes
// it: React's development double mount (StrictMode mounts, unmounts and mounts again),
// a change of user, a sign-out (userId null) and an unmount each leave exactly the
// sockets of the current user's one client, or none. The inbox's first page is
// requested after the effect, so StrictMode's discarded first mount requests none.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactElement,
  type ReactNode,
} from "react";

import { EMPTY_INBOX, Inbox } from "./inbox.js";
import { DEFAULT_TRANSPORTS, NotificationClient, NotificationRequestError } from "./index.js";
import type {
  ClientError,
  ConnectionState,
  DisablePushResult,
  EnablePushResult,
  MarkReadReply,
  Notification,
  NotificationClientOptions,
  Preferences,
  PreferencesPatch,
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
  /** Notifications per page of the inbox, 1 to 100 (default 20); read at sign-in. */
  pageSize?: number;
  /**
   * How many notifications arrivals may grow `items` to (default 100); loadMore()
   * goes past it. The oldest beyond it are dropped, and loadMore() brings them back.
   */
  maxItems?: number;
  children?: ReactNode;
}

export interface NotificationsValue {
  /** The user the provider is signed in as, or null. */
  userId: string | null;
  /**
   * The inbox, newest first, each id once: its first page (GET /api/notifications),
   * the pages loadMore() added, and every notification the socket delivered (live,
   * replayed, synced).
   */
  items: readonly Notification[];
  /** The server's count (its latest answer), plus what arrived unread since. */
  unreadCount: number;
  /** The server has older notifications than `items`: loadMore() gets the next page. */
  hasMore: boolean;
  /** A page of the inbox is on its way (true from sign-in until the first page). */
  loading: boolean;
  /** Why the inbox's newest page request failed; null after a success. */
  inboxError: NotificationRequestError | null;
  /** The next older page into `items`; never rejects (a failure shows in inboxError). */
  loadMore(): Promise<void>;
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

const DEFAULT_PAGE_SIZE = 20;
const DEFAULT_MAX_ITEMS = 100;

interface Session {
  client: NotificationClient | null;
  inbox: Inbox | null;
  userId: string | null;
  state: NotificationsState;
  error: ClientError | null;
}

const SIGNED_OUT: Session = Object.freeze({
  client: null, inbox: null, userId: null, state: "signed_out", error: null,
});

const NotificationContext = createContext<NotificationsValue | null>(null);
NotificationContext.displayName = "NotificationContext";

function signedOut(): Promise<never> {
  return Promise.reject(new NotificationRequestError("signed_out", "No user is signed in."));
}

const noInbox = () => () => undefined;
const emptyInbox = () => EMPTY_INBOX;
const nothingToLoad = () => Promise.resolve();

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
    // io, storage, socketOptions, document, pageSize and maxItems are read here, at sign-in.
    const { io, storage, socketOptions, document, pageSize, maxItems } = latest.current;
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
    const inbox = new Inbox(client, {
      pageSize: Math.min(Math.max(Math.trunc(pageSize ?? DEFAULT_PAGE_SIZE), 1), 100),
      maxItems: maxItems ?? DEFAULT_MAX_ITEMS,
    });
    const update = (change: Partial<Session>) =>
      setSession((s) => (s.client === client ? { ...s, ...change } : s));
    const off = [
      client.on("state", ({ state }) => update(
        state === "connected" ? { state, error: null } : { state })),
      client.on("error", (error) => update({ error })),
    ];
    setSession({ ...SIGNED_OUT, client, inbox, userId, state: "connecting" });
    client.connect();
    let stopped = false;
    // After this effect: StrictMode's first mount is cleaned up before it runs.
    queueMicrotask(() => {
      if (!stopped) void inbox.start();
    });
    return () => {
      stopped = true;
      off.forEach((stop) => stop());
      inbox.close();
      client.close();
      setSession((s) => (s.client === client ? SIGNED_OUT : s));
    };
  }, [url, userId, storageKey, receipts, serviceWorkerUrl, transports]);

  const { client, inbox } = session;
  const inboxState = useSyncExternalStore(inbox ? inbox.subscribe : noInbox,
    inbox ? inbox.snapshot : emptyInbox, inbox ? inbox.snapshot : emptyInbox);
  const markRead = useCallback(async (target: readonly number[] | "all") => {
    if (!client || !inbox) return signedOut();
    const reply = await client.markRead(target);
    inbox.markedRead(target, reply);
    return reply;
  }, [client, inbox]);
  const loadMore = useCallback(() => (inbox ? inbox.loadMore() : nothingToLoad()), [inbox]);
  // No await before the client's call: Safari prompts only during the tap.
  const enablePush = useCallback(() => (client ? client.enablePush() : signedOut()), [client]);
  const disablePush = useCallback(() => (client ? client.disablePush() : signedOut()), [client]);
  const pushStatus = useCallback(() => (client ? client.pushStatus() : signedOut()), [client]);

  const value = useMemo<NotificationsValue>(() => ({
    userId: session.userId,
    items: inboxState.items,
    unreadCount: inboxState.unreadCount,
    hasMore: inboxState.hasMore,
    loading: inboxState.loading,
    inboxError: inboxState.error,
    loadMore,
    state: session.state,
    connected: session.state === "connected",
    error: session.error,
    client,
    markRead,
    enablePush,
    disablePush,
    pushStatus,
  }), [session, inboxState, client, loadMore, markRead, enablePush, disablePush, pushStatus]);

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

// -- Preferences ----------------------------------------------------------------------

export interface PreferencesValue {
  /** The user's preferences as the server last answered them; null before that. */
  preferences: Preferences | null;
  /** A load, reload or update is on its way (true from the first render on). */
  loading: boolean;
  /** Why the newest request failed (e.g. code "validation_error"); null after a success. */
  error: NotificationRequestError | null;
  /**
   * Change some preferences (a JSON Merge Patch: null deletes a key). The hook then
   * shows the server's answer, which the promise also gives; a refusal rejects and
   * leaves `preferences` as they were.
   */
  update(patch: PreferencesPatch): Promise<Preferences>;
  /** Fetch them again (e.g. after another device changed them). */
  reload(): Promise<Preferences>;
}

type PreferencesState = Pick<PreferencesValue, "preferences" | "loading" | "error">;

const NO_PREFERENCES: PreferencesState = Object.freeze({
  preferences: null, loading: false, error: null,
});

function requestError(err: unknown): NotificationRequestError {
  return err instanceof NotificationRequestError ? err
    : new NotificationRequestError("client_error", String(err));
}

// The preferences of one client's user, shared by every usePreferences() under its
// provider: an update in one component shows in all of them, and StrictMode's second
// mount finds the first mount's load still on its way instead of sending another.
// Only the newest request's answer is shown, so a slow load cannot undo an update.
class PreferencesStore {
  private state: PreferencesState = { preferences: null, loading: true, error: null };
  private readonly listeners = new Set<() => void>();
  private newest = 0;
  private pendingLoad: Promise<Preferences> | null = null;

  constructor(private readonly client: NotificationClient) {}

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  readonly snapshot = (): PreferencesState => this.state;

  /** On mount: a GET, unless one is already on its way. */
  load(): Promise<Preferences> {
    return this.pendingLoad || this.reload();
  }

  reload(): Promise<Preferences> {
    const load = this.run(() => this.client.getPreferences());
    this.pendingLoad = load;
    const settled = () => {
      if (this.pendingLoad === load) this.pendingLoad = null;
    };
    load.then(settled, settled);
    return load;
  }

  update(patch: PreferencesPatch): Promise<Preferences> {
    return this.run(() => this.client.setPreferences(patch));
  }

  private async run(request: () => Promise<Preferences>): Promise<Preferences> {
    const ticket = ++this.newest;
    this.set({ loading: true });
    try {
      const preferences = await request();
      if (ticket === this.newest) this.set({ preferences, loading: false, error: null });
      return preferences;
    } catch (err) {
      const error = requestError(err);
      if (ticket === this.newest) this.set({ loading: false, error });
      throw error;
    }
  }

  private set(change: Partial<PreferencesState>): void {
    this.state = { ...this.state, ...change };
    this.listeners.forEach((listener) => listener());
  }
}

const stores = new WeakMap<NotificationClient, PreferencesStore>();

function storeOf(client: NotificationClient): PreferencesStore {
  let store = stores.get(client);
  if (!store) stores.set(client, store = new PreferencesStore(client));
  return store;
}

const noStore = () => () => undefined;
const noPreferences = () => NO_PREFERENCES;

/**
 * The signed-in user's notification preferences, inside a <NotificationProvider>:
 * loaded on mount (and again for a new user), changed with update(patch). Signed
 * out, `preferences` is null and update() and reload() reject with "signed_out".
 */
export function usePreferences(): PreferencesValue {
  const { client } = useNotifications();
  const store = client ? storeOf(client) : null;
  const state = useSyncExternalStore(store ? store.subscribe : noStore,
    store ? store.snapshot : noPreferences, store ? store.snapshot : noPreferences);
  useEffect(() => {
    // A failure shows in `error`; nobody awaits this load.
    if (store) store.load().catch(() => undefined);
  }, [store]);
  const update = useCallback((patch: PreferencesPatch) => (
    store ? store.update(patch) : signedOut()), [store]);
  const reload = useCallback(() => (store ? store.reload() : signedOut()), [store]);
  return useMemo(() => ({ ...state, update, reload }), [state, update, reload]);
}
