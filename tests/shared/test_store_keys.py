"""Dicts keyed by user text (params, per-class metrics, error details, event payloads, webhook
bodies) are stored and read back identical on every store, whatever their keys: ``.``, a leading
``$``, ``%``, NUL, the empty string, any Unicode; and arrays nested in arrays. FerretDB refuses
``.`` and ``$`` in field names and arrays in arrays, and BSON cannot hold NUL in a name, so the
Mongo store encodes them (``shared.store_mongo_keys``). The values where the models allow them
(error details, run extras, payloads, result tables, not params) also hold NaN, infinities,
integers beyond int64 and text or keys with a lone surrogate: FerretDB closes the connection on
a NaN, refuses an infinity, PyMongo raises ``OverflowError`` on a big int and
``UnicodeEncodeError`` on a surrogate, and pydantic's JSON form (SQLite) turns NaN into null;
both stores keep them exactly. A NaN compares by identity (``NAN``), as ``nan != nan``.

The Mongo-wire server is the one ``scripts/provision/ferretdb.sh`` starts (or
``AUTOSCORER_TEST_MONGO_URL``); each test uses its own database, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pymongo import AsyncMongoClient

from services.gateway.webhooks.models import Delivery
from services.gateway.webhooks.store_mongo import MongoWebhookStore
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.jobs import Job, JobStatus, OutboxEntry, new_job
from shared.models import STORED, Artifact, ContainerSpec, JobSpec, Result, RunOutcome
from shared.store import JobStore, JobUpdate
from shared.store_mongo import MongoJobStore, driver_errors, to_document
from shared.store_mongo_keys import escape_key, restored, storable, unescape_key
from shared.store_sqlite import SqliteJobStore
from tests.shared.test_store_contract import drop_database, mongo_url

S = JobStatus
SPECIAL = ["", ".", "..", "a.b", "1.5", "cat.v2", "$", "$x", "$set", "a$b", "%", "%2E", "%25"]
SPECIAL += ["%%", "\x00", "a\x00b", "é.☃", "𝔘.𝔫", " ", ". $"]
KEYS = st.one_of(st.sampled_from(SPECIAL), st.text(max_size=10))
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
JSON = st.recursive(
    st.none() | st.booleans() | INT64 | FLOATS | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
LONE = ["\ud800", "a\udcff.b", "\udfff$", "%uD800", "\udc80\x00"]  # os.listdir's surrogates
ANY_KEYS = KEYS | st.sampled_from(LONE)
ANY_FLOATS = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf])
BIG_INTS = st.integers(min_value=2**63, max_value=2**200) | st.integers(-(2**200), -(2**63) - 1)
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | INT64
    | BIG_INTS
    | ANY_FLOATS
    | st.text(max_size=10)
    | st.sampled_from(LONE),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_KEYS, inner, max_size=3),
    max_leaves=12,
)
"""Free-form values where the models allow anything: not params (plain JSON, see JobSpec)."""
JSON_DICT = st.dictionaries(ANY_KEYS, ANY_JSON, max_size=4)
TABLES = st.dictionaries(
    ANY_KEYS, ANY_FLOATS | st.dictionaries(ANY_KEYS, ANY_FLOATS, max_size=4), max_size=4
)
NAN = object()
"""What a NaN is compared as: ``nan != nan``, so a model holding one never equals itself."""


def same(value: Any) -> Any:
    """``value`` (a model, or its dump) comparable with ``==`` when it holds NaNs."""
    if isinstance(value, BaseModel):
        return same(value.model_dump())
    if isinstance(value, dict):
        return {key: same(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [same(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return NAN
    return value


ENV_NAMES = st.text(min_size=1, max_size=8).filter(lambda k: "=" not in k and "\x00" not in k)
ENV_VALUES = st.text(max_size=8).filter(lambda v: "\x00" not in v)


@st.composite
def results(draw: st.DrawFn) -> Result:
    details = draw(st.dictionaries(ANY_KEYS, ANY_JSON, max_size=3))
    error = AutoscorerError(ErrorCode.SCORE_ERROR, "x", stage=Stage.SCORING, details=details)
    artifact = Artifact(path="output/a.json", size=1, sha256="0" * 64)
    return Result(
        summary=draw(st.dictionaries(ANY_KEYS, ANY_FLOATS | st.booleans() | st.text(max_size=5))),
        metrics=draw(TABLES),
        artifacts=dict.fromkeys(draw(st.lists(ANY_KEYS, max_size=2)), artifact),
        versioning=draw(st.dictionaries(ANY_KEYS, st.text(max_size=5) | st.sampled_from(LONE))),
        error=error.to_info() if draw(st.booleans()) else None,
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[Job, Result, RunOutcome, OutboxEntry]:
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    env = draw(st.dictionaries(ENV_NAMES, ENV_VALUES, max_size=3))
    spec = JobSpec(
        job_id=job_id,
        scorer="classification",
        params=draw(st.dictionaries(KEYS, JSON, max_size=4)),  # plain JSON: JobSpec refuses more
        container=ContainerSpec(image="participant:latest", env=env),
    )
    submitted = OutboxEntry(event_id=f"{job_id}-a", type="job.submitted", payload=draw(JSON_DICT))
    job = new_job(spec, workspace=f"/ws/{job_id}", outbox=[submitted])
    extra = draw(st.dictionaries(ANY_KEYS, ANY_JSON, max_size=3))
    outcome = RunOutcome(job_id=job_id, backend="local", status="succeeded", extra=extra)
    done = OutboxEntry(event_id=f"{job_id}-b", type="score.completed", payload=draw(JSON_DICT))
    return job, draw(results()), outcome, done


async def round_trip(store: JobStore, case: tuple[Job, Result, RunOutcome, OutboxEntry]) -> None:
    """Create, move to succeeded writing each user-keyed part, pop the outbox: every read of the
    job gives back what was written."""
    job, result, outcome, done = case
    assert (await store.create(job)).created
    assert same(await store.get(job.job_id)) == same(job)
    moves = [
        (S.SUBMITTED, S.QUEUED, JobUpdate(trace_context={"trace.parent": "00-x", "$t": "y"})),
        (S.QUEUED, S.RUNNING, JobUpdate(run_outcome=outcome)),
        (S.RUNNING, S.SCORING, None),
    ]
    for before, after, update in moves:
        assert (await store.transition(job.job_id, before, after, update)).applied
    final = await store.transition(
        job.job_id, S.SCORING, S.SUCCEEDED, JobUpdate(result=result), outbox=[done]
    )
    assert final.applied
    read = await store.get(job.job_id)
    assert read is not None
    assert same(read) == same(final.job)
    assert read.spec == job.spec
    assert same(read.run_outcome) == same(outcome)
    assert same(read.result) == same(result)
    assert same(read.result_versions) == same([result])
    assert read.trace_context == {"trace.parent": "00-x", "$t": "y"}
    assert same(read.outbox) == same([*job.outbox, done])
    popped = await store.pop_outbox(job.job_id, read.outbox)
    assert popped.outbox == []


@pytest.fixture(scope="module")
def mongo_database() -> Iterator[str]:
    database = f"autoscorer_test_keys_{uuid.uuid4().hex[:12]}"
    yield database
    asyncio.run(drop_database(mongo_url(), database))


def run_on(
    opener: Callable[[], JobStore], case: tuple[Job, Result, RunOutcome, OutboxEntry]
) -> None:
    async def check() -> None:
        store = opener()
        await store.init()
        try:
            await round_trip(store, case)
        finally:
            await store.close()

    asyncio.run(check())


@pytest.mark.mongo
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_user_keys_round_trip_through_the_mongo_store(
    mongo_database: str, case: tuple[Job, Result, RunOutcome, OutboxEntry]
) -> None:
    run_on(lambda: MongoJobStore.from_url(mongo_url(), mongo_database, timeoutMS=10_000), case)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_user_keys_round_trip_through_the_sqlite_store(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[Job, Result, RunOutcome, OutboxEntry]
) -> None:
    path = tmp_path_factory.mktemp("keys") / "jobs.sqlite3"
    run_on(lambda: SqliteJobStore(path), case)


@given(st.text())
def test_escaping_a_key_is_reversible_and_leaves_nothing_a_server_refuses(key: str) -> None:
    stored = escape_key(key)
    assert unescape_key(stored) == key
    assert not {".", "$", "\x00"} & set(stored)
    assert escape_key(key) == key or any(c in key for c in "%.$\x00")


@given(ANY_JSON)
def test_a_stored_value_is_restored_identical(value: Any) -> None:
    assert same(restored(storable(value))) == same(value)


@given(ANY_JSON)
def test_a_stored_value_is_plain_bson(value: Any) -> None:
    """No NaN, infinity, int beyond int64 or lone surrogate is left for the encoder or server."""
    stored = storable({"v": value})
    bson.encode(stored)  # raises on a big int or a surrogate
    stack = [stored]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            assert all(isinstance(key, str) and key.encode() is not None for key in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            assert not isinstance(item, float) or math.isfinite(item)


@pytest.mark.parametrize(
    "error",
    [
        OverflowError("MongoDB can only handle up to 8-byte ints"),
        bson.errors.InvalidDocument("cannot encode object"),
        bson.errors.InvalidStringData("strings in documents must be valid UTF-8"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ],
)
async def test_an_encoding_failure_is_a_store_error_not_a_raw_exception(
    error: Exception,
) -> None:
    with pytest.raises(AutoscorerError) as caught:
        async with driver_errors("create"):
            raise error
    assert caught.value.code is ErrorCode.STORE_ERROR and caught.value.__cause__ is error


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"lr": math.nan}, 'params["lr"] is nan'),
        ({"w": {"a.b": [1, -math.inf]}}, 'params["w"]["a.b"][1] is -inf'),
        ({"seed": 2**64}, 'params["seed"] is an integer beyond 64 bits'),
        ({"seed": -(2**63) - 1}, 'params["seed"] is an integer beyond 64 bits'),
        ({"s": "x\udcff"}, 'params["s"] holds a lone UTF-16 surrogate'),
        ({"\ud800": 1}, 'params has a key "\\ud800" with a lone surrogate'),
    ],
)
def test_params_must_be_plain_json_but_a_stored_job_still_reads(
    params: dict[str, Any], where: str
) -> None:
    """A job's params travel as JSON (events, the API): NaN would arrive as null and a lone
    surrogate not at all, so a spec holding one is refused; a job stored before reads."""
    with pytest.raises(ValidationError) as caught:
        JobSpec(scorer="classification", params=params)
    [error] = caught.value.errors()
    assert error["loc"] == ("params",) and where in error["msg"]
    spec = {"scorer": "classification", "params": params}
    assert same(JobSpec.model_validate(spec, context=STORED).params) == same(params)


def test_params_at_the_int64_bounds_are_kept() -> None:
    params = {"a": 2**63 - 1, "b": -(2**63), "c": True, "d": 1e308, "e": "é.☃"}
    assert JobSpec(scorer="classification", params=params).params == params


def test_model_field_names_are_stored_as_they_are() -> None:
    """The fields the store queries keep their names: only user keys and nested arrays change."""
    params = {"a.b": 1, "ranges": [[0, 32], [32, 96]]}
    job = new_job(JobSpec(scorer="classification", params=params), workspace="/ws/x")
    doc = to_document(job)
    assert {key for key in doc if escape_key(key) != key} == set()
    assert doc["spec"]["params"] == {"a%2Eb": 1, "ranges": [{"%A": [0, 32]}, {"%A": [32, 96]}]}


@pytest.mark.mongo
async def test_a_document_written_before_keys_were_escaped_still_reads() -> None:
    """The old layout: user keys stored as given (FerretDB took any key without '.', '$' or
    NUL, so a '%' in one is possible); the store reads them back unchanged."""
    database = f"autoscorer_test_keys_{uuid.uuid4().hex[:12]}"
    metrics: dict[str, Any] = {"top-5%": 0.9, "%zz": 1.0, "100%": {"50%": 0.5, "a%b": 0.1}}
    job = new_job(
        JobSpec(scorer="classification", params={"w%": {"x": 1}}),
        workspace="/ws/old",
    ).model_copy(update={"result": Result(metrics=metrics)})
    old = {"_id": job.job_id, **job.model_dump(mode="json", exclude={"job_id"})}
    for name in ("created_at", "updated_at", "deadline_at"):
        old[name] = getattr(job, name)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url(), timeoutMS=10_000)
    store = MongoJobStore(client, database)
    try:
        await store.init()
        await client[database]["jobs"].insert_one(old)
        read = await store.get(job.job_id)
        assert read is not None and read.result == job.result and read.spec == job.spec
        moved = await store.transition(job.job_id, S.SUBMITTED, S.FAILED)
        assert moved.applied and moved.job.result == job.result
    finally:
        await client.drop_database(database)
        await client.close()


@pytest.mark.mongo
async def test_a_webhook_body_keyed_by_labels_is_stored_and_claimed_identical() -> None:
    store = MongoWebhookStore.from_url(mongo_url(), f"test_hooks_{uuid.uuid4().hex[:12]}")
    body = {"data": {"result": {"metrics": {"f1_per_class": {"1.5": 0.5, "$x": 0.0, "": 1.0}}}}}
    now = datetime.now(UTC)
    delivery = Delivery(
        id="msg_keys",
        subscription_id="wh_1",
        url="http://127.0.0.1:9/hook",
        event_id="e1",
        event_type="score.completed",
        job_id="job-1",
        body=body,
        next_attempt_at=now - timedelta(seconds=1),
    )
    await store.init()
    try:
        assert await store.add_delivery(delivery)
        [listed] = await store.list_deliveries("wh_1")
        [claimed] = await store.claim_due(now, timedelta(seconds=30), 10)
        assert listed.body == claimed.body == body
    finally:
        await store._client.drop_database(store._subs.database.name)
        await store.close()
