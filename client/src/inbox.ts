// The inbox of one signed-in user as a front end shows it: pages of GET
// /api/notifications merged with what the socket delivers (live, replayed, synced),
// newest first, each id once, and the unread count. No framework: the React provider
// (react.ts) keeps one per client and renders its snapshots.
//
// The first page is loaded at start(), and again after a connect whose replay cannot
// be relied on (no last_id was sent, or `gap`): what arrived while the socket was
// down is then in it. A first page that does not reach down to what is shown (more
// than a page came meanwhile) replaces what is older than itself, which loadMore()
// brings back: `items` never has a hole.

import { NotificationRequestError } from "./index.js";
import type {
  MarkReadReply,
  Notification,
  NotificationClient,
  NotificationsPage,
  SyncComplete,
} from "./index.js";

export interface InboxState {
  /** Newest first, each id once. */
  readonly items: readonly Notification[];
  readonly unreadCount: number;
  /** The server has older notifications than `items` holds: loadMore() gets them. */
  readonly hasMore: boolean;
  /** A page is on its way. */
  readonly loading: boolean;
  /** Why the newest page request failed; null after a success. */
  readonly error: NotificationRequestError | null;
}

export interface InboxOptions {
  /** Notifications per page, 1 to 100. */
  pageSize: number;
  /** What arrivals may grow `items` to; loaded pages may go past it. */
  maxItems: number;
}

const KNOWN_LIMIT = 5000;

export const EMPTY_INBOX: InboxState = Object.freeze({
  items: Object.freeze([]), unreadCount: 0, hasMore: false, loading: false, error: null,
});

/** Newest first, each id once; a notification read anywhere stays read. */
export function mergeNotifications(items: readonly Notification[],
  incoming: readonly Notification[]): Notification[] {
  const byId = new Map<number, Notification>();
  for (const n of items) byId.set(n.id, n);
  for (const n of incoming) {
    const known = byId.get(n.id);
    byId.set(n.id, known ? {
      ...n,
      read_at: n.read_at ?? known.read_at,
      delivered_at: n.delivered_at ?? known.delivered_at,
    } : n);
  }
  return [...byId.values()].sort((a, b) => b.id - a.id);
}

export class Inbox {
  private state: InboxState = { ...EMPTY_INBOX, loading: true };
  private readonly listeners = new Set<() => void>();
  private readonly off: (() => void)[] = [];
  /** The `before` of the next older page; null: none, or no first page yet. */
  private nextBefore: number | null = null;
  private loaded = false;
  /** What arrivals may grow `items` to: maxItems, or what the pages loaded. */
  private cap: number;
  /** The socket gave a count: a page's count (maybe older) no longer replaces it. */
  private counted = false;
  /** The connection's replay is over: an unread arrival now adds one to the count. */
  private synced = false;
  /** Every id a page or the socket brought (the newest KNOWN_LIMIT), and the highest. */
  private readonly known = new Set<number>();
  private newestKnown = 0;
  /** Changes with every count the server gives: an older recount is dropped. */
  private countVersion = 0;
  private recounting = false;
  private pending: Promise<void> | null = null;
  private newestFirstPage = 0;
  /** Changes when `nextBefore` moves other than by a loadMore: a loadMore sent before is dropped. */
  private epoch = 0;
  private closed = false;

  constructor(private readonly client: NotificationClient,
    private readonly options: InboxOptions) {
    this.cap = options.maxItems;
    this.off.push(
      client.on("auth_success", ({ unread_count }) => {
        this.synced = false;
        this.counted = true;
        this.countVersion += 1;
        this.set({ unreadCount: unread_count });
      }),
      client.on("sync_complete", (data) => this.onSyncComplete(data)),
      client.on("notification", (n) => this.onNotification(n)),
      client.on("unread_count", ({ unread_count }) => {
        this.counted = true;
        this.countVersion += 1;
        this.set({ unreadCount: unread_count });
      }),
    );
  }

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  readonly snapshot = (): InboxState => this.state;

  /** Load the first page. */
  start(): Promise<void> {
    return this.loadFirst();
  }

  /** Stop listening to the client; answers still on their way are dropped. */
  close(): void {
    this.closed = true;
    this.off.forEach((stop) => stop());
    this.listeners.clear();
  }

