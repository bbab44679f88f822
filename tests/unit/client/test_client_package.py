"""The client package in client/ (@notification-backend/client), as a front end gets it.

- ``npm pack`` makes a tarball that a new React + TypeScript app installs from the
  file, and ``tsc --noEmit`` type-checks the app's use of the core client (its
  preferences and device calls too), the React hooks (useNotifications,
  usePreferences) and the service worker export; a deliberate mistake in the same app fails to
  type-check, so the types constrain.
- The READMEs' TypeScript snippets, pasted into the same app, type-check under
  Vite's React template's compiler options.
- The React provider, in StrictMode (mount, unmount, mount), rendered by react-dom
  into jsdom in Node, against a real production gunicorn server over real
  socket.io-client: exactly one socket is connected after the double mount, as the
  server counts them; notifications reach the hook's items; a change of user, a
  sign-out and an unmount leave no socket behind. The hook's inbox, the same way:
  the first page on mount, loadMore(), live and replayed notifications once each,
  and the unread count after a reload.

Under CI=true missing node or npm, or a client package that is not installed and
built, is a failure; elsewhere these tests skip with the reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.client_package import (
    CLIENT,
    DIST,
    node_report,
    require_build,
    require_node,
)
from tests.support.servers import (
    ROOT,
    SERVER_API_KEY,
    ServerProcess,
    gunicorn,
    migrate,
    mint,
    server_env,
)

pytestmark = [pytest.mark.slow]

PACKAGE = json.loads((CLIENT / "package.json").read_text())
ORIGIN = "http://localhost:3000"  # server_env's FRONTEND_URLS
# What a new React + TypeScript app has; socket.io-client at the version the package
# is tested with (its peer dependency), the rest at their current releases.
APP_DEPENDENCIES = {
    "react": "^19",
    "react-dom": "^19",
    "socket.io-client": "4.8.1",
}
APP_DEV_DEPENDENCIES = {
    "@types/react": "^19",
    "@types/react-dom": "^19",
    "typescript": PACKAGE["devDependencies"]["typescript"],
}
APP_TSCONFIG = {
    "compilerOptions": {
        "target": "ES2022",
        "lib": ["ES2022", "DOM", "DOM.Iterable"],
        "module": "ESNext",
        "moduleResolution": "Bundler",
        "jsx": "react-jsx",
        "strict": True,
        "noEmit": True,
        "skipLibCheck": False,
        "types": [],
    },
    "include": ["src"],
}

# What Vite's React + TypeScript template checks an app's code with (its
# tsconfig.app.json), for the README's snippets. Vite itself is not installed: its
# `vite/client` types come in as VITE_ENV below (import.meta.env, as Vite declares it).
VITE_TSCONFIG = {
    "compilerOptions": {
        "target": "ES2022",
        "useDefineForClassFields": True,
        "lib": ["ES2022", "DOM", "DOM.Iterable"],
        "module": "ESNext",
        "types": [],
        "skipLibCheck": True,
        "moduleResolution": "bundler",
        "allowImportingTsExtensions": True,
        "verbatimModuleSyntax": True,
        "moduleDetection": "force",
        "noEmit": True,
        "jsx": "react-jsx",
        "strict": True,
        "noUnusedLocals": True,
        "noUnusedParameters": True,
        "erasableSyntaxOnly": True,
        "noFallthroughCasesInSwitch": True,
        "noUncheckedSideEffectImports": True,
    },
    "include": ["readme"],
}
VITE_ENV = """\
// vite/client's import.meta.env: any VITE_* variable, and Vite's own.
interface ImportMetaEnv {
  [key: string]: any;
  BASE_URL: string;
  MODE: string;
  DEV: boolean;
  PROD: boolean;
  SSR: boolean;
}
interface ImportMeta {
  readonly env: ImportMetaEnv;
}
"""
# Where the README snippets are, and how a fenced TypeScript block is found in them.
SNIPPET_DOCS = (ROOT / "README.md", CLIENT / "README.md")
SNIPPET = re.compile(r"^```(tsx|ts)\n(.*?)^```", re.MULTILINE | re.DOTALL)

# The app: the core client, the hook and the provider, with the package's own types
# and nothing declared by hand. Every annotation below must agree with the package.
APP_TSX = """\
import { io } from "socket.io-client";
import {
  NotificationClient, WebPush, describeError, pushUnavailable, DEFAULT_TRANSPORTS,
  NotificationRequestError,
  type AuthSuccess, type ClientError, type ConnectionState, type EnablePushResult,
  type MarkReadReply, type Notification, type NotificationClientOptions,
  type NotificationSocket, type PushReason, type PushStatus, type ReceiptsReport,
  type SyncComplete, type UnreadCount, type Preferences, type PreferencesPatch,
  type PushSubscriptionInfo, type QuietWindow, type NotificationsPage,
} from "@notification-backend/client";
import {
  NotificationProvider, useNotifications, usePreferences, type NotificationsState,
  type NotificationsValue, type PreferencesValue,
} from "@notification-backend/client/react";

