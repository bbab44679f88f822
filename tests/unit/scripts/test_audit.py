"""scripts/audit.py: the real pip-audit, against an OSV-shaped vulnerability service
served on loopback by the test, so every outcome can be produced on demand."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.servers import ROOT

SCRIPT = ROOT / "scripts" / "audit.py"


class FakeOSV:
    """Answers OSV's /v1/query; ``vulnerable`` maps package name -> advisory id."""

    def __init__(self) -> None:
        self.vulnerable: dict[str, str] = {}
        self.queries: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name = query["package"]["name"]
                owner.queries.append(name)
                answer = {}
                if name in owner.vulnerable:
                    answer = {"vulns": [{
                        "id": owner.vulnerable[name], "summary": "test advisory",
                        "affected": [{"package": {"name": name, "ecosystem": "PyPI"},
                                      "ranges": [{"type": "ECOSYSTEM", "events": [
                                          {"introduced": "0"}, {"fixed": "99.0"}]}]}],
                    }]}
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/query"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def osv():
    server = FakeOSV()
    yield server
    server.close()


@pytest.fixture
def requirements(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("Flask==3.1.3\nPyJWT==2.15.1\n")
    return path


def audit(requirements: Path, url: str, ignore: Path | None = None, ci: bool = False,
          **env: str) -> subprocess.CompletedProcess:
    import os

    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "AUDIT_ALLOW_INCOMPLETE")}
    environ.update({"AUDIT_SERVICE": "osv", "AUDIT_OSV_URL": url, "AUDIT_TIMEOUT": "5", **env})
    if ci:
        environ["CI"] = "true"
    argv = [sys.executable, str(SCRIPT), "-r", str(requirements)]
    if ignore is not None:
        argv += ["--ignore-file", str(ignore)]
    return subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=120)


def test_clean_requirements_pass(osv, requirements):
    result = audit(requirements, osv.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 packages checked, no known vulnerabilities" in result.stdout
    assert sorted(osv.queries) == ["flask", "pyjwt"]


def test_a_known_vulnerability_fails(osv, requirements):
    osv.vulnerable["pyjwt"] = "GHSA-test-0001-aaaa"
    result = audit(requirements, osv.url)
    assert result.returncode == 1
    assert "GHSA-test-0001-aaaa in pyjwt 2.15.1 (fixed in: 99.0)" in result.stdout


def test_a_reviewed_exception_is_ignored(osv, requirements, tmp_path):
    osv.vulnerable["pyjwt"] = "GHSA-test-0001-aaaa"
    ignore = tmp_path / "ignore.txt"
    ignore.write_text("# reviewed exceptions\nGHSA-test-0001-aaaa  # not reachable; ana, 2027\n")
    result = audit(requirements, osv.url, ignore)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 reviewed exception(s) ignored" in result.stdout
    osv.vulnerable["flask"] = "GHSA-test-0002-bbbb"  # a new one still fails
    assert audit(requirements, osv.url, ignore).returncode == 1


def test_an_unreachable_service_is_loud_and_fails_under_ci(requirements):
    nowhere = "http://127.0.0.1:9/v1/query"  # discard port: nothing listens
    local = audit(requirements, nowhere)
    assert local.returncode == 0
    assert "AUDIT INCOMPLETE" in local.stdout
    ci = audit(requirements, nowhere, ci=True)
    assert ci.returncode == 2
    assert "AUDIT INCOMPLETE" in ci.stdout
    accepted = audit(requirements, nowhere, ci=True, AUDIT_ALLOW_INCOMPLETE="1")
    assert accepted.returncode == 0 and "AUDIT INCOMPLETE" in accepted.stdout


def test_the_ignore_file_exists_and_lists_only_reviewed_ids():
    path = ROOT / "pip-audit-ignore.txt"
    assert path.exists()
    for line in path.read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            assert "#" in line, f"{entry} needs a reason, a reviewer and a date"
