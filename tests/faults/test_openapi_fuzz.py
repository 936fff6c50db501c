"""Schemathesis fuzzes the gateway from its own /openapi.json: no 5xx, only documented statuses.

The gateway runs in-process on 127.0.0.1 (its own thread and event loop) in the embedded mode:
the SQLite job store and the in-memory bus, the real parts of that mode, not fakes. Every operation
gets positive (schema-valid) and negative (schema-breaking) cases, each sent with an admin key, a
submitter's key, a wrong key and no key. Bounded: a few hundred requests, well under a minute.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    allow_header_conformance,
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from services.gateway.app import create_app
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from services.scorer.main import create_scorer_service
from services.scorer.registry import ScorerRegistry
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import ApiKey, GatewaySettings, Settings
from shared.store_sqlite import SqliteJobStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ADMIN, ALICE = "fuzz-admin-key", "fuzz-alice-key"
KEYS = [ADMIN, ALICE, "not-a-key", None]
EXAMPLES_PER_OPERATION = int(os.environ.get("AUTOSCORER_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    allow_header_conformance,
]


class Gateway:
    """The gateway app served from a thread of its own, so blocking clients can call it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),))

    async def _serve(self) -> None:
        data = self.root / "data"
        shutil.copytree(EXAMPLES / "classification", data / "alice" / "classification")
        settings = GatewaySettings(
            data_root=data,
            api_keys=[
                ApiKey(key=ADMIN, subject="ops", role="admin"),
                ApiKey(key=ALICE, subject="alice"),
            ],
            max_upload_bytes=200_000,
            max_upload_files=50,
            max_unpacked_bytes=400_000,
        )
        bus, store = MemoryBus(), SqliteJobStore(self.root / "jobs.sqlite3")
        hooks = SqliteWebhookStore(self.root / "hooks.sqlite3")
        # the memory bus refuses unroutable: a sink for what the gateway publishes, and a real
        # scorer service for its requests (test-scoring, installing a scorer file)
        keys = ["job.#", "cancel.#", "rescore.#", "scorers.#"]
        await bus.subscribe(Subscription("fuzz.sink", keys, self._drop))
        scorer = create_scorer_service(
            Settings(scorer={"pool_size": 1, "plugin_dir": self.root / "scorer-plugins"}),
            bus,
            ScorerRegistry.with_builtins(),
            instance="scorer-fuzz",
        )
        await scorer.start()
        await bus.start()
        await store.init()
        await hooks.init()
        app = create_app(settings, store, bus, ScorerRegistry.with_builtins().infos(), hooks)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await scorer.close()
        await bus.close()
        await store.close()

    @staticmethod
    async def _drop(event: object) -> None:
        return None

    def __enter__(self) -> Gateway:
        self._thread.start()
        assert self._ready.wait(30), "the gateway did not start"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with Gateway(tmp_path_factory.mktemp("fuzz")) as served:
        yield served


@pytest.fixture(scope="module")
def schema(gateway: Gateway) -> schemathesis.BaseSchema:
    raw = requests.get(gateway.url + "/openapi.json", timeout=10).json()
    return schemathesis.openapi.from_dict(raw)


def _labels() -> list[str]:
    """Operation labels, known before the app runs (the router is built without serving)."""
    from services.gateway.openapi import OPERATIONS

    return sorted(f"{method} {path}" for method, path in OPERATIONS)


@pytest.mark.slow
@pytest.mark.parametrize("label", _labels())
def test_no_operation_answers_5xx_or_an_undocumented_status(
    gateway: Gateway, schema: schemathesis.BaseSchema, label: str
) -> None:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in /openapi.json"
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    session = requests.Session()

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, key=st.sampled_from(KEYS))
    def fuzz(case: schemathesis.Case, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = case.call(base_url=gateway.url, session=session, headers=headers)
        assert response.status_code < 500, (response.status_code, response.text[:500])
        case.validate_response(response, checks=CHECKS, headers=headers)

    fuzz()