  /**
   * The next older page, merged into `items`. Never rejects: a failure shows in
   * `error`, and the next call tries again. One request at a time: a call while
   * one is on its way gets that one.
   */
  loadMore(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.pending) return this.pending;
    if (!this.loaded) return this.loadFirst();
    const before = this.nextBefore;
    if (before === null) return Promise.resolve();
    const epoch = this.epoch;
    return this.request(before, (page) => {
      if (epoch !== this.epoch) return;
      this.remember(page.notifications);
      const items = mergeNotifications(this.state.items, page.notifications);
      this.nextBefore = page.next_before;
      this.cap = Math.max(this.cap, items.length);
      this.set({ items, hasMore: page.next_before !== null });
    });
  }

  /** After the client's markRead: the server's count, and the items marked. */
  markedRead(target: readonly number[] | "all", reply: MarkReadReply): void {
    const ids = target === "all" ? null : new Set(target);
    const now = new Date().toISOString();
    this.counted = true;
    this.countVersion += 1;
    this.set({
      unreadCount: reply.unread_count,
      items: this.state.items.map((n) => (!n.read_at && (!ids || ids.has(n.id))
        ? { ...n, read_at: now } : n)),
    });
  }

  private loadFirst(): Promise<void> {
    const ticket = ++this.newestFirstPage;
    return this.request(null, (page) => {
      if (ticket !== this.newestFirstPage) return;
      this.remember(page.notifications);
      const oldest = page.notifications.at(-1);
      const newestShown = this.state.items[0]?.id ?? 0;
      // A page read again that reaches down to what was loaded joins on to it: all of
      // it stays, and so does where loadMore() goes on from.
      const joins = this.loaded && oldest !== undefined && oldest.id <= newestShown;
      let items: Notification[];
      if (joins || page.next_before === null) {
        items = mergeNotifications(this.state.items, page.notifications);
        if (!joins) this.nextBefore = null;
        this.cap = Math.max(this.cap, items.length);
      } else {
        // More on the server than this page, and maybe a hole between it and what
        // was shown: keep only what is as new as the page; loadMore() goes on from it.
        const kept = this.state.items.filter((n) => n.id >= (oldest ? oldest.id : 0));
        items = mergeNotifications(kept, page.notifications);
        this.nextBefore = page.next_before;
        this.epoch += 1;
        this.cap = Math.max(this.options.maxItems, items.length);
      }
      this.loaded = true;
      this.set({
        items,
        hasMore: this.nextBefore !== null,
        ...(this.counted ? {} : { unreadCount: page.unread_count }),
      });
    });
  }

  private request(before: number | null,
    apply: (page: NotificationsPage) => void): Promise<void> {
    const request = this.client.getNotifications({ limit: this.options.pageSize, before })
      .then((page) => {
        if (this.closed) return;
        apply(page);
        if (this.pending === request) this.set({ error: null });
      }, (err: unknown) => {
        if (this.closed || this.pending !== request) return;
        this.set({ error: err instanceof NotificationRequestError ? err
          : new NotificationRequestError("client_error", String(err)) });
      })
      .finally(() => {
        if (this.pending !== request) return;
        this.pending = null;
        if (!this.closed) this.set({ loading: false });
      });
    this.pending = request;
    this.set({ loading: true });
    return request;
  }

  private onSyncComplete(data: SyncComplete): void {
    this.synced = true;
    // Nothing was replayed that can be relied on: what came while the socket was
    // down (or before it first connected) is only on the server.
    if (data.last_id === null || data.gap) void this.loadFirst();
  }

  private onNotification(n: Notification): void {
    // After the replay, an unread notification not seen before is one more unread,
    // unless it is older than one already seen: then it is the server's delivery
    // check sending again one that no device acknowledged (the count at connect has
    // it), or one whose transaction committed late. Only the server can tell.
    let added = 0;
    if (this.synced && !n.read_at && !this.known.has(n.id)) {
      if (n.id > this.newestKnown) added = 1;
      else this.recount();
    }
    this.remember([n]);
    let items = mergeNotifications(this.state.items, [n]);
    let { hasMore } = this.state;
    if (items.length > this.cap) {
      items = items.slice(0, this.cap);
      this.nextBefore = items.at(-1)!.id;
      this.epoch += 1;
      hasMore = true;
    }
    if (added) this.countVersion += 1;
    this.set({ items, hasMore, unreadCount: this.state.unreadCount + added });
  }

  private remember(notifications: readonly Notification[]): void {
    for (const { id } of notifications) {
      this.known.add(id);
      if (id > this.newestKnown) this.newestKnown = id;
    }
    for (const id of this.known) {
      if (this.known.size <= KNOWN_LIMIT) break;
      this.known.delete(id);
    }
  }

  /** The count from the server, unless another count comes first. */
  private recount(): void {
    if (this.recounting) return;
    this.recounting = true;
    const version = this.countVersion;
    this.client.getUnreadCount().then((unreadCount) => {
      if (!this.closed && version === this.countVersion) this.set({ unreadCount });
    }, () => undefined).finally(() => {
      this.recounting = false;
    });
  }

  private set(change: Partial<InboxState>): void {
    this.state = { ...this.state, ...change };
    this.listeners.forEach((listener) => listener());
  }
}
