"""Issue 24, finding 10: a license and a release. One version across the server, the
browser client and the Python producer client, named by the CHANGELOG; MIT
everywhere; the client package publishable (not private, its tarball carries the
license); the Python client builds as a wheel that says MIT."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def versions() -> dict[str, str]:
    import utils

    client_py = (ROOT / "clients/python/src/notify_client/client.py").read_text()
    return {
        "utils.__version__": utils.__version__,
        "pyproject.toml": tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        ["version"],
        "client/package.json": json.loads((ROOT / "client/package.json").read_text())
        ["version"],
        "clients/python/pyproject.toml": tomllib.loads(
            (ROOT / "clients/python/pyproject.toml").read_text())["project"]["version"],
        "notify_client.__version__": re.search(r'__version__ = "([^"]+)"', client_py)[1],
        "CHANGELOG.md": re.search(r"(?m)^## (\S+)", (ROOT / "CHANGELOG.md").read_text())[1],
    }


def test_one_version_everywhere_and_the_changelog_names_it():
    found = versions()
    assert len(set(found.values())) == 1, found


def test_the_license_is_mit_in_every_package():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    for copy in ("client/LICENSE", "clients/python/LICENSE"):
        assert (ROOT / copy).read_text() == text, copy
    package = json.loads((ROOT / "client/package.json").read_text())
    assert package["license"] == "MIT" and not package.get("private")
    for pyproject in ("pyproject.toml", "clients/python/pyproject.toml"):
        assert tomllib.loads((ROOT / pyproject).read_text())["project"]["license"] == \
            {"text": "MIT"}


def test_npm_pack_makes_a_publishable_tarball_with_the_license(tmp_path):
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed")
    result = subprocess.run([npm, "pack", "--dry-run", "--json", "--ignore-scripts"],
                            cwd=ROOT / "client", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (packed,) = json.loads(result.stdout)
    files = {f["path"] for f in packed["files"]}
    assert {"LICENSE", "package.json", "dist/index.js", "dist/react.js"} <= files, files
    assert packed["version"] == versions()["client/package.json"]


def test_the_python_client_builds_as_a_wheel_that_says_mit(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "-w", str(tmp_path),
                             str(ROOT / "clients/python")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("notify_client-*.whl")
    assert wheel.name.startswith(f"notify_client-{versions()['pyproject.toml']}-")
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith("/METADATA"))
        text = archive.read(metadata).decode()
        assert "License: MIT" in text
        assert any(n.endswith("/LICENSE") for n in archive.namelist())
        assert "notify_client/py.typed" in archive.namelist()