const options: NotificationClientOptions = {
  url: "https://notify.example.com",
  io,
  getToken: async ({ expired }) => (expired ? "fresh" : "cached"),
  storageKey: "notifications:last_id:alice",
  transports: DEFAULT_TRANSPORTS,
  serviceWorkerUrl: "/notifications-sw.js",
};
const client = new NotificationClient(options);
client.on("notification", (n: Notification) => console.log(n.id.toFixed(), n.title.trim()));
client.on("auth_success", (a: AuthSuccess) => console.log(a.user_id, a.unread_count));
client.on("sync_complete", (s: SyncComplete) => console.log(s.last_id ?? 0, s.has_more, s.gap));
client.on("unread_count", (u: UnreadCount) => console.log(u.unread_count + 1));
client.on("state", ({ state, reason }) => console.log(state satisfies ConnectionState, reason));
client.on("receipts", (r: ReceiptsReport) => console.log("error" in r ? r.error : r.updated));
const stop = client.on("error", (e: ClientError) => console.log(e.code, describeError(e.code)));
stop();
client.connect();
const socket: NotificationSocket | null = client.socket;
socket?.emit("sync", { after_id: 0, limit: 100 }, (reply) => console.log(reply));
const lastId: number | null = client.lastId;
console.log(lastId);

async function push(): Promise<PushReason | number> {
  const result: EnablePushResult = await client.enablePush();
  if (result.ok) return result.id;
  if (result.reason === "subscribe_failed") console.log(result.code);
  const status: PushStatus = await new WebPush(options).status();
  console.log(status.endpointOrigin, pushUnavailable()?.reason);
  return result.reason;
}
void push();

async function inbox(): Promise<number | null> {
  const page: NotificationsPage = await client.getNotifications({ limit: 20 });
  const older = await client.getNotifications({ before: page.next_before, unread: true });
  const unread: number = await client.getUnreadCount();
  console.log(page.notifications[0]?.title, page.unread_count === unread);
  return older.next_before;
}
void inbox();

async function readAll(): Promise<number> {
  try {
    const reply: MarkReadReply = await client.markRead("all");
    return reply.unread_count;
  } catch (err) {
    return err instanceof NotificationRequestError ? err.status : -1;
  }
}
void readAll();

async function settings(): Promise<string | null> {
  const current: Preferences = await client.getPreferences();
  const quiet: QuietWindow[] = current.quiet_hours;
  const patch: PreferencesPatch = {
    channels: { push: !current.channels.push }, types: { comment: null }, timezone: null,
    quiet_hours: [{ start: "22:00", end: "07:00" }],
  };
  const next: Preferences = await client.setPreferences(patch);
  await client.replacePreferences(next); // a set as it came back goes back as it is
  await client.replacePreferences({ timezone: "Asia/Seoul", types: { comment: { push: false } } });
  const devices: PushSubscriptionInfo[] = await client.pushSubscriptions();
  const device = await client.setPushSubscriptionEnabled(devices[0]!.id, false);
  console.log(quiet.length, device.enabled satisfies boolean, device.origin.trim());
  return next.timezone;
}
void settings();

