"""docs/asyncapi.json, the AsyncAPI 3.0 document of the Socket.IO interface: valid for
@asyncapi/parser (tests/support/validate_asyncapi.mjs), built on the payload schemas
shared with the OpenAPI document (docs/schemas/), and in agreement with the code: the
events the server handles and emits, the room, the CONNECT refusals and the error-ack
codes, and the payloads a live socket receives."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import shutil
import subprocess
import time
from functools import cache
from pathlib import Path

import pytest
from jsonschema.validators import Draft202012Validator, validator_for
from referencing import Registry, Resource

import routes.events
from tests.support.servers import ROOT
from tests.support.services import in_ci
from utils import protocol
from utils.auth.tokens import TokenError
from utils.errors import ValidationError
from utils.services import services

DOC = ROOT / "docs" / "asyncapi.json"
SCHEMAS = ROOT / "docs" / "schemas"
VALIDATOR = ROOT / "tests" / "support" / "validate_asyncapi.mjs"
PARSER_PACKAGE = ROOT / "node_modules" / "@asyncapi" / "parser" / "package.json"
CODE_DIRS = ("routes", "utils")
# Socket.IO lifecycle handlers: documented as the CONNECT and DISCONNECT packets.
LIFECYCLE = {"connect", "disconnect"}


# --------------------------------------------------------------------- the document

@cache
def document() -> dict:
    return json.loads(DOC.read_text())


def resolve(ref: str) -> dict:
    """A local reference ("#/channels/namespace/messages/sync"), followed to its end."""
    assert ref.startswith("#/"), ref
    node = document()
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return resolve(node["$ref"]) if "$ref" in node else node


def operations(action: str) -> dict[str, dict]:
    return {key: op for key, op in document()["operations"].items() if op["action"] == action}


def messages(refs: list[dict]) -> list[dict]:
    return [resolve(ref["$ref"]) for ref in refs]


def event_names(action: str) -> set[str]:
    """The names of the Socket.IO EVENT messages of every operation with ``action``."""
    return {message["name"] for op in operations(action).values()
            for message in messages(op["messages"])
            if message["x-socketio-packet"] == "EVENT"}


def operation_for(action: str, name: str) -> dict:
    (found,) = [op for op in operations(action).values()
                if name in {m.get("name") for m in messages(op["messages"])}]
    return found


def payload_validator(message: dict):
    """A JSON Schema validator for a message's payload, with docs/schemas/ as the one
    place relative references are read from."""
    payload = message["payload"]
    if "$ref" in payload:
        assert payload["$ref"].startswith("./schemas/"), payload["$ref"]
        payload = load_schema(payload["$ref"].removeprefix("./schemas/"))
    cls = validator_for(payload, default=Draft202012Validator)
    return cls(payload, registry=Registry(retrieve=retrieve_schema),
               format_checker=cls.FORMAT_CHECKER)


def load_schema(name: str) -> dict:
    path = (SCHEMAS / name).resolve()
    assert path.parent == SCHEMAS.resolve() and path.is_file(), f"no schema {name}"
    return json.loads(path.read_text())


def retrieve_schema(uri: str) -> Resource:
    return Resource.from_contents(load_schema(uri))


def errors(message: dict, payload) -> list[str]:
    return [e.message for e in payload_validator(message).iter_errors(payload)]


# ------------------------------------------------------------ @asyncapi/parser (node)

def node_and_parser() -> str:
    """The node binary; skipped without node or the package, failed under CI=true."""
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed"
    elif not PARSER_PACKAGE.is_file():
        missing = "@asyncapi/parser is not installed (npm ci)"
    if missing:
        if in_ci():
            pytest.fail(f"{missing}; under CI=true the AsyncAPI document must be validated")
        pytest.skip(missing)
    return node


def validate(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([node_and_parser(), str(VALIDATOR), str(path)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_document_is_valid_asyncapi_for_the_parser(tmp_path):
    result = validate(DOC, cwd=tmp_path)  # refs resolve from the file, not the cwd
    print(result.stdout, result.stderr)  # the warnings, in pytest -rP
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("error ")]
    assert lines[-1].startswith(f"VALID {DOC}: 0 error(s)")
    assert "AsyncAPI 3.0.0" in lines[-1]


@pytest.mark.parametrize(("file", "old", "new", "expected"), [
    ("asyncapi.json", "./schemas/notification.json", "./schemas/missing.json", "invalid-ref"),
    ("schemas/auth_success.json", '"type": "integer"', '"type": "count"', "auth_success.json"),
])
def test_the_validator_fails_on_a_broken_reference_or_schema(tmp_path, file, old, new,
                                                               expected):
    """A copy of docs/ elsewhere: valid as it is, invalid (exit 1, listed) once broken."""
    copy = tmp_path / "docs"
    shutil.copytree(DOC.parent, copy, ignore=shutil.ignore_patterns("*.png", "*.md"))
    assert validate(copy / "asyncapi.json", cwd=tmp_path).returncode == 0
    target = copy / file
    assert old in target.read_text()
    target.write_text(target.read_text().replace(old, new))
    result = validate(copy / "asyncapi.json", cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert any(line.startswith("error ") and expected in line
               for line in result.stdout.splitlines()), result.stdout
    assert result.stdout.splitlines()[-1].startswith("INVALID ")


# ------------------------------------------------------------------ shared schemas

def all_refs(node) -> list[str]:
    if isinstance(node, dict):
        return [*([node["$ref"]] if "$ref" in node else []),
                *(ref for value in node.values() for ref in all_refs(value))]
    if isinstance(node, list):
        return [ref for value in node for ref in all_refs(value)]
    return []


def test_the_notification_and_the_error_shape_come_from_the_shared_files():
    notification = resolve("#/components/messages/notification")
    assert notification["payload"] == {"$ref": "./schemas/notification.json"}
    sync_ack = load_schema(resolve("#/components/messages/sync_ack")["payload"]["$ref"][10:])
    assert sync_ack["properties"]["notifications"]["items"] == {"$ref": "notification.json"}
    error_ack = resolve("#/components/messages/error_ack")
    assert error_ack["payload"] == {"$ref": "./schemas/socket_error.json"}
    assert load_schema("socket_error.json")["allOf"] == [{"$ref": "error.json"}]


def test_every_reference_is_local_or_a_file_in_docs_schemas():
    files = {f"./schemas/{path.name}": json.loads(path.read_text())
             for path in SCHEMAS.glob("*.json")}
    for ref in all_refs(document()):
        if ref.startswith("#/"):
            resolve(ref)
        else:
            assert ref in files, ref
    for name, schema in files.items():
        for ref in all_refs(schema):
            assert f"./schemas/{ref}" in files, f"{name}: {ref}"


def test_every_message_with_a_payload_has_examples_that_match_its_schema():
    for key, message in document()["components"]["messages"].items():
        if "payload" not in message:  # DISCONNECT
            assert message["x-socketio-packet"] == "DISCONNECT", key
            continue
        assert message.get("examples"), key
        for example in message["examples"]:
            assert errors(message, example["payload"]) == [], (key, example["name"])


# ------------------------------------------------------- events, rooms: the code's names

def test_every_event_the_server_handles_is_documented_and_no_other(app):
    from utils.extensions import socketio

    handled = set(socketio.server.handlers["/"])  # routes.events.Events, bound by register
    assert "*" in handled  # Events.unknown_event answers any other event
    assert LIFECYCLE | {"*"} <= handled
    received = {m["name"] for op in operations("receive").values()
                for m in messages(op["messages"])}
    assert received == handled
    assert resolve("#/components/messages/connect")["x-socketio-packet"] == "CONNECT"
    assert resolve("#/components/messages/disconnect")["x-socketio-packet"] == "DISCONNECT"
    # "*", Flask-SocketIO's catch-all, is the unknown event: its only answer an error.
    unknown = operation_for("receive", "*")
    assert messages(unknown["reply"]["messages"]) == [resolve("#/components/messages/error_ack")]


def test_every_event_the_server_emits_is_documented_and_no_other():
    constants = {value for name, value in vars(protocol).items()
                 if name.isupper() and isinstance(value, str)}
    assert constants == {protocol.NOTIFICATION, protocol.UNREAD_COUNT, protocol.AUTH_SUCCESS,
                         protocol.SYNC_COMPLETE, protocol.TOKEN_EXPIRED}
    assert event_names("send") == constants
    # The server's emits carry no ack callback; every client event is answered.
    assert not [key for key, op in operations("send").items() if "reply" in op]
    assert not [key for key, op in operations("receive").items()
                if "reply" not in op and messages(op["messages"])[0]["name"] != "disconnect"]


def test_the_room_is_the_one_the_code_joins():
    room = document()["channels"]["userRoom"]
    assert room["address"] == protocol.user_room("{userId}")
    assert set(room["parameters"]) == {"userId"}
    assert {m["name"] for m in messages(list(room["messages"].values()))} == {
        protocol.NOTIFICATION, protocol.UNREAD_COUNT}


# ---------------------------------------- CONNECT refusals and error acks: the code's codes

@cache
def code_trees() -> dict[str, ast.Module]:
    return {str(path.relative_to(ROOT)): ast.parse(path.read_text(), str(path))
            for folder in CODE_DIRS for path in sorted((ROOT / folder).rglob("*.py"))}


def parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name) and node.func.id == name]


def literal(node: ast.AST, path: str) -> str:
    """A string literal, or the value of a module-level constant of ``path``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        value = getattr(importlib.import_module(module_name(path)), node.id, None)
        if isinstance(value, str):
            return value
    raise AssertionError(f"{path}:{node.lineno}: a code that is not a constant; "
                         "extend this test to follow it")


