// The types of the notification backend's wire protocol (docs/API.md sections 3-4) and
// of this client's options, events and results. Types only: nothing here exists at
// run time.

import type { ManagerOptions, Socket, SocketOptions } from "socket.io-client";

// -- What the server sends ------------------------------------------------------------

/** JSON as the server stores a producer's `data`. */
export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/**
 * A notification, as the `notification` event, a `sync` ack and `GET
 * /api/notifications` carry it. `D` narrows `data` for an app that knows its producers.
 */
export interface Notification<D extends JsonObject = JsonObject> {
  /** Increases with creation; the replay cursor. */
  id: number;
  /** 1 to 64 characters, set by the producer, e.g. "comment". */
  type: string;
  /** 1 to 200 characters. */
  title: string;
  /** Up to 2,000 characters. */
  body: string | null;
  /** The producer's JSON object, `{}` when none. */
  data: D;
  /** ISO 8601 UTC with milliseconds and `Z`. */
  created_at: string;
  /** `null` while unread. Live notifications are always unread. */
  read_at: string | null;
  /** The first receipt from any device of the user; `null` in live emits. */
  delivered_at: string | null;
  /** Only in a Web Push payload cut to fit 4 KB: body cut, `data` emptied. */
  truncated?: true;
}

/** `GET /api/notifications`: one page of the user's inbox, newest first. */
export interface NotificationsPage {
  notifications: Notification[];
  /** The `before` of the next (older) page; `null` on the last page. */
  next_before: number | null;
  /** The user's unread count when the page was read. */
  unread_count: number;
}

/** The query of `GET /api/notifications` (NotificationClient.getNotifications). */
export interface NotificationsQuery {
  /** 1 to 100; the server's default is 20. */
  limit?: number;
  /** Only notifications with a smaller id: the previous page's `next_before`. */
  before?: number | null;
  /** Only unread ones. */
  unread?: boolean;
}

/** `auth_success`: once after an accepted CONNECT; the count includes the replay. */
export interface AuthSuccess {
  user_id: string;
  unread_count: number;
}

/** `sync_complete`: after the replay of every accepted CONNECT. */
export interface SyncComplete {
  /** Every notification up to this id has been sent; `null` when no last_id was sent. */
  last_id: number | null;
  replayed: number;
  /** More than one replay's worth was missed: the client pages the rest with `sync`. */
  has_more: boolean;
  /** `last_id` is below ids deleted by `flask prune`: reload the inbox over HTTP. */
  gap: boolean;
}

/** `unread_count`: the user's read state changed (and after this client's markRead). */
export interface UnreadCount {
  unread_count: number;
}

/** `token_expired`: the socket's token expired; the server disconnects it next. */
export interface TokenExpired {
  code: "token_expired";
}

// -- What the client sends ------------------------------------------------------------

/** The CONNECT `auth` payload. */
export interface ConnectAuth {
  token?: string;
  last_id: number | null;
}

export type MarkReadRequest = { ids: number[] } | { all: true };
export interface MarkReadReply {
  updated: number;
  unread_count: number;
}

export interface DeliveredRequest {
  ids: number[];
}
export interface DeliveredReply {
  updated: number;
}

export interface SyncRequest {
  after_id: number;
  limit: number;
}
export interface SyncReply {
  notifications: Notification[];
  has_more: boolean;
}

/** Why the server refused an event (its ack). */
export type EventErrorCode =
  | "validation_error"
  | "rate_limited"
  | "not_connected"
  | "database_unavailable"
  | "internal_error"
  | "unknown_event";

/** A failed event's ack; the connection stays up. */
export interface ErrorAck {
  error: { code: EventErrorCode; message: string };
}

/** The socket's events, server to client (socket.io-client's first type parameter). */
export interface ServerToClientEvents {
  auth_success: (data: AuthSuccess) => void;
  notification: (notification: Notification) => void;
  sync_complete: (data: SyncComplete) => void;
  unread_count: (data: UnreadCount) => void;
  token_expired: (data: TokenExpired) => void;
}

/** The socket's events, client to server, each answered through its ack. */
export interface ClientToServerEvents {
  mark_read: (payload: MarkReadRequest, ack: (reply: MarkReadReply | ErrorAck) => void) => void;
  delivered: (payload: DeliveredRequest, ack: (reply: DeliveredReply | ErrorAck) => void) => void;
  sync: (payload: SyncRequest, ack: (reply: SyncReply | ErrorAck) => void) => void;
}

