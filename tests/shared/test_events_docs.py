"""docs/events/ must match the event models: contract changes are regenerated and committed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from shared.events import KNOWN_TYPES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_event_docs", ROOT / "scripts/gen_event_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_docs_match_the_models(generator: ModuleType) -> None:
    stale = generator.stale(ROOT / "docs" / "events")

    assert stale == [], (
        f"docs/events is out of date for {stale}: run `.venv/bin/python scripts/gen_event_docs.py`"
        " and commit the result (contracts may only gain optional fields)"
    )


def test_generation_is_deterministic(generator: ModuleType) -> None:
    assert generator.render() == generator.render()


def test_asyncapi_has_a_channel_and_message_per_event(generator: ModuleType) -> None:
    document = json.loads(generator.render()["asyncapi.json"])

    channels = set(document["channels"])
    messages = {m["name"] for m in document["components"]["messages"].values()}
    assert document["asyncapi"] == "2.6.0"
    assert messages == KNOWN_TYPES
    assert channels == (KNOWN_TYPES - {"run.requested"}) | {"run.requested.{backend}"}


def test_schemas_require_the_dedupe_fields(generator: ModuleType) -> None:
    for name, text in generator.render().items():
        if name.startswith("schemas/") and name != "schemas/event.json":
            required = json.loads(text)["required"]
            assert {"type", "event_id", "occurred_at"} <= set(required), name


def test_a_stale_file_is_reported(generator: ModuleType, tmp_path: Path) -> None:
    generator.write(tmp_path)
    (tmp_path / "schemas" / "job.failed.json").write_text("{}\n")
    (tmp_path / "leftover.json").write_text("{}\n")

    assert generator.stale(tmp_path) == ["leftover.json", "schemas/job.failed.json"]