def module_name(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def module_path(name: str) -> str | None:
    """The file of one of this project's modules, relative to ROOT."""
    base = name.replace(".", "/")
    return next((p for p in (f"{base}.py", f"{base}/__init__.py") if p in code_trees()), None)


def with_imports(path: str) -> list[str]:
    """``path`` and the project modules it imports from (``from a.b import c`` is a/b/c.py
    when that is a module, else a/b)."""
    found = [path]
    for node in ast.walk(code_trees()[path]):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                module = module_path(f"{node.module}.{alias.name}") or module_path(node.module)
                if module and module not in found:
                    found.append(module)
    return found


def token_error_codes() -> set[str]:
    """The first argument of every TokenError the code raises."""
    codes = {literal(call.args[0], path) for path, tree in code_trees().items()
             for call in calls(tree, TokenError.__name__)}
    assert codes
    return codes


def validation_error_codes(paths: list[str]) -> set[str]:
    """ValidationError's default code, and every code= that its raises and subclasses
    in ``paths`` give."""
    codes = {inspect.signature(ValidationError).parameters["code"].default}
    for path in paths:
        tree = code_trees()[path]
        subclasses = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                      and any(isinstance(b, ast.Name) and b.id == ValidationError.__name__
                              for b in node.bases)]
        found = calls(tree, ValidationError.__name__) + [
            node for cls in subclasses for node in ast.walk(cls) if isinstance(node, ast.Call)]
        for call in found:
            codes |= {literal(k.value, path) for k in call.keywords if k.arg == "code"}
            if len(call.args) > 1:
                codes.add(literal(call.args[1], path))
    return codes


