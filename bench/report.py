"""Medians, ratios to Node, the Markdown table and the plot."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

PLOT = "bench.png"


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _per_rep(data: dict[str, Any], name: str, fn: Callable[[dict[str, Any]], Any]) -> list:
    out = []
    for rep in data["runs"][name]:
        try:
            out.append(fn(rep))
        except (KeyError, TypeError, ZeroDivisionError):
            out.append(None)
    return out


PRODUCERS = ("bulk", "outbox")  # the producer scenarios, each a list of rate steps


def _at_held(scenario: dict[str, Any]) -> dict[str, Any]:
    """The step at the highest rate held, or the first step when none held."""
    steps = scenario["steps"]
    held = [st for st in steps if st["held"] and st["rate"] == scenario["held_rate"]]
    return held[-1] if held else steps[0]


def _batch_cpu_us(batches: list[dict[str, Any]]) -> float:
    return 1e6 * sum(b["cpu_s"] for b in batches) / sum(b["received"] for b in batches)


def metrics(data: dict[str, Any]) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """Each metric as a function of one repetition's results."""
    meta = data["meta"]
    sizes, mid = [str(s) for s in meta["sizes"]], str(meta["notify_size"])
    top = sizes[-1]
    m: dict[str, Callable[[dict[str, Any]], Any]] = {}
    for s in sizes:
        m[f"connect_s@{s}"] = lambda r, s=s: r[s]["connect"]["seconds"]
        m[f"cpu_per_connect_ms@{s}"] = lambda r, s=s: r[s]["connect"]["cpu_per_connect_ms"]
        m[f"kb_per_conn@{s}"] = lambda r, s=s: r[s]["connect"]["rss_per_conn"] / 1024
    m[f"rss_mb@{top}"] = lambda r: r[top]["connect"]["rss_after"] / 2**20
    m["targeted_p50_ms"] = lambda r: r[mid]["targeted"]["p50_ms"]
    m["targeted_p99_ms"] = lambda r: r[mid]["targeted"]["p99_ms"]
    m["targeted_max_ms"] = lambda r: r[mid]["targeted"]["max_ms"]
    m["targeted_lost"] = lambda r: r[mid]["targeted"]["lost"]
    m["targeted_duplicates"] = lambda r: r[mid]["targeted"]["duplicates"]
    m["single_cpu_us"] = lambda r: _batch_cpu_us([r[mid]["targeted"]])
    m["batch_all_received_ms"] = lambda r: _median([b["all_received_ms"] for b in r[mid]["batch"]])
    m["batch_cpu_us"] = lambda r: _batch_cpu_us(r[mid]["batch"])
    m["batch_lost"] = lambda r: sum(b["lost"] for b in r[mid]["batch"])
    m["fanout_all_received_ms"] = lambda r: r[mid]["fanout"]["all_received_ms"]
    m["fanout_cpu_us"] = lambda r: _batch_cpu_us([r[mid]["fanout"]])
    m["fanout_lost"] = lambda r: r[mid]["fanout"]["lost"]
    m["capacity_held_per_s"] = lambda r: r[mid]["capacity"]["held_rate"]
    for kind in PRODUCERS:
        m[f"{kind}_held_per_s"] = lambda r, kind=kind: r[mid][kind]["held_rate"]
        m[f"{kind}_p99_ms_at_held"] = lambda r, kind=kind: _at_held(r[mid][kind])["p99_ms"]
        m[f"{kind}_cpu_us"] = lambda r, kind=kind: _at_held(r[mid][kind])[
            "cpu_per_delivered_us"]
    for mode in ("off", "on"):
        m[f"receipts_{mode}_cpu_delivered_us"] = lambda r, mode=mode: r[mid]["receipts"][mode][
            "cpu_per_delivered_us"]
    m["receipts_cpu_ratio_on_off"] = lambda r: r[mid]["receipts"]["ratio_on_off"]
    for mode in ("off", "on"):
        m[f"receipts_{mode}_cpu_us"] = lambda r, mode=mode: r[mid]["receipts"][mode][
            "cpu_per_notify_us"]
        m[f"receipts_{mode}_db_writes_per_notification"] = lambda r, mode=mode: r[mid][
            "receipts"][mode]["writes_per_notification"]
    m[f"gc_max_pause_ms@{top}"] = lambda r: r[top]["gc"]["max_ms"]
    m[f"gc_gen2_passes@{top}"] = lambda r: r[top]["gc"]["gen2"]
    m[f"gc_forced_full_ms@{top}"] = lambda r: r[top]["gc"]["forced_full_ms"]
    m[f"connect_failed@{top}"] = lambda r: r[top]["connect"]["failed"]
    return m


