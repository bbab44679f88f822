"""GET /openapi.json: the OpenAPI document of the HTTP API, self-contained.

docs/openapi.json is the source. It refers to the JSON Schemas it shares with the
AsyncAPI document (docs/schemas/*.json) by relative ``$ref``; those are bundled into
``components/schemas`` once, when the app loads, so a client needs no other file. The
served document has no ``servers``: it resolves against the URL it was fetched from,
which stays right behind a proxy that terminates TLS (where the request's own scheme
is http).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Response

from utils.services import services

SOURCE = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
COMPONENTS = "#/components/schemas/"
KEY = "notifier.openapi"

bp = Blueprint("openapi", __name__)


def bundle(path: Path = SOURCE) -> dict[str, Any]:
    """The document at ``path``, with each ``$ref`` to another file pointing into
    ``components/schemas`` instead, where that file's schema is added. Its name there is
    the component's that was nothing but a reference to the file
    (``"Notification": {"$ref": "schemas/notification.json"}``), else the file's
    ``title``."""
    document = json.loads(path.read_text(encoding="utf-8"))
    components = document.get("components", {}).get("schemas", {})
    names = {(path.parent / schema["$ref"]).resolve(): name
             for name, schema in components.items()
             if isinstance(schema, dict) and list(schema) == ["$ref"]
             and not schema["$ref"].startswith("#")}
    loaded: dict[str, Any] = {}
    done: dict[Path, str] = {}

    def component(file: Path) -> str:
        """The name in components/schemas of the schema in ``file``, added once."""
        if file not in done:
            schema = json.loads(file.read_text(encoding="utf-8"))
            name = done[file] = names.get(file) or schema["title"]
            # Its $id would make it a resource of its own inside the document.
            schema.pop("$id", None)
            loaded[name] = rewrite(schema, file.parent)
        return done[file]

    def rewrite(node: Any, base: Path) -> Any:
        if isinstance(node, list):
            return [rewrite(item, base) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: rewrite(value, base) for key, value in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            file, _, pointer = ref.partition("#")
            out["$ref"] = COMPONENTS + component((base / file).resolve()) + pointer
        return out

    bundled = rewrite(document, path.parent)
    schemas = bundled.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in loaded.items():
        if name in schemas and schemas[name] != {"$ref": COMPONENTS + name}:
            raise ValueError(f"{path.name}: components/schemas/{name} is taken")
        schemas[name] = schema
    return bundled


def document() -> bytes:
    """The bundled document, as served. ``create_app`` builds it once: a broken
    document or schema file stops the start instead of failing requests."""
    return json.dumps(bundle(), ensure_ascii=False, separators=(",", ":")).encode()


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """Anyone: the OpenAPI document."""
    return Response(services().openapi, mimetype="application/json")