function PreferencesPanel() {
  const value: PreferencesValue = usePreferences();
  const { preferences, loading, error, update, reload } = value;
  if (loading && !preferences) return <p>Loading…</p>;
  return (
    <div>
      {error ? <p title={error.code}>{error.message} ({error.status})</p> : null}
      <label>
        <input type="checkbox" checked={preferences?.channels.push ?? true}
               onChange={(e) => void update({ channels: { push: e.target.checked } })} />
        Push
      </label>
      <span>{preferences?.quiet_hours.map((w) => `${w.start}-${w.end}`).join(", ")}</span>
      <button onClick={() => void reload().then((p) => console.log(p.updated_at ?? "never"))}>
        Reload
      </button>
    </div>
  );
}

function Bell() {
  const value: NotificationsValue = useNotifications();
  const { items, unreadCount, state, connected, markRead, enablePush, disablePush } = value;
  const { hasMore, loading, inboxError, loadMore } = value;
  const label: NotificationsState = state;
  const more: () => Promise<void> = loadMore;
  return (
    <div title={label} data-connected={connected}>
      <button onClick={() => enablePush().then((r) => console.log(r.ok))}>Turn on</button>
      <button onClick={() => void disablePush()}>Turn off</button>
      <span>{unreadCount}</span>
      {items.map((n) => (
        <p key={n.id} onClick={() => void markRead([n.id])}>{n.title}: {n.body ?? ""}</p>
      ))}
      {inboxError ? <p title={inboxError.code}>{inboxError.message}</p> : null}
      {hasMore ? <button disabled={loading} onClick={() => void more()}>More</button> : null}
    </div>
  );
}

export function App({ userId }: { userId: string | null }) {
  return (
    <NotificationProvider url="https://notify.example.com" io={io} userId={userId}
                          getToken={() => "token"} transports={["websocket"]}>
      <Bell />
      <PreferencesPanel />
    </NotificationProvider>
  );
}
"""

# Lines that must NOT type-check, each with what tsc must say about it.
MISTAKES = {
    # a notification's title is a string
    "mistake_title.tsx": ('client.on("notification", (n) => { const t: number = n.title; });',
                          "Type 'string' is not assignable to type 'number'"),
    # no such event
    "mistake_event.tsx": ('client.on("notifications", () => undefined);',
                          '"notifications"\' is not assignable to parameter'),
    # the provider needs getToken
    "mistake_provider.tsx": ('export const P = () => <NotificationProvider url="u" userId="a" />;',
                             "Property 'getToken' is missing"),
    # the client's options need a URL
    "mistake_options.tsx": ('new NotificationClient({ getToken: () => "t" });',
                            "Property 'url' is missing"),
    # a channel is a boolean (or null, to delete it)
    "mistake_channel.tsx": ('void client.setPreferences({ channels: { push: "no" } });',
                            "Type 'string' is not assignable to type 'boolean"),
    # a quiet window has both ends
    "mistake_window.tsx": ('void client.setPreferences({ quiet_hours: [{ start: "22:00" }] });',
                           "Property 'end' is missing"),
    # the hook's preferences are null until loaded (and when signed out)
    "mistake_hook.tsx": ("export const H = () => {\n"
                         "  const { preferences } = usePreferences();\n"
                         "  return preferences.timezone;\n};",
                         "'preferences' is possibly 'null'"),
}
MISTAKE_PREAMBLE = """\
import { NotificationClient } from "@notification-backend/client";
import { NotificationProvider, usePreferences } from "@notification-backend/client/react";
const client = new NotificationClient({ url: "u", getToken: () => "t" });
void client; void NotificationProvider; void usePreferences;
"""


def run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "npm_config_audit": "false", "npm_config_fund": "false",
           "npm_config_update_notifier": "false"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """`npm pack` in client/, into a temporary folder: the tarball and npm's report."""
    _node, npm = require_node()
    out = tmp_path_factory.mktemp("pack")
    packed = ok(run([npm, "pack", "--json", "--pack-destination", str(out)], CLIENT))
    [report] = json.loads(packed.stdout[packed.stdout.index("["):])
    yield out / report["filename"], report


