"""The OpenAPI document: valid OpenAPI 3.1, served self-contained at /openapi.json,
and in agreement with the app's URL map (every route in it, nothing else)."""

from __future__ import annotations

import json
import re

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule

from routes.openapi import SOURCE, bundle
from utils import __version__
from utils.edge.stack import layer_names

SHARED = {"Notification": "schemas/notification.json", "Error": "schemas/error.json"}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Flask answers these on every rule by itself: HEAD on each GET rule, OPTIONS
# everywhere. The document says so once, in info.description, not per operation.
AUTOMATIC = {"HEAD", "OPTIONS"}
# werkzeug's <converter(args):name> in a rule
VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\((?P<args>.*?)\))?:)?(?P<name>\w+)>")


def source() -> dict:
    return json.loads(SOURCE.read_text(encoding="utf-8"))


def operations(document: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method in METHODS}


def openapi_paths(rule) -> list[str]:
    """A werkzeug rule as OpenAPI paths: ``<name>`` and ``<path:name>`` become
    ``{name}``; an ``any(...)`` converter becomes one literal path per value."""
    paths = [""]
    position = 0
    for match in VARIABLE.finditer(rule.rule):
        literal = rule.rule[position:match.start()]
        if match["converter"] == "any":
            values = sorted(rule._converters[match["name"]].items)
            paths = [p + literal + value for p in paths for value in values]
        else:
            paths = [p + literal + "{" + match["name"] + "}" for p in paths]
        position = match.end()
    return [p + rule.rule[position:] for p in paths]


def url_map_operations(app) -> set[tuple[str, str]]:
    return {(method, path) for rule in app.url_map.iter_rules()
            for path in openapi_paths(rule) for method in rule.methods - AUTOMATIC}


def engineio_path(app) -> str:
    """The path Flask-SocketIO's WSGI middleware hands to Engine.IO, found by walking
    the WSGI stack down to it."""
    wsgi = app.wsgi_app
    while not hasattr(wsgi, "engineio_path"):
        wsgi = wsgi.app
    return wsgi.engineio_path


def test_the_document_in_the_repository_is_valid_openapi_3_1():
    spec, base_uri = read_from_filename(str(SOURCE))
    assert spec["openapi"].startswith("3.1.")
    validate(spec, base_uri=base_uri)  # resolves the relative $refs to docs/schemas/


def test_the_notification_and_the_error_come_from_the_shared_schema_files():
    schemas = source()["components"]["schemas"]
    for name, file in SHARED.items():
        assert schemas[name] == {"$ref": file}
        assert (SOURCE.parent / file).is_file()
    text = SOURCE.read_text(encoding="utf-8")
    assert '"$ref": "#/components/schemas/Notification"' in text
    assert '"$ref": "#/components/schemas/Error"' in text


def test_the_version_is_the_servers():
    assert source()["info"]["version"] == __version__


def test_the_served_document_is_the_bundled_file_self_contained_and_valid(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    served = response.get_json()
    assert served == bundle()
    refs = re.findall(r'"\$ref":\s*"([^"]*)"', response.get_data(as_text=True))
    assert refs and all(ref.startswith("#/") for ref in refs)
    for name, file in SHARED.items():
        shared = json.loads((SOURCE.parent / file).read_text(encoding="utf-8"))
        shared.pop("$id", None)
        assert served["components"]["schemas"][name] == shared
    assert "servers" not in served  # resolves against where it was fetched from
    validate(served)


def test_bundling_replaces_every_reference_to_another_file(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "thing.json").write_text(json.dumps({
        "$id": "thing.json", "title": "Thing", "type": "object",
        "properties": {"part": {"$ref": "part.json"}}}))
    (tmp_path / "schemas" / "part.json").write_text(json.dumps({"title": "Part",
                                                                 "type": "string"}))
    (tmp_path / "api.json").write_text(json.dumps({
        "openapi": "3.1.0", "info": {"title": "t", "version": "1"},
        "paths": {"/a": {"get": {"responses": {"200": {"description": "ok", "content": {
            "application/json": {"schema": {"$ref": "schemas/thing.json#/properties/part"}},
        }}}}}},
        "components": {"schemas": {"Renamed": {"$ref": "schemas/thing.json"},
                                   "Local": {"$ref": "#/components/schemas/Renamed"}}},
    }))
    document = bundle(tmp_path / "api.json")
    schemas = document["components"]["schemas"]
    assert schemas["Renamed"] == {"title": "Thing", "type": "object",
                                  "properties": {"part": {"$ref": "#/components/schemas/Part"}}}
    assert schemas["Part"] == {"title": "Part", "type": "string"}
    assert schemas["Local"] == {"$ref": "#/components/schemas/Renamed"}
    media = document["paths"]["/a"]["get"]["responses"]["200"]["content"]["application/json"]
    assert media["schema"] == {"$ref": "#/components/schemas/Renamed/properties/part"}
    validate(document)


def test_every_route_in_the_url_map_is_in_the_document_and_nothing_else(app):
    documented = operations(source())
    routed = url_map_operations(app)
    # /socket.io/ is no Flask route: Flask-SocketIO's WSGI middleware hands it to
    # Engine.IO before Flask routes anything, so it is documented without a rule.
    middleware = {(method, path) for method, path in documented
                  if path == engineio_path(app)}
    assert middleware == {("GET", "/socket.io/"), ("POST", "/socket.io/")}
    assert not any(path.startswith("/socket.io") for _, path in routed)
    assert sorted(routed - documented) == [], "routes missing from docs/openapi.json"
    assert sorted(documented - middleware - routed) == [], "documented but not routed"


def test_every_get_rule_answers_head_and_every_rule_answers_options(app):
    """What info.description promises instead of listing HEAD and OPTIONS."""
    for rule in app.url_map.iter_rules():
        assert "OPTIONS" in rule.methods, rule.rule
        assert ("HEAD" in rule.methods) == ("GET" in rule.methods), rule.rule
    for item in source()["paths"].values():
        assert not {"head", "options"} & set(item)


def test_the_url_map_conversion_expands_any_and_keeps_path_variables():
    rules = Map([Rule("/static/<path:filename>"), Rule('/debug/<any("b.js","a.js"):name>'),
                 Rule("/users/<int:user>/items/<item>"), Rule("/healthz")])
    assert {rule.rule: openapi_paths(rule) for rule in rules.iter_rules()} == {
        "/static/<path:filename>": ["/static/{filename}"],
        '/debug/<any("b.js","a.js"):name>': ["/debug/a.js", "/debug/b.js"],
        "/users/<int:user>/items/<item>": ["/users/{user}/items/{item}"],
        "/healthz": ["/healthz"],
    }


def test_socket_io_is_answered_by_engineio_not_by_a_flask_route(app):
    assert "EngineIOGuard" in layer_names(app.wsgi_app)
    with pytest.raises(NotFound):
        app.url_map.bind("localhost").match("/socket.io/")
    response = app.test_client().get("/socket.io/")  # no EIO: Engine.IO refuses it
    assert response.status_code == 400
    assert response.mimetype == "text/plain"  # Engine.IO's own answer, not Flask's 404
