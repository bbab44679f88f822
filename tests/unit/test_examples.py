"""Issue 24, finding 8: the examples an adopter copies work as shipped: the manifest's
icons exist at the sizes it states, and every front-end snippet reads the server's
URL from one environment variable."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "examples" / "manifest.webmanifest"
URL_VARIABLE = "VITE_NOTIFY_URL"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_every_manifest_icon_is_a_png_of_its_stated_size():
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["icons"]
    purposes = set()
    for icon in manifest["icons"]:
        path = ROOT / "examples" / icon["src"].lstrip("/")
        assert path.exists(), f"{icon['src']} is missing from examples/"
        width, height = (int(n) for n in icon["sizes"].split("x"))
        assert png_size(path) == (width, height), icon["src"]
        assert icon["type"] == "image/png"
        purposes.add(icon.get("purpose", "any"))
    assert {"any", "maskable"} <= purposes
    sizes = {icon["sizes"] for icon in manifest["icons"]}
    assert {"192x192", "512x512"} <= sizes  # what Chrome and iOS ask for


def test_front_end_snippets_use_one_environment_variable_for_the_server_url():
    texts = {path: path.read_text() for path in [ROOT / "README.md", ROOT / "client/README.md",
                                                 *sorted((ROOT / "docs").glob("*.md"))]}
    found = {}
    for path, text in texts.items():
        for name in re.findall(r"(?:process\.env|import\.meta\.env)\.([A-Z_]+URL)", text):
            found.setdefault(name, set()).add(path.name)
        assert "process.env.NEXT_PUBLIC_" not in text, path
    assert set(found) == {URL_VARIABLE}, found