def test_npm_pack_ships_the_build_and_nothing_else(tarball, capsys):
    path, report = tarball
    files = sorted(f["path"] for f in report["files"])
    assert files == sorted(["package.json", "README.md", "LICENSE", "dist/index.js",
                            "dist/index.d.ts", "dist/types.d.ts", "dist/react.js",
                            "dist/react.d.ts", "dist/inbox.js", "dist/notifications-sw.js"])
    with tarfile.open(path) as archive:
        assert sorted(m.name.removeprefix("package/") for m in archive.getmembers()) == files
    with capsys.disabled():  # the file list and sizes, for the record
        print(f"\nnpm pack: {report['filename']}: {report['size']} bytes packed, "
              f"{report['unpackedSize']} unpacked, {report['entryCount']} files")
        for f in sorted(report["files"], key=lambda f: f["path"]):
            print(f"  {f['size']:>7}  {f['path']}")


@pytest.fixture(scope="module")
def app(tarball, tmp_path_factory) -> Path:
    """A new React + TypeScript app with the tarball installed, as a front end has it."""
    path, _ = tarball
    _node, npm = require_node()
    app = tmp_path_factory.mktemp("react-app") / "app"
    (app / "src").mkdir(parents=True)
    (app / "package.json").write_text(json.dumps({
        "name": "new-react-app", "private": True, "type": "module",
        "dependencies": APP_DEPENDENCIES, "devDependencies": APP_DEV_DEPENDENCIES}, indent=2))
    (app / "tsconfig.json").write_text(json.dumps(APP_TSCONFIG, indent=2))
    (app / "src" / "App.tsx").write_text(APP_TSX)
    ok(run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], app))
    ok(run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", str(path)], app))
    return app


def test_a_new_react_typescript_app_installs_the_tarball_and_type_checks(app):
    node, _npm = require_node()
    installed = json.loads((app / "package.json").read_text())["dependencies"]
    assert installed[PACKAGE["name"]].startswith("file:")
    tsc = str(app / "node_modules" / ".bin" / "tsc")
    ok(run([tsc, "--noEmit", "-p", "."], app, timeout=300))

    # The service worker, where a front end copies it from (the "./sw" export).
    resolved = ok(run([node, "--input-type=module", "-e",
                       f'console.log(import.meta.resolve("{PACKAGE["name"]}/sw"))'], app))
    worker = Path(resolved.stdout.strip().removeprefix("file://"))
    assert worker.name == "notifications-sw.js" and b'addEventListener("push"' in \
        worker.read_bytes()

    # Each mistake alone, in the same app: tsc refuses it, for the reason expected.
    for name, (line, said) in MISTAKES.items():
        (app / "src" / name).write_text(MISTAKE_PREAMBLE + line + "\n")
        checked = run([tsc, "--noEmit", "-p", "."], app, timeout=300)
        (app / "src" / name).unlink()
        assert checked.returncode != 0, f"{name} type-checked: {line}"
        errors = [e for e in checked.stdout.splitlines() if "error TS" in e]
        assert errors and all(e.startswith(f"src/{name}") for e in errors), checked.stdout
        assert said in checked.stdout, checked.stdout


def snippets(doc: Path) -> list[tuple[int, str, str]]:
    """Each ```ts and ```tsx block of ``doc``: (its first line, extension, code)."""
    text = doc.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1), m.group(2))
            for m in SNIPPET.finditer(text)]