/** The client's socket, typed with this server's events. */
export type NotificationSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

// -- Errors ---------------------------------------------------------------------------

/** A refused CONNECT's `err.data.code`. */
export type ConnectRefusalCode =
  | "token_missing"
  | "token_invalid"
  | "token_expired"
  | "server_unavailable"
  | "server_busy"
  | "too_many_attempts"
  | "too_many_connections";

/** socket.io-client's own connection failures (`err.message` without a code). */
export type TransportErrorCode = "xhr poll error" | "websocket error" | "timeout";

/**
 * What the `error` event's `code` can be: a refusal, a transport failure, the client's
 * `sync_failed`, or another message socket.io-client produced.
 */
export type ClientErrorCode =
  | ConnectRefusalCode
  | TransportErrorCode
  | "sync_failed"
  // Any other string, without losing the completion of the ones above.
  | (string & Record<never, never>);

/** The `error` event: a code and what it means, in plain words. */
export interface ClientError {
  code: ClientErrorCode;
  message: string;
}

/** HTTP error codes the client's own requests can meet (docs/API.md, Error codes). */
export type HttpErrorCode =
  | "token_missing"
  | "token_invalid"
  | "token_expired"
  | "invalid_json"
  | "validation_error"
  | "not_found"
  | "unsupported_media_type"
  | "payload_too_large"
  | "push_endpoint_not_allowed"
  | "rate_limited"
  | "internal_error"
  | "database_unavailable"
  | "push_disabled"
  | "network_error"
  | `http_${number}`;

// -- The client's options and events --------------------------------------------------

/** Asked on every (re)connect and HTTP call; `expired` after the server said so. */
export interface TokenRequest {
  expired: boolean;
}
export type GetToken = (request: TokenRequest) => string | Promise<string>;

export type Transport = "polling" | "websocket";

/** socket.io-client's `io` (the client never imports socket.io-client itself). */
export type IoFactory = (
  uri: string,
  options?: Partial<ManagerOptions & SocketOptions>,
) => Socket;

/** Where `last_id` is kept: localStorage by default, or anything like it. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** What the client needs of `document`: the visibilitychange reconnect. */
export interface DocumentLike {
  readonly visibilityState: DocumentVisibilityState;
  addEventListener(type: "visibilitychange", listener: () => void): void;
  removeEventListener(type: "visibilitychange", listener: () => void): void;
}

export interface NotificationClientOptions {
  /** The notification server, e.g. "https://notify.example.com". */
  url: string;
  /** The user's JWT, asked on every (re)connect; `expired: true` after token_expired. */
  getToken: GetToken;
  /** socket.io-client's `io`; else `globalThis.io` (its browser bundle). */
  io?: IoFactory;
  /** Default ["polling", "websocket"]; ["websocket"] with SOCKETIO_TRANSPORTS=websocket. */
  transports?: readonly Transport[];
  /** Where last_id is kept; default localStorage; `null`: in memory only. */
  storage?: StorageLike | null;
  /** Default "notifications:last_id"; include the user id. */
  storageKey?: string;
  /** More options for socket.io-client's Manager and Socket (not `auth`). */
  socketOptions?: Partial<ManagerOptions & SocketOptions>;
  /** Default `globalThis.document`; `null`: no reconnect on visibilitychange. */
  document?: DocumentLike | null;
  /** `false`: send no delivery receipts (the server then emits each id again). */
  receipts?: boolean;
  /** The service worker's URL on the page's origin; default "/static/notifications-sw.js". */
  serviceWorkerUrl?: string;
}

export type ConnectionState = "connected" | "disconnected" | "reconnecting";

/** The `state` event; `reason` is socket.io-client's disconnect reason. */
export interface StateChange {
  state: ConnectionState;
  reason?: string;
}

/** The `transport` event: the transport opened, then any upgrade. */
export interface TransportChange {
  name: string;
  upgraded: boolean;
}

/** The `receipts` event: one batch of `delivered`, acknowledged or failed. */
export type ReceiptsReport =
  | { ids: number[]; updated: number }
  | { ids: number[]; error: EventErrorCode | "timeout" };

