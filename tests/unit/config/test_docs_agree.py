"""Issue 24, finding 7: the docs disagreed about a missing NOTIFY_API_KEY (one said the
start stops; the server starts and producers get 503 producer_disabled). This test
holds the behaviour and every doc's statement of it together."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.app import ORIGIN, SECRET

ROOT = Path(__file__).resolve().parents[3]
DOCS = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
STOPS = re.compile(r"refuses? to start|stops?\b|must be set|exit 4", re.I)


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, each cut further at list items and table rows: a
    statement is judged with its own item, not its neighbours'."""
    blocks = []
    for block in re.split(r"\n\s*\n", text):
        blocks.extend(re.split(r"\n(?=\s*(?:\d+\.|-|\*|\|) )", block))
    return blocks


def test_production_without_the_producer_key_starts_and_answers_producer_disabled(tmp_path):
    from app import create_app

    app = create_app({"APP_ENV": "production", "INSTANCE_PATH": str(tmp_path),
                      "ASYNC_MODE": "threading", "REDIS_URL": "", "JWT_SECRET_KEY": SECRET,
                      "FRONTEND_URLS": ORIGIN, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
                      "NOTIFY_API_KEY": ""})
    response = app.test_client().post("/api/notifications", json={},
                                      headers={"Authorization": "Bearer anything"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "producer_disabled"


def test_no_doc_says_a_missing_producer_key_stops_the_start():
    wrong = []
    for path in DOCS:
        for block in paragraphs(path.read_text()):
            if "NOTIFY_API_KEY" in block and STOPS.search(block) \
                    and "producer_disabled" not in block:
                wrong.append(f"{path.relative_to(ROOT)}: {block.strip()[:160]}")
    assert not wrong, "\n".join(wrong)


def test_the_docs_that_describe_a_missing_key_name_producer_disabled():
    described = [path.name for path in DOCS
                 if re.search(r"without `?NOTIFY_API_KEY", path.read_text(), re.I)]
    assert {"API.md", "DEPLOYMENT.md"} <= set(described)
    for path in DOCS:
        for block in paragraphs(path.read_text()):
            if re.search(r"without `?NOTIFY_API_KEY", block, re.I):
                assert "producer_disabled" in block, f"{path.name}: {block.strip()[:160]}"