def test_the_readme_snippets_type_check_in_a_vite_react_app(app):
    """Pasted into a Vite React + TypeScript app, every TypeScript snippet of the
    READMEs type-checks as that template checks (strict, no unused names); what a
    snippet assumes of the app it declares itself."""
    readme = app / "readme"
    readme.mkdir(exist_ok=True)
    (readme / "vite-env.d.ts").write_text(VITE_ENV)
    (app / "tsconfig.readme.json").write_text(json.dumps(VITE_TSCONFIG, indent=2))
    where = {}
    for doc in SNIPPET_DOCS:
        found = snippets(doc)
        assert found, f"no TypeScript snippet in {doc.relative_to(ROOT)}"
        label = str(doc.relative_to(ROOT))
        for line, ext, code in found:
            name = f"{label.replace('/', '_').removesuffix('.md')}_{line}.{ext}"
            (readme / name).write_text(code)
            where[name] = f"{label}, the block at line {line}"
    tsc = str(app / "node_modules" / ".bin" / "tsc")
    checked = run([tsc, "--noEmit", "-p", "tsconfig.readme.json"], app, timeout=300)
    errors = [line for line in checked.stdout.splitlines() if "error TS" in line]
    named = [f"{where.get(Path(e.split('(', 1)[0]).name, '?')}: {e}" for e in errors]
    assert checked.returncode == 0 and not errors, "\n".join(named) or checked.stdout


# -- the React provider against a real server ---------------------------------------


@pytest.fixture
def live_server(tmp_path) -> Iterator[ServerProcess]:
    env = server_env(tmp_path, FRONTEND_URLS=ORIGIN)
    migrate(env)
    server = gunicorn(tmp_path, env).start()
    yield server
    server.stop()


@pytest.mark.server
def test_the_provider_keeps_one_socket_through_strict_mode_and_none_after_sign_out(
        live_server, tmp_path):
    report, result = node_report("react-provider.mjs", {
        "NOTIFY_URL": live_server.url, "NOTIFY_API_KEY": SERVER_API_KEY, "ORIGIN": ORIGIN,
        "USER_A": "react-ann", "USER_B": "react-bob",
        "TOKEN_A": mint("react-ann"), "TOKEN_B": mint("react-bob")})
    assert "error" not in report, (report, result.stderr)
    steps = report["steps"]

    # StrictMode mounted the provider twice: two clients were made, the first closed
    # at once; the server holds exactly one socket, this process one live one.
    mounted = steps["after_double_mount"]
    assert mounted["server_sockets"] == 1
    assert mounted["created"] == 2 and mounted["active"] == 1 and mounted["connected"] == 1
    assert (mounted["state"], mounted["user"], mounted["unread"]) == (
        "connected", "react-ann", 0)

    # Live notifications reach items, newest first, each once, counted as unread.
    got = steps["notifications"]
    first, second = got["ids"]
    assert [(n["id"], n["title"], n["read_at"]) for n in got["items"]] == [
        (second, "second for A", None), (first, "first for A", None)]
    assert got["unread"] == 2

    marked = steps["mark_read"]
    assert marked["reply"] == {"updated": 1, "unread_count": 1}
    assert marked["unread"] == 1 and marked["read"] == [first]

    # Another user: the old client is closed, the new one is the only socket, and
    # only the new user's notifications arrive.
    switched = steps["after_user_change"]
    assert switched["server_sockets"] == 1
    assert switched["active"] == 1 and switched["connected"] == 1
    assert switched["user"] == "react-bob" and switched["items"] == [switched["for_b"]]

    signed_out = steps["after_sign_out"]
    assert signed_out["server_sockets"] == 0
    assert signed_out["active"] == 0 and signed_out["connected"] == 0
    assert (signed_out["state"], signed_out["items"], signed_out["unread"]) == (
        "signed_out", 0, 0)

    unmounted = steps["after_unmount"]
    assert unmounted["server_sockets_before"] == 1
    assert unmounted["server_sockets"] == 0
    assert unmounted["active"] == 0 and unmounted["connected"] == 0


