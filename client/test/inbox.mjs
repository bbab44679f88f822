// The inbox's rules where a real server cannot be made to show them on demand (the
// order in which answers and events arrive), against a stand-in for the client: its
// events are fired by hand, its HTTP answers released by hand. Each case asserts
// with node:assert; the last line is a JSON report of the cases that passed, which
// tests/unit/client/test_client_package.py reads.
import assert from "node:assert/strict";

import { Inbox } from "../dist/inbox.js";
import { NotificationRequestError } from "../dist/index.js";

// A NotificationClient as the inbox uses it: on(), and the two HTTP calls, each
// answered when the case says so.
function standIn() {
  const handlers = {};
  const calls = [];
  return {
    calls,
    on(event, fn) {
      (handlers[event] ||= new Set()).add(fn);
      return () => handlers[event].delete(fn);
    },
    fire(event, payload) {
      for (const fn of handlers[event] || []) fn(payload);
    },
    getNotifications(query) {
      return new Promise((resolve, reject) => calls.push({ kind: "page", query, resolve, reject }));
    },
    getUnreadCount() {
      return new Promise((resolve, reject) => calls.push({ kind: "count", resolve, reject }));
    },
  };
}

const note = (id, read = false) => ({
  id, type: "t", title: `n${id}`, body: null, data: {}, created_at: "", delivered_at: null,
  read_at: read ? "2026-01-01T00:00:00.000Z" : null,
});
const page = (ids, nextBefore, unread = 0) => ({
  notifications: ids.map((id) => note(id)), next_before: nextBefore, unread_count: unread,
});
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
const ids = (inbox) => inbox.snapshot().items.map((n) => n.id);

// An inbox whose first page (`first`, the stand-in's first call) has come.
async function loaded(first, options = { pageSize: 2, maxItems: 100 }) {
  const client = standIn();
  const inbox = new Inbox(client, options);
  const loading = inbox.start();
  client.calls[0].resolve(first);
  await loading;
  return { client, inbox };
}

// loadMore(): the one request it sends asks for `query`; `answer` answers it.
async function loadMore(client, inbox, query, answer) {
  const index = client.calls.length;
  const more = inbox.loadMore();
  assert.equal(client.calls.length, index + 1, "loadMore sent no request");
  assert.deepEqual(client.calls[index].query, query);
  client.calls[index].resolve(answer);
  await more;
}

async function connected(client, unread, lastId = 5) {
  client.fire("auth_success", { user_id: "u", unread_count: unread });
  client.fire("sync_complete", { last_id: lastId, replayed: 0, has_more: false, gap: false });
  await settle();
}

