"""docs/events/ must match the event models: contract changes are regenerated and committed."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from shared.bus import RetryPolicy
from shared.errors import AutoscorerError
from shared.events import KNOWN_TYPES, Event, JobSubmitted, ScoreCompleted
from shared.models import Result

if TYPE_CHECKING:  # fixture types, for readers; conftest is not importable at run time
    from conftest import BusHarness, RabbitTools

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
    parameterised = {
        "run.requested.{backend}",
        "scorer.test.completed.{reply_to}",
        "scorer.load.completed.{reply_to}",
    }
    with_word = {"run.requested", "scorer.test.completed", "scorer.load.completed"}
    assert channels == KNOWN_TYPES - with_word | parameterised


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


def example(name: str) -> str:
    """The python block after ``<!-- example: NAME -->`` in docs/EVENTS.md."""
    text = (ROOT / "docs" / "EVENTS.md").read_text(encoding="utf-8")
    start = text.index(f"<!-- example: {name} -->\n```python\n")
    body = text[start:].split("```python\n", 1)[1]
    return body.split("\n```", 1)[0]


def load_example(name: str, prefix: str) -> dict[str, Any]:
    """Run an example's definitions with the exchange names of this test."""
    code = example(name).replace('"autoscorer.events"', f'"{prefix}.events"')
    code = code.replace('"autoscorer.dlx"', f'"{prefix}.dlx"')
    namespace: dict[str, Any] = {"__name__": f"events_md_{name}"}
    exec(compile(code, f"docs/EVENTS.md:{name}", "exec"), namespace)
    return namespace


@pytest.mark.rabbitmq
@pytest.mark.parametrize("bus_kind", ["rabbitmq"])
async def test_publisher_example_reaches_autoscorer(
    harness: BusHarness, rabbit_tools: RabbitTools
) -> None:
    seen: asyncio.Queue[Event] = asyncio.Queue()
    await harness.subscribe("scheduler", ["job.submitted"], seen.put)
    publish = load_example("publish", harness.prefix)["publish_job_submitted"]

    event_id = await publish(rabbit_tools.url, "job-123", "/data/ws/job-123")

    event = await asyncio.wait_for(seen.get(), 10)
    assert isinstance(event, JobSubmitted)
    assert str(event.event_id) == event_id
    assert event.spec.job_id == event.job_id == "job-123"


@pytest.mark.rabbitmq
@pytest.mark.parametrize("bus_kind", ["rabbitmq"])
async def test_consumer_example_gets_each_score_once(
    harness: BusHarness, rabbit_tools: RabbitTools
) -> None:
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    consume = load_example("consume", harness.prefix)["consume_scores"]
    queue = f"{harness.prefix}.myplatform"
    consumer = asyncio.create_task(consume(rabbit_tools.url, got.put, queue))
    first, second = score_completed("job-1"), score_completed("job-2")
    try:
        await publish_when_bound(harness, first)
        await harness.bus.publish(first)  # a duplicate
        await harness.bus.publish(second)

        received = [await asyncio.wait_for(got.get(), 10) for _ in range(2)]
        await asyncio.sleep(0.2)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await rabbit_tools.delete_topology(harness.prefix, [(queue, RetryPolicy(delays=(1.0,)))])
    assert [e["event_id"] for e in received] == [str(first.event_id), str(second.event_id)]
    assert received[0]["result"]["summary"] == {"accuracy": 0.75}
    assert got.empty()


def score_completed(job_id: str) -> ScoreCompleted:
    result = Result(summary={"accuracy": 0.75})
    return ScoreCompleted(job_id=job_id, result=result, scorer="classification", scorer_version="1")


async def publish_when_bound(harness: BusHarness, event: ScoreCompleted) -> None:
    """Publish once the example has declared and bound its queue."""
    async with asyncio.timeout(10):
        while True:
            try:
                await harness.bus.publish(event)
            except AutoscorerError as exc:
                if exc.details.get("reason") != "unroutable":
                    raise
                await asyncio.sleep(0.05)
            else:
                return