@pytest.mark.server
def test_the_hook_loads_the_inbox_pages_it_and_merges_what_the_socket_brings(
        live_server, tmp_path):
    """After a reload the hook shows the inbox, not only what arrived since: the first
    page on mount, older pages with loadMore(), live and replayed notifications merged
    in once each, and the server's unread count (client/test/react-inbox.mjs)."""
    report, result = node_report("react-inbox.mjs", {
        "NOTIFY_URL": live_server.url, "NOTIFY_API_KEY": SERVER_API_KEY, "ORIGIN": ORIGIN,
        "USER": "inbox-ivy", "TOKEN": mint("inbox-ivy")})
    assert "error" not in report, (report, result.stderr)
    steps = report["steps"]
    page = 10

    # On mount: the newest page of what was stored before, its read states, the
    # server's count; StrictMode's discarded first mount asked for nothing. The
    # client had no last_id, so the page is read again once the socket is in.
    mounted = steps["mounted"]
    newest_first = sorted(mounted["seeded"], reverse=True)
    assert mounted["items"] == newest_first[:page]
    assert mounted["read_items"] == [i for i in newest_first[:page] if i in mounted["read"]]
    assert mounted["unread"] == len(mounted["seeded"]) - len(mounted["read"])
    assert mounted["has_more"] is True
    assert mounted["requests"] == [{"limit": str(page)}] * 2
    assert mounted["sockets"] == 2  # StrictMode: one made and closed, one live

    # loadMore(): before = the oldest shown, until the last page; two calls at once
    # are one request, and none goes out after the last page.
    paged = steps["paged"]
    assert paged["same_promise"] is True
    assert paged["second"] == {"items": newest_first[:2 * page], "has_more": True}
    assert paged["last"] == {"items": newest_first, "has_more": False}
    assert paged["requests"] == [{"limit": str(page), "before": str(newest_first[page - 1])},
                                 {"limit": str(page), "before": str(newest_first[2 * page - 1])}]
    assert sorted(paged["read_items"]) == sorted(mounted["read"])

    # A live one: on top, once, one more unread.
    live = steps["live"]
    assert live["items"] == [live["id"], *newest_first]
    assert live["unread"] == mounted["unread"] + 1

    # The reload: the two that came while away are in the first page and in the
    # replay, and show once; one request (the replay covers the rest); the count is
    # the server's from the first render that shows notifications.
    reloaded = steps["reloaded"]
    expected = [*reversed(reloaded["away"]), live["id"], *newest_first][:page]
    assert reloaded["items"] == expected
    assert reloaded["unread"] == reloaded["unread_when_shown"] == live["unread"] + 2
    assert reloaded["badge_over_empty_list"] == 0
    assert reloaded["has_more"] is True
    assert reloaded["requests"] == [{"limit": str(page)}]


def test_the_inbox_merges_pages_and_arrivals_whatever_comes_first():
    """The orders a real server does not show on demand (client/test/inbox.mjs, the
    inbox against a stand-in client): a page's count only until the socket's; an
    unseen older arrival (a delivery check's resend, a late commit) asks the server
    for the count; a first page drops what may not join on to it; a loadMore sent
    before a new first page is dropped; maxItems trims and loadMore brings back; a
    failure shows and is retried; a page read again that joins on keeps the loaded
    pages; read stays read; a closed inbox changes nothing."""
    report, result = node_report("inbox.mjs", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(report["passed"]) == report["total"] == 10, report


def test_the_built_client_imports_nothing_so_pages_load_it_alone():
    """/static/notifications.js is dist/index.js as it is: no import a page would need
    an import map or a bundler for (socket.io-client comes in as the `io` option)."""
    require_build()
    built = (DIST / "index.js").read_text()
    assert "\nimport " not in built and "import(" not in built
    assert "export class NotificationClient" in built


def test_a_busy_refusal_is_retried_after_a_spread_delay_and_a_final_one_is_not():
    """server_busy (and server_unavailable) mean "not now": the client connects again
    after retry_after times 0.5 to 1.5, so clients refused together come back spread
    out; token_invalid is final; close() cancels a pending retry."""
    report, result = node_report("retry.mjs", timeout=60)
    assert result.returncode == 0, result.stderr
    assert report["busy_connect_calls"] == [2] * 40
    delays = report["busy_delays_ms"]
    assert all(95 <= d <= 330 for d in delays), delays  # 0.5-1.5 × 200 ms, timer slack
    assert max(delays) - min(delays) >= 50, delays
    assert report["invalid_connect_calls"] == 1
    assert report["closed_connect_calls"] == 1