def guarding_exception(node: ast.AST, up: dict, name: str) -> str | None:
    """The exception class ``name`` is bound to around ``node``: `except X as name`, or
    `if isinstance(name, X)`."""
    while node in up:
        node = up[node]
        if isinstance(node, ast.ExceptHandler) and node.name == name:
            return node.type.id if isinstance(node.type, ast.Name) else None
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Call)
                and getattr(node.test.func, "id", None) == "isinstance"
                and getattr(node.test.args[0], "id", None) == name
                and isinstance(node.test.args[1], ast.Name)):
            return node.test.args[1].id
    return None


def code_of(node: ast.AST, up: dict, path: str) -> set[str]:
    """The codes an expression of ``path`` can be: a constant, or ``exc.code`` of a known
    error (a ValidationError raised in ``path`` or in a module it imports from)."""
    if (isinstance(node, ast.Attribute) and node.attr == "code"
            and isinstance(node.value, ast.Name)):
        error = guarding_exception(node, up, node.value.id)
        if error == TokenError.__name__:
            return token_error_codes()
        if error == ValidationError.__name__:
            return validation_error_codes(with_imports(path))
        raise AssertionError(f"{path}:{node.lineno}: the code of an unknown error {error}")
    return {literal(node, path)}


def refusals_in_code() -> set[tuple[str, str]]:
    """(message, data.code) of every ConnectionRefusedError the code builds."""
    pairs = set()
    for path, tree in code_trees().items():
        found = calls(tree, "ConnectionRefusedError")
        if not found:
            continue
        up = parents(tree)
        for call in found:
            message, data = call.args
            assert isinstance(data, ast.Dict), f"{path}:{call.lineno}"
            (code,) = [v for k, v in zip(data.keys, data.values, strict=True)
                       if isinstance(k, ast.Constant) and k.value == "code"]
            pairs |= {(literal(message, path), c) for c in code_of(code, up, path)}
    return pairs


def error_ack_codes_in_code() -> set[str]:
    """The codes of every error_body() the socket event handlers return."""
    path = str(Path(inspect.getsourcefile(routes.events)).relative_to(ROOT))
    tree = code_trees()[path]
    up = parents(tree)
    return {c for call in calls(tree, "error_body") for c in code_of(call.args[0], up, path)}


