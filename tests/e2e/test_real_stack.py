"""End to end on the real components: RabbitMQ, the MongoDB-wire server (FerretDB here) and the
Docker engine, with the four services composed as ``autoscorer serve`` does.

(a) HTTP submission of each example -> the webhook receiver gets ScoreCompleted, signed, right.
(b) A plain aio-pika publisher written from docs/EVENTS.md -> ScoreCompleted on the bus, the
    history in MongoDB.
(d) The same JobSubmitted delivered twice -> one run, one score.
"""

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest
from pymongo import AsyncMongoClient

from services.scorer.engine import score_workspace
from services.scorer.registry import ScorerRegistry
from shared.workspace import Workspace
from tests.e2e.harness import EXAMPLE_METRICS, make_settings, running_platform

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongo, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def settings(tmp_path, rabbit_url, mongo_url, example_images):
    return make_settings(
        tmp_path,
        bus="rabbitmq",
        store="mongo",
        backend="docker",
        rabbit_url=rabbit_url,
        mongo_url=mongo_url,
    )


async def test_a_http_submissions_run_in_docker_and_reach_the_webhook(settings):
    async with running_platform(settings) as platform:
        jobs = {}
        for example in EXAMPLE_METRICS:
            jobs[await platform.submit(platform.add_workspace(example))] = example
        finished = await asyncio.gather(*(platform.wait(j, timeout=240) for j in jobs))
        assert [j["status"] for j in finished] == ["succeeded"] * len(jobs), finished
        await platform.wait_for_webhooks(len(jobs))
        scores = platform.receiver.verified_scores()
        registry = ScorerRegistry.with_builtins()
        for job_id, example in jobs.items():
            ws = Workspace.at(Path(settings.gateway.data_root) / example)
            metric = EXAMPLE_METRICS[example]
            assert (
                scores[job_id].result.summary[metric]
                == score_workspace(registry, ws, write=False).summary[metric]
            )
            info = json.loads((ws.logs_dir / "run_info.json").read_text())
            assert info["backend"] == "docker" and info["image_id"].startswith("sha256:")


def _job_submitted(job_id: str, workspace: str) -> tuple[str, bytes]:
    """Built by hand from docs/EVENTS.md, not from AutoScorer's own models."""
    event_id = str(uuid.uuid4())
    event = {
        "type": "job.submitted",
        "event_id": event_id,
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "job_id": job_id,
        "spec": {
            "job_id": job_id,
            "scorer": "classification_f1",
            "params": {},
            "time_limit": 120,
            "container": {
                "image": "autoscorer-examples/classification:1",
                "cmd": ["python3", "submission/predict.py"],
            },
        },
        "workspace": workspace,
        "submitter": "my-platform",
        "priority": 5,
        "idempotency_key": f"my-platform:{job_id}",
    }
    return event_id, json.dumps(event).encode()


async def _tap(channel, exchange_name, keys):
    queue = await channel.declare_queue(exclusive=True)  # gone with the connection
    for key in keys:
        await queue.bind(exchange_name, routing_key=key)
    return queue


async def test_b_d_plain_aio_pika_publisher_duplicate_delivery_and_history(
    settings, rabbit_url, mongo_url
):
    exchange_name = settings.bus.exchange
    async with running_platform(settings) as platform:
        workspace = str(settings.gateway.data_root / platform.add_workspace("classification"))
        job_id = f"plat-{uuid.uuid4().hex[:10]}"
        event_id, body = _job_submitted(job_id, workspace)
        connection = await aio_pika.connect_robust(rabbit_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.declare_exchange(exchange_name, "topic", durable=True)
            tap = await _tap(channel, exchange_name, ["run.completed", "score.completed"])
            message = aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=event_id,
                correlation_id=job_id,
                type="job.submitted",
            )
            for _ in range(2):  # (d) the same event, delivered twice
                await exchange.publish(message, routing_key="job.submitted", mandatory=True)
            seen: list[tuple[str, dict]] = []
            async with tap.iterator() as messages:
                async for incoming in messages:
                    async with incoming.process():
                        payload = json.loads(incoming.body)
                        if payload["job_id"] == job_id:
                            seen.append((incoming.routing_key, payload))
                    if any(key == "score.completed" for key, _ in seen):
                        break
            await asyncio.sleep(3)  # room for a duplicate run or score to show up
            while (extra := await tap.get(fail=False)) is not None:
                await extra.ack()
                payload = json.loads(extra.body)
                if payload["job_id"] == job_id:
                    seen.append((extra.routing_key, payload))
        keys = sorted(key for key, _ in seen)
        assert keys == ["run.completed", "score.completed"], keys
        score = dict(seen)["score.completed"]
        assert 0.5 < score["result"]["summary"]["f1_macro"] < 1.0
        job = await platform.wait(job_id)
        assert job["status"] == "succeeded" and job["attempts"]["count"] == 1
    client = AsyncMongoClient(mongo_url)
    try:
        doc = await client[settings.store.database]["jobs"].find_one({"_id": job_id})
        assert doc is not None and doc["status"] == "succeeded"
        assert [h["status"] for h in doc["history"]] == [
            "submitted",
            "queued",
            "running",
            "scoring",
            "succeeded",
        ]
        assert doc["result"]["summary"]["f1_macro"] == score["result"]["summary"]["f1_macro"]
    finally:
        await client.drop_database(settings.store.database)
        await client.close()
