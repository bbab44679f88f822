"""The report: a table for people, JSON for machines, and the exit status."""

from __future__ import annotations

import json
from collections.abc import Sequence

from utils.doctor.model import FAIL, PASS, SKIP, WARN, Finding, Options
from utils.doctor.target import Target

SYMBOLS = {PASS: "✓", WARN: "⚠", FAIL: "✗", SKIP: "·"}
COLOURS = {PASS: "32", WARN: "33", FAIL: "31", SKIP: "2"}
NOTE_ALWAYS = ("safari",)  # checks whose fix is advice worth showing even when they pass
EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2


def exit_code(findings: Sequence[Finding]) -> int:
    return EXIT_FAILED if any(f.status == FAIL for f in findings) else EXIT_OK


def verdict(findings: Sequence[Finding]) -> str:
    statuses = {f.status for f in findings}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else PASS


def render_json(options: Options, findings: Sequence[Finding], target: Target) -> str:
    return json.dumps({
        "url": options.url,
        "checked_url": target.url(),
        "origin": options.origin,
        "verdict": verdict(findings),
        "exit_code": exit_code(findings),
        "checks": [{"id": f.id, "title": f.title, "status": f.status,
                    "evidence": f.result.evidence, "fix": f.result.fix,
                    "data": dict(f.result.data)} for f in findings],
    }, indent=2, default=str)


def render_unreachable_json(options: Options, error: str) -> str:
    return json.dumps({"url": options.url, "verdict": "unreachable", "exit_code": EXIT_UNUSABLE,
                       "error": error, "checks": []}, indent=2)


def render_table(options: Options, findings: Sequence[Finding], colour: bool) -> str:
    def paint(status: str, text: str) -> str:
        return f"\033[{COLOURS[status]}m{text}\033[0m" if colour else text

    width = max((len(f.title) for f in findings), default=10)
    head = f"notification doctor: {options.url}"
    if options.origin:
        head += f" (origin {options.origin})"
    lines = [head, ""]
    for f in findings:
        lines.append(f"  {paint(f.status, SYMBOLS[f.status])} {f.title:<{width}}  "
                     f"{f.result.evidence}")
        if f.result.fix and f.status != PASS:
            lines.append(f"    {'':<{width}}  {paint(f.status, 'fix:')} {f.result.fix}")
        elif f.result.fix and f.id in NOTE_ALWAYS:
            lines.append(f"    {'':<{width}}  note: {f.result.fix}")
    counts = {s: sum(f.status == s for f in findings) for s in SYMBOLS}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines += ["", f"{len(findings)} checks: {summary}; exit {exit_code(findings)}"]
    return "\n".join(lines)