const cases = {
  async first_page_count_until_the_socket_gives_one() {
    const client = standIn();
    const inbox = new Inbox(client, { pageSize: 3, maxItems: 100 });
    const loading = inbox.start();
    assert.equal(inbox.snapshot().loading, true);
    client.calls[0].resolve(page([9, 8, 7], 7, 4));
    await loading;
    assert.deepEqual(ids(inbox), [9, 8, 7]);
    assert.equal(inbox.snapshot().unreadCount, 4);
    assert.equal(inbox.snapshot().hasMore, true);
    await connected(client, 5);
    assert.equal(inbox.snapshot().unreadCount, 5);
    // A later page's count (read at some other moment) does not replace the socket's.
    const again = inbox.start();
    client.calls[1].resolve(page([9, 8, 7], 7, 2));
    await again;
    assert.equal(inbox.snapshot().unreadCount, 5);
  },

  async replayed_do_not_count_live_do_and_duplicates_show_once() {
    const client = standIn();
    const inbox = new Inbox(client, { pageSize: 3, maxItems: 100 });
    const loading = inbox.start();
    client.fire("auth_success", { user_id: "u", unread_count: 3 });
    client.fire("notification", note(9)); // replayed: in the count already
    client.calls[0].resolve(page([9, 8, 7], null, 3));
    await loading;
    client.fire("sync_complete", { last_id: 9, replayed: 1, has_more: false, gap: false });
    client.fire("notification", note(10)); // live
    client.fire("notification", note(10)); // again
    assert.deepEqual(ids(inbox), [10, 9, 8, 7]);
    assert.equal(inbox.snapshot().unreadCount, 4);
  },

  async an_unseen_older_arrival_asks_the_server_for_the_count() {
    const { client, inbox } = await loaded(page([20, 19], 19, 6));
    await connected(client, 6, 20);
    // The delivery check sends again one no device acknowledged: counted at connect.
    client.fire("notification", note(12));
    assert.equal(inbox.snapshot().unreadCount, 6);
    const recount = client.calls.find((c) => c.kind === "count");
    assert.ok(recount, "no count asked");
    recount.resolve(6);
    await settle();
    assert.equal(inbox.snapshot().unreadCount, 6);
    assert.deepEqual(ids(inbox), [20, 19, 12]);
    // A late commit (older id, new): the server's count has it.
    client.fire("notification", note(15));
    client.calls.at(-1).resolve(7);
    await settle();
    assert.equal(inbox.snapshot().unreadCount, 7);
  },

  async a_first_page_drops_what_is_older_than_itself() {
    const client = standIn();
    const inbox = new Inbox(client, { pageSize: 2, maxItems: 100 });
    client.fire("auth_success", { user_id: "u", unread_count: 0 });
    for (const id of [3, 4, 5]) client.fire("notification", note(id)); // a long replay
    const loading = inbox.start();
    client.calls[0].resolve(page([9, 8], 8));
    await loading;
    // 6 and 7 may be missing between 8 and 5: only what joins on is kept.
    assert.deepEqual(ids(inbox), [9, 8]);
    await loadMore(client, inbox, { limit: 2, before: 8 }, page([7, 6], 6));
    assert.deepEqual(ids(inbox), [9, 8, 7, 6]);
  },

  async a_load_more_answer_sent_before_a_new_first_page_is_dropped() {
    const { client, inbox } = await loaded(page([9, 8], 8));
    const more = inbox.loadMore();
    // The socket came back without a usable replay: the first page again, newer now.
    client.fire("sync_complete", { last_id: null, replayed: 0, has_more: false, gap: false });
    await settle();
    client.calls[2].resolve(page([12, 11], 11));
    await settle();
    client.calls[1].resolve(page([7, 6], 6));
    await more;
    assert.deepEqual(ids(inbox), [12, 11]);
    assert.equal(inbox.snapshot().hasMore, true);
    await loadMore(client, inbox, { limit: 2, before: 11 }, page([10, 9], 9));
    assert.deepEqual(ids(inbox), [12, 11, 10, 9]);
  },

  async a_first_page_read_again_that_joins_on_keeps_the_pages_loaded() {
    const { client, inbox } = await loaded(page([9, 8], 8));
    await loadMore(client, inbox, { limit: 2, before: 8 }, page([7, 6], 6));
    // A reconnect without a usable replay: one came meanwhile; the page reaches 9.
    client.fire("sync_complete", { last_id: null, replayed: 0, has_more: false, gap: false });
    await settle();
    client.calls[2].resolve(page([10, 9], 9));
    await settle();
    assert.deepEqual(ids(inbox), [10, 9, 8, 7, 6]);
    await loadMore(client, inbox, { limit: 2, before: 6 }, page([5], null));
    assert.deepEqual(ids(inbox), [10, 9, 8, 7, 6, 5]);
    assert.equal(inbox.snapshot().hasMore, false);
  },

  async arrivals_past_max_items_drop_the_oldest_and_load_more_brings_them_back() {
    const { client, inbox } = await loaded(page([5, 4], null), { pageSize: 2, maxItems: 3 });
    assert.equal(inbox.snapshot().hasMore, false);
    await connected(client, 0, 5);
    client.fire("notification", note(6));
    client.fire("notification", note(7));
    assert.deepEqual(ids(inbox), [7, 6, 5]);
    assert.equal(inbox.snapshot().hasMore, true);
    await loadMore(client, inbox, { limit: 2, before: 5 }, page([4], null));
    assert.deepEqual(ids(inbox), [7, 6, 5, 4]);
    assert.equal(inbox.snapshot().hasMore, false);
  },

  async a_failed_page_shows_its_error_and_the_next_call_tries_again() {
    const client = standIn();
    const inbox = new Inbox(client, { pageSize: 2, maxItems: 100 });
    const loading = inbox.start();
    const failure = new NotificationRequestError("network_error", "Failed to fetch");
    client.calls[0].reject(failure);
    await loading; // never rejects
    assert.equal(inbox.snapshot().error, failure);
    assert.equal(inbox.snapshot().loading, false);
    // No first page yet: it is asked again.
    await loadMore(client, inbox, { limit: 2, before: null }, page([2, 1], null));
    assert.equal(inbox.snapshot().error, null);
    assert.deepEqual(ids(inbox), [2, 1]);
  },

  async read_anywhere_stays_read() {
    const { client, inbox } = await loaded({ ...page([], null),
                                             notifications: [note(2, true), note(1)] });
    client.fire("notification", note(2)); // sent again, unread in that copy
    assert.ok(inbox.snapshot().items.find((n) => n.id === 2).read_at);
    inbox.markedRead([1], { updated: 1, unread_count: 0 });
    assert.ok(inbox.snapshot().items.every((n) => n.read_at));
    assert.equal(inbox.snapshot().unreadCount, 0);
  },

  async after_close_nothing_changes() {
    const client = standIn();
    const inbox = new Inbox(client, { pageSize: 2, maxItems: 100 });
    const loading = inbox.start();
    inbox.close();
    client.calls[0].resolve(page([2, 1], null, 2));
    await loading;
    client.fire("notification", note(3));
    assert.deepEqual(ids(inbox), []);
    assert.equal(client.calls.length, 1);
    await inbox.loadMore();
    assert.equal(client.calls.length, 1);
  },
};

const passed = [];
for (const [name, run] of Object.entries(cases)) {
  try {
    await run();
    passed.push(name);
  } catch (err) {
    console.error(`${name}: ${err && err.stack || err}`);
  }
}
console.log(JSON.stringify({ passed, total: Object.keys(cases).length }));
process.exit(passed.length === Object.keys(cases).length ? 0 : 1);