def documented_refusals() -> set[tuple[str, str]]:
    schema = load_schema("connect_error.json")
    pairs = set()
    for branch in schema["oneOf"]:
        message = branch["properties"]["message"]["const"]
        code = branch["properties"]["data"]["properties"]["code"]
        pairs |= {(message, c) for c in code.get("enum", [code.get("const")])}
    assert {m for m, _ in pairs} == set(schema["properties"]["message"]["enum"])
    assert {c for _, c in pairs} == set(
        schema["properties"]["data"]["properties"]["code"]["enum"])
    return pairs


def table_codes(description: str) -> list[str]:
    """The code column of a message description's table (the column named *code)."""
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in description.splitlines() if line.startswith("|")]
    column = next(i for i, name in enumerate(rows[0]) if name.endswith("code"))
    return [row[column] for row in rows[2:]]


def test_the_connect_refusals_are_the_ones_the_code_raises():
    in_code = refusals_in_code()
    assert ("unauthorized", "token_expired") in in_code  # the derivation found the tokens'
    assert documented_refusals() == in_code
    described = resolve("#/components/messages/connect_error")["description"]
    assert sorted(table_codes(described)) == sorted(c for _, c in in_code)
    message = resolve("#/components/messages/connect_error")
    for refused, code in in_code:
        assert errors(message, {"message": refused, "data": {"code": code}}) == []
    assert errors(message, {"message": "rate_limited", "data": {"code": "token_expired"}})


def test_a_refusal_carries_the_documented_connect_error_data(app):
    from flask_socketio import ConnectionRefusedError

    from utils.auth.access import authenticate_socket

    with app.app_context(), pytest.raises(ConnectionRefusedError) as excinfo:
        authenticate_socket({"last_id": 3}, {})
    message = resolve("#/components/messages/connect_error")
    assert excinfo.value.error_args == {"message": "unauthorized",
                                        "data": {"code": "token_missing"}}
    assert errors(message, excinfo.value.error_args) == []


def test_the_error_ack_codes_are_the_ones_the_event_handlers_return():
    in_code = error_ack_codes_in_code()
    assert {"unknown_event", "rate_limited", "not_connected"} <= in_code
    schema = load_schema("socket_error.json")
    assert set(schema["properties"]["error"]["properties"]["code"]["enum"]) == in_code
    described = resolve("#/components/messages/error_ack")["description"]
    assert sorted(table_codes(described)) == sorted(in_code)


# ------------------------------------------------ payloads a live socket really gets

def drain(test_client) -> list[tuple[str, object]]:
    try:
        received = test_client.get_received()
    except RuntimeError:  # disconnected by the server: read what it had queued
        received, test_client.queue[:] = list(test_client.queue), []
    return [(m["name"], m["args"][0] if m["args"] else None) for m in received]


def test_what_a_socket_receives_matches_the_documented_schemas(app, sio_client, make_token,
                                                               notify):
    from utils.realtime.registry import ExpirySweeper

    missed = notify("alice", title="missed", data={"order": 7})[0]
    alice = sio_client(auth={"token": make_token("alice"), "last_id": 0})
    other = sio_client(auth={"token": make_token("alice")})
    short = sio_client(auth={"token": make_token("alice", ttl=30)})
    live = notify("alice", title="live", body="text")[0]

    acks = {
        "mark_read": alice.emit("mark_read", {"ids": [missed]}, callback=True),
        "delivered": alice.emit("delivered", {"ids": [live]}, callback=True),
        "sync": alice.emit("sync", {"after_id": 0, "limit": 10}, callback=True),
        "*": alice.emit("no_such_event", {"x": 1}, callback=True),
    }
    refused = alice.emit("delivered", {"ids": []}, callback=True)

    rt = services(app).realtime
    later = time.time() + 31
    sweeper = ExpirySweeper(rt.registry, 1.0, rt.sweeper.on_expired, lambda f: None,
                            lambda s: None, clock=lambda: later)
    assert sweeper.sweep_once() == 1

    seen = drain(alice) + drain(other) + drain(short)
    assert {name for name, _ in seen} == event_names("send")
    for name, payload in seen:
        (message,) = [m for m in messages(operation_for("send", name)["messages"])
                      if m["name"] == name]
        assert errors(message, payload) == [], (name, payload)

    error_ack = resolve("#/components/messages/error_ack")
    for name, ack in acks.items():
        replies = messages(operation_for("receive", name)["reply"]["messages"])
        matching = [m for m in replies if not errors(m, ack)]
        assert len(matching) == 1, (name, ack)  # one, and only one, of the replies
        assert (matching[0] is error_ack) == (name == "*"), (name, ack)
    assert acks["sync"]["notifications"][0]["id"] == missed
    assert refused["error"]["code"] == "validation_error"
    assert errors(error_ack, refused) == []
