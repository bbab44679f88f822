"""Dependency audit: pip-audit over requirements.txt, failing on a known vulnerability.

    .venv/bin/python scripts/audit.py [-r requirements.txt]

Exit status:
  0  every pinned package was checked and none has a known, unreviewed vulnerability;
  1  a known vulnerability (its id, package and fixed versions are printed);
  2  the audit is incomplete: the vulnerability service could not be reached or could
     not look a package up. Under CI=true that fails the run (a silent pass would
     claim a check that never happened); elsewhere it is a loud warning and exit 0.
     AUDIT_ALLOW_INCOMPLETE=1 turns the CI failure into the warning, for machines
     that knowingly have no route to the service.

A reviewed exception goes in pip-audit-ignore.txt, one vulnerability id per line with
the reason, who reviewed it and until when, e.g.
  GHSA-xxxx-xxxx-xxxx  # only affects the CLI's --foo; reviewed by ana, until 2027-01-31
Each id there is passed to pip-audit as --ignore-vuln.

AUDIT_SERVICE (pypi, the default, or osv) and AUDIT_OSV_URL choose the service.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE_FILE = ROOT / "pip-audit-ignore.txt"
OK, VULNERABLE, INCOMPLETE = 0, 1, 2


def truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def ignored_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    ids = []
    for line in path.read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            ids.append(entry)
    return ids


def run_pip_audit(requirements: Path, ignore: list[str],
                  report: Path) -> subprocess.CompletedProcess:
    pip_audit = Path(sys.executable).parent / "pip-audit"
    argv = [str(pip_audit), "-r", str(requirements), "--no-deps", "--disable-pip",
            "--progress-spinner", "off", "--timeout", os.environ.get("AUDIT_TIMEOUT", "15"),
            "-f", "json", "-o", str(report),
            "-s", os.environ.get("AUDIT_SERVICE", "pypi")]
    if os.environ.get("AUDIT_OSV_URL"):
        argv += ["--osv-url", os.environ["AUDIT_OSV_URL"]]
    for vuln_id in ignore:
        argv += ["--ignore-vuln", vuln_id]
    # --no-deps: requirements.txt pins every package, transitive ones included.
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def judge(report: dict) -> tuple[list[str], list[str], int]:
    """(vulnerabilities, packages not checked, packages checked) from pip-audit's JSON."""
    found, unchecked, checked = [], [], 0
    for dep in report.get("dependencies", []):
        if dep.get("skip_reason"):
            unchecked.append(f"{dep['name']}: {dep['skip_reason']}")
            continue
        checked += 1
        for vuln in dep.get("vulns", []):
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            found.append(f"{vuln['id']} in {dep['name']} {dep.get('version', '')} "
                         f"(fixed in: {fixes})")
    return found, unchecked, checked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-r", "--requirements", type=Path, default=ROOT / "requirements.txt")
    parser.add_argument("--ignore-file", type=Path, default=IGNORE_FILE)
    args = parser.parse_args()
    ignore = ignored_ids(args.ignore_file)
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        proc = run_pip_audit(args.requirements, ignore, report_path)
        report = json.loads(report_path.read_text()) if report_path.exists() else None
    if report is None:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return incomplete([f"pip-audit could not query the service: {last}"], 0)
    found, unchecked, checked = judge(report)
    if found:
        print(f"!! pip-audit: {len(found)} known vulnerabilit{'y' if len(found) == 1 else 'ies'}"
              f" in {args.requirements.name}:")
        for line in found:
            print(f"   {line}")
        print(f"   Upgrade the pin, or record a reviewed exception in {IGNORE_FILE.name}.")
        return VULNERABLE
    if unchecked:
        return incomplete(unchecked, checked)
    note = f" ({len(ignore)} reviewed exception(s) ignored)" if ignore else ""
    print(f"== pip-audit: {checked} packages checked, no known vulnerabilities{note}")
    return OK


def incomplete(reasons: list[str], checked: int) -> int:
    print("!! " + "=" * 72)
    print(f"!! pip-audit: AUDIT INCOMPLETE: {len(reasons)} package(s) NOT checked "
          f"({checked} checked). The vulnerability service was not reachable or could")
    print("!! not look them up, so nothing is known about their vulnerabilities.")
    for reason in reasons[:5]:
        print(f"!!   {reason}")
    if len(reasons) > 5:
        print(f"!!   ... and {len(reasons) - 5} more")
    print("!! " + "=" * 72)
    if truthy("CI") and not truthy("AUDIT_ALLOW_INCOMPLETE"):
        print("!! Under CI=true an incomplete audit fails (AUDIT_ALLOW_INCOMPLETE=1 to accept).")
        return INCOMPLETE
    return OK


if __name__ == "__main__":
    sys.exit(main())