def summarize(data: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Median over repetitions of every metric, per server."""
    return {name: {key: _median(_per_rep(data, name, fn)) for key, fn in metrics(data).items()}
            for name in data["runs"]}


def lossless(data: dict[str, Any]) -> bool:
    """Every scenario delivered everything exactly once, with no refused connect."""
    for reps in data["runs"].values():
        for rep in reps:
            for res in rep.values():
                if res["connect"]["failed"]:
                    return False
                receipts = res.get("receipts") or {}
                scenarios = [res.get("targeted"), res.get("fanout"), *res.get("batch", []),
                             receipts.get("off"), receipts.get("on")]
                for sc in filter(None, scenarios):
                    if sc["lost"] or sc["duplicates"] or sc.get("http_errors"):
                        return False
                # A capacity step past what the server holds may be late, or refused
                # by a timeout, but what was accepted must still arrive exactly once.
                if any("error" in (res.get(key) or {}) for key in PRODUCERS):
                    return False
                for key in ("capacity", *PRODUCERS):
                    for step in (res.get(key) or {}).get("steps", []):
                        if step["lost"] or step["duplicates"]:
                            return False
    return True


def targets(meta: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """(metric key, description, comparison, limit): issue 13's targets. "xbase" limits
    are ratios to stock Flask-SocketIO (the baseline), "xnode" ratios to Node, both from
    the same run; ">=" is a floor."""
    top, mid = meta["sizes"][-1], meta["notify_size"]
    return [
        ("capacity_held_per_s", f"targeted notifies sustained with p99 ≤ 50 ms, {mid} "
         "connected (/s)", ">=", 1000),
        ("single_cpu_us", "CPU per targeted notify (µs), ÷ stock", "xbase", 1.0),
        ("single_cpu_us", "CPU per targeted notify (µs), ÷ Node", "xnode", 3.0),
        ("fanout_all_received_ms", f"fan-out to {meta['fanout']}, last arrival (ms), ÷ stock",
         "xbase", 1.0),
        (f"kb_per_conn@{mid}", f"memory per socket at {mid}, limits on (KB)", "<=", 45),
        (f"connect_s@{top}", f"{top} sockets connected (s), ÷ Node", "xnode", 2.5),
        (f"gc_max_pause_ms@{top}", f"GC max pause connecting {top} (ms)", "<=", 50),
        (f"gc_forced_full_ms@{top}", f"one forced full GC pass with {top} connected (ms); "
         "not a target: what a full pass costs when one happens", "info", 0),
    ]


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _verdict(op: str, value: float | None, limit: float) -> str:
    if op == "info":
        return "—"
    if value is None:
        return "n/a"
    ok = value >= limit if op == ">=" else value <= limit
    return "yes" if ok else "**no**"


def _limit_text(op: str, limit: float) -> str:
    return {"xnode": f"≤ {limit:g}× Node", "xbase": f"≤ {limit:g}× stock", ">=": f"≥ {limit:,g}",
            "info": "—"}.get(op, f"≤ {limit:g}")


def markdown_table(data: dict[str, Any]) -> str:
    s = data["summary"]
    names = list(data["runs"])
    prod, base, node = (s.get(n, {}) for n in ("product", "baseline", "node"))
    lines = ["| target | limit | " + " | ".join(names) + " | product ÷ stock | product ÷ node"
             " | met |", "|---|---|" + "---|" * len(names) + "---|---|---|"]
    for key, desc, op, limit in targets(data["meta"]):
        ratios = _ratio(prod.get(key), base.get(key)), _ratio(prod.get(key), node.get(key))
        value = {"xbase": ratios[0], "xnode": ratios[1]}.get(op, prod.get(key))
        cells = [_fmt(s[n].get(key)) for n in names]
        lines.append(f"| {desc} | {_limit_text(op, limit)} | " + " | ".join(cells)
                     + f" | {_fmt(ratios[0])} | {_fmt(ratios[1])} | {_verdict(op, value, limit)} |")
    lines += ["", "All measures (medians over repetitions; \"baseline\" is stock Flask-SocketIO):",
              "", "| measure | " + " | ".join(names) + " | product ÷ stock | product ÷ node |",
              "|---|" + "---|" * len(names) + "---|---|"]
    for key in metrics(data):
        cells = [_fmt(s[n].get(key)) for n in names]
        lines.append(f"| {key} | " + " | ".join(cells)
                     + f" | {_fmt(_ratio(prod.get(key), base.get(key)))}"
                     + f" | {_fmt(_ratio(prod.get(key), node.get(key)))} |")
    lines += ["", capacity_table(data)]
    return "\n".join(lines)


def capacity_table(data: dict[str, Any]) -> str:
    """Each server's capacity steps in the first repetition: rate, p50/p99, arrivals."""
    lines = ["Capacity steps, first repetition (rate sent/s: p50 / p99 ms, lost; ✗ marks the "
             "step that missed):", "", "| server | steps | held |", "|---|---|---|"]
    mid = str(data["meta"]["notify_size"])
    for name, reps in data["runs"].items():
        cap = (reps[0].get(mid) or {}).get("capacity") if reps else None
        if not cap:
            continue
        steps = "; ".join(
            f"{st['rate']:g}: {_fmt(st['p50_ms'])} / {_fmt(st['p99_ms'])}, {st['lost']}"
            + ("" if st["held"] else " ✗") for st in cap["steps"])
        lines.append(f"| {name} | {steps} | {cap['held_rate']:g}/s |")
    return "\n".join(lines)


def producer_targets(meta: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """(metric key, description, comparison, limit): issue 22's targets. "xnode" compares
    the product's figure with Node's CPU per targeted notify (one POST each) of the same
    run; "info" rows are there to compare with an earlier run."""
    mid, p99 = meta["notify_size"], meta.get("producer_p99_ms", 100)
    return [
        ("bulk_held_per_s", f"bulk: highest rate held with p99 ≤ {p99:g} ms, {mid} "
         "connected (notifications/s)", ">=", 5000),
        ("outbox_held_per_s", f"outbox: highest rate held with p99 ≤ {p99:g} ms, {mid} "
         "connected (notifications/s)", ">=", 5000),
        ("bulk_cpu_us", "bulk: CPU per delivered notification at the rate held (µs); stock "
         "and Node: CPU per targeted notify, one POST each", "xnode", 1.0),
        ("outbox_cpu_us", "outbox: CPU per delivered notification at the rate held (µs); "
         "stock and Node: CPU per targeted notify, one POST each", "xnode", 1.0),
        ("receipts_cpu_ratio_on_off", f"receipts on ÷ off: CPU per delivered notification, "
         f"{meta['rate']:g} targeted notifies/s", "<=", 1.25),
        ("single_cpu_us", "CPU per targeted notify, one POST each (µs); compare with the "
         "run before", "info", 0),
        ("fanout_all_received_ms", f"fan-out to {meta['fanout']}, last arrival (ms); compare "
         "with the run before", "info", 0),
    ]


_AGAINST_POST = ("bulk_cpu_us", "outbox_cpu_us")  # compared with the others' single POSTs


def producers_table(data: dict[str, Any]) -> str:
    """Issue 22's targets beside stock's and Node's per-POST figures of the same run,
    then every bulk and outbox step, then receipts off and on."""
    s, meta = data["summary"], data["meta"]
    prod, base, node = (s.get(n, {}) for n in ("product", "baseline", "node"))
    lines = ["| measure | product | stock | Node | product ÷ Node | target | met |",
             "|---|---|---|---|---|---|---|"]
    for key, desc, op, limit in producer_targets(meta):
        other = "single_cpu_us" if key in _AGAINST_POST else key
        theirs = (base.get(other), node.get(other)) if op in ("xnode", "info") else (None, None)
        ratio = _ratio(prod.get(key), theirs[1])
        value = ratio if op == "xnode" else prod.get(key)
        cells = [_fmt(prod.get(key)), *("—" if v is None else _fmt(v) for v in theirs)]
        lines.append(f"| {desc} | " + " | ".join(cells)
                     + f" | {'—' if ratio is None else _fmt(ratio)} | {_limit_text(op, limit)}"
                     f" | {_verdict(op, value, limit)} |")
    lines += ["", producer_steps_table(data), "", receipts_table(data)]
    return "\n".join(lines)


def _first_product(data: dict[str, Any]) -> dict[str, Any]:
    reps = data["runs"].get("product") or [{}]
    return reps[0].get(str(data["meta"]["notify_size"])) or {}


def producer_steps_table(data: dict[str, Any]) -> str:
    """Every bulk and outbox step of the product's first repetition."""
    meta, res = data["meta"], _first_product(data)
    lines = [f"Bulk and outbox steps, first repetition ({meta['notify_size']} connected; "
             f"{meta.get('producer_seconds', 0):g} s a step; the producer sends every "
             f"{meta.get('tick_ms', 0):g} ms: one bulk request, or one outbox transaction, "
             "with the notifications due; ✗ marks the step that missed):", "",
             "| scenario | rate (/s) | kept (/s) | per request or transaction | p50 / p99 / max "
             "(ms) | lost | server CPU per delivered (µs) | rows per commit | held |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind in PRODUCERS:
        sc = res.get(kind)
        if not sc:
            continue
        if "skipped" in sc or "error" in sc:
            why = sc.get("skipped") or "failed: " + sc["error"].splitlines()[0][:200]
            lines.append(f"| {kind} | {why} | | | | | | | |")
            continue
        for st in sc["steps"]:
            per = st.get("per_request_mean", st.get("per_transaction_mean"))
            lines.append(
                f"| {kind} ({sc['database']}) | {st['rate']:g} | {_fmt(st['sent_rate'])} | "
                f"{_fmt(per)} | {_fmt(st['p50_ms'])} / {_fmt(st['p99_ms'])} / "
                f"{_fmt(st['max_ms'])} | {st['lost']} | {_fmt(st['cpu_per_delivered_us'])} | "
                f"{_fmt(st.get('rows_per_commit'))} | {'yes' if st['held'] else '✗'} |")
    return "\n".join(lines)


def receipts_table(data: dict[str, Any]) -> str:
    """Receipts off and on, the product's first repetition."""
    rc = _first_product(data).get("receipts")
    if not rc:
        return ""
    off, on = rc["off"], rc["on"]
    rows = [
        (f"server CPU per delivered notification, the run and {rc.get('window_s', 1):g} s "
         "after it (µs)", "cpu_per_delivered_us"),
        (f"server CPU per notification until every delivery check ran, {rc['push_after_s']:g}"
         " s later (µs; without receipts each notification is emitted again)",
         "cpu_per_notify_us"),
        ("database transactions per notification", "writes_per_notification"),
        ("p50 (ms)", "p50_ms"),
        ("p99 (ms)", "p99_ms"),
    ]
    lines = [f"Receipts off and on, first repetition ({rc['rate']:g} targeted notifies/s for "
             f"{rc['seconds']:g} s; CPU net of the idle server's):", "",
             "| measure | receipts off | receipts on | on ÷ off |", "|---|---|---|---|"]
    for desc, key in rows:
        a, b = off.get(key), on.get(key)
        lines.append(f"| {desc} | {_fmt(a)} | {_fmt(b)} | {_fmt(_ratio(b, a))} |")
    return "\n".join(lines)


def conditions(data: dict[str, Any]) -> str:
    m = data["meta"]
    mach, v = m["machine"], m["versions"]
    vers = ", ".join(f"{k} {val}" for k, val in v.items())
    return (f"Run {m['date']} (commit {m['commit']}{', ' + m['label'] if m['label'] else ''}):"
            f" {mach['cpu']}, {mach['cores']} cores, Linux {mach['kernel']}, Python "
            f"{mach['python']}, Node {mach['node']}; {vers}. {m['reps']} repetitions, servers "
            f"interleaved; clients {'offer' if m['deflate_offered'] else 'do not offer'} "
            f"permessage-deflate; product worker: {m['product_worker']}"
            f"{'; product env ' + ' '.join(m['product_env']) if m.get('product_env') else ''}."
            f" Machine load average (1/5/15 min) before and after the run: "
            f"{' / '.join(m.get('loadavg_before_after', ['?', '?']))}.")


def write_docs(data: dict[str, Any], docs: Path, block_name: str = "table") -> None:
    """Replace one generated block of docs/BENCHMARKS.md and redraw its plot."""
    start, end = f"<!-- bench:{block_name}:start -->", f"<!-- bench:{block_name}:end -->"
    image = PLOT if block_name == "table" else f"bench-{block_name}.png"
    docs.mkdir(exist_ok=True)
    plot(data, docs / image)
    block = "\n".join([start, "", conditions(data), "", markdown_table(data), "",
                       f"![latency and memory per connection]({image})", "", end])
    path = docs / "BENCHMARKS.md"
    text = _replace_block(path.read_text() if path.exists() else "# Benchmarks\n",
                          block_name, block)
    if _has_producers(data):
        name = "producers" if block_name == "table" else f"{block_name}-producers"
        text = _replace_block(text, name, "\n".join([
            f"<!-- bench:{name}:start -->", "", conditions(data), "", producers_table(data),
            "", f"<!-- bench:{name}:end -->"]))
    path.write_text(text)


def _has_producers(data: dict[str, Any]) -> bool:
    res = _first_product(data)
    return any(res.get(k) for k in (*PRODUCERS, "receipts"))


def _replace_block(text: str, name: str, block: str) -> str:
    """``text`` with its generated block ``name`` replaced (appended when missing)."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return head + block + tail


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, names = data["summary"], list(data["runs"])
    sizes = [str(x) for x in data["meta"]["sizes"]]
    fig, (mem, lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in names:
        mem.plot([int(x) for x in sizes], [s[name].get(f"kb_per_conn@{x}") for x in sizes],
                 marker="o", label=name)
    mem.axhline(45, linestyle="--", color="grey", linewidth=1, label="target (45 KB)")
    mem.set(xlabel="connected sockets", ylabel="RSS per connection (KB)",
            title="Memory per connection")
    mem.set_ylim(bottom=0)
    mem.legend()
    keys = ["targeted_p50_ms", "targeted_p99_ms", "targeted_max_ms"]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [s[name].get(k) or 0 for k in keys]
        bars = lat.bar([j + i * width for j in range(len(keys))], vals, width, label=name)
        lat.bar_label(bars, labels=[_fmt(v) for v in vals], fontsize=7)
    lat.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(keys))],
                   ["p50", "p99", "max"])
    lat.set_yscale("log")
    lat.set(ylabel="ms (log)", title=f"Targeted notify latency, {data['meta']['rate']:g}/s, "
            f"{data['meta']['notify_size']} connected")
    lat.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