/** Every event of NotificationClient.on(name, listener), with its payload. */
export interface NotificationClientEvents {
  notification: Notification;
  auth_success: AuthSuccess;
  sync_complete: SyncComplete;
  unread_count: UnreadCount;
  state: StateChange;
  transport: TransportChange;
  receipts: ReceiptsReport;
  error: ClientError;
}
export type NotificationClientEventName = keyof NotificationClientEvents;
export type Listener<E extends NotificationClientEventName> = (
  payload: NotificationClientEvents[E],
) => void;

// -- Web Push -------------------------------------------------------------------------

export interface WebPushOptions {
  url: string;
  getToken: GetToken;
  serviceWorkerUrl?: string | undefined;
}

/** Why enablePush() could not turn push on. */
export type PushReason =
  | "unsupported"
  | "ios_not_standalone"
  | "permission_denied"
  | "server_disabled"
  | "subscribe_failed";

/** enablePush()'s answer. */
export type EnablePushResult =
  | { ok: true; id: number }
  | { ok: false; reason: Exclude<PushReason, "subscribe_failed">; message: string }
  | {
      ok: false;
      reason: "subscribe_failed";
      /**
       * "service_worker_failed", the browser's error name (e.g. "AbortError",
       * "push_service_timeout"), the server's error code, or "network_error".
       */
      code: string;
      message: string;
    };

/** disablePush()'s answer; `serverError` is the code of a failed DELETE. */
export type DisablePushResult =
  | { ok: true; removed: false }
  | { ok: true; removed: true; serverError: string | null }
  | { ok: false; reason: "unsubscribe_failed"; message: string | undefined };

/** pushStatus(): what a settings screen (or /debug) shows. */
export interface PushStatus {
  supported: boolean;
  reason: PushReason | null;
  message: string | null;
  permission: NotificationPermission | "unsupported";
  /** `null` when GET /api/push/config failed. */
  serverEnabled: boolean | null;
  subscribed: boolean;
  /** The push service's origin (never the secret endpoint path). */
  endpointOrigin: string | null;
}

/** GET /api/push/config. */
export interface PushConfig {
  enabled: boolean;
  vapid_public_key: string | null;
}

/** One of the user's devices, as GET /api/push/subscriptions lists it. */
export interface PushSubscriptionInfo {
  id: number;
  /** The push service's origin (the endpoint's path is a secret, never shown). */
  origin: string;
  created_at: string;
  last_success_at: string | null;
  /** false: the user turned push off for this device; the server skips it. */
  enabled: boolean;
}

// -- Preferences (GET, PUT and PATCH /api/preferences) --------------------------------

/** The delivery channels: "in_app" (the socket and the inbox) and "push" (Web Push). */
export type PreferenceChannel = "in_app" | "push";

/** Each channel on (true) or off (false). */
export type ChannelSwitches = Record<PreferenceChannel, boolean>;

/** One notification type's channels; a channel left out is on. */
export type TypeRule = Partial<ChannelSwitches>;

/** A daily window, "HH:MM" to "HH:MM" in the user's time zone; it may cross midnight. */
export interface QuietWindow {
  start: string;
  end: string;
}

/** The user's whole preference set, as GET, PUT and PATCH answer it (defaults filled in). */
export interface Preferences {
  channels: ChannelSwitches;
  /** Rules by notification type, e.g. {"comment": {"push": false}}. */
  types: Record<string, TypeRule>;
  /** An IANA zone such as "Asia/Seoul"; null: quiet hours are in UTC. */
  timezone: string | null;
  /** At most 10 windows, not overlapping. Critical notifications ignore them. */
  quiet_hours: QuietWindow[];
  /** ISO 8601 UTC; null when the user never set anything. */
  updated_at: string | null;
}

/** PUT /api/preferences (replacePreferences): every key optional; a missing one takes its default. */
export interface PreferencesInput {
  channels?: Partial<ChannelSwitches>;
  types?: Record<string, TypeRule>;
  timezone?: string | null;
  quiet_hours?: QuietWindow[];
}

/**
 * PATCH /api/preferences (setPreferences), a JSON Merge Patch (RFC 7396): the keys
 * given change, the others stay; null deletes a key, which restores its default
 * ({"types": {"comment": null}} removes that rule, {"timezone": null} goes back to UTC).
 */
export interface PreferencesPatch {
  channels?: { [C in PreferenceChannel]?: boolean | null } | null;
  types?: Record<string, { [C in PreferenceChannel]?: boolean | null } | null> | null;
  timezone?: string | null;
  /** Replaces the whole list (merge patch replaces arrays); null or [] clears it. */
  quiet_hours?: QuietWindow[] | null;
}
