"""A bounded soak of the real stack under seeded random faults.

    python -m bench.bench_soak --seconds 180 --seed 7 [--broker-restarts 0]

The four services run as separate processes (``tests/faults/harness.FaultStack``: RabbitMQ, the
MongoDB-wire store, Docker) on names of their own. For ``--seconds``, four seeded tasks run side
by side:

* **submitter**: good submissions through the gateway (the classification example; a few whose
  participant exits 1, a participant failure), at most ``--in-flight`` active at once, each with
  an ``Idempotency-Key`` and retried on a connection error or a 5xx until answered (what a careful
  client does while the gateway restarts);
* **bad inputs**: refused requests mixed in (bad JSON, unknown fields, paths out of the data
  root, a corrupt archive, caps exceeded, a webhook URL that does not parse, bad cursors,
  non-UTF-8 credentials...): each must be a 4xx with the standard envelope (a retryable 503
  while the broker or store is away is fine; an over-cap spec may be accepted if its job then
  fails with RESOURCE_LIMIT_EXCEEDED);
* **chaos**: every few seconds SIGKILL of a random service, started again at once; at most
  ``--broker-restarts`` RabbitMQ restarts (stop_app/start_app: it is shared, so 0 by default);
* **duplicates**: a random ``JobSubmitted``, ``RunCompleted`` or ``ScoreCompleted`` seen on the
  tap published again, byte for byte.

Then the faults stop and every accepted job must end: exactly one terminal state, exactly one
terminal event per ``event_id`` on the tap (a durable tap queue, so a broker restart loses
nothing), exactly one webhook delivery. The store must hold no job the client did not get an
answer for, and every queue of the stack (dead-letter queues included) must be empty, counted by
passive ``queue_declare``. The counts are printed; the exit status is 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import sys
import tarfile
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.faults.harness import (
    SERVICES,
    TERMINAL,
    Api,
    FaultStack,
    Tap,
    build_example_image,
    check_ended_once,
    queue_counts,
    restart_broker,
    stack_queue_names,
    wait_webhook,
)


@dataclass
class SoakReport:
    seed: int
    seconds: float
    accepted: list[str] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)
    expected_code: dict[str, str] = field(default_factory=dict)
    refused_late: int = 0
    unavailable: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    broker_restarts: int = 0
    duplicates: Counter[str] = field(default_factory=Counter)
    bad_inputs: Counter[str] = field(default_factory=Counter)
    bad_statuses: Counter[int] = field(default_factory=Counter)
    submit_retries: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unknown_jobs: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    queues: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.unknown_jobs
            or self.server_errors
            or any(self.queues.values())
            or self.problems
        )

    def lines(self) -> list[str]:
        left = {name: n for name, n in self.queues.items() if n}
        return [
            f"soak seed={self.seed} seconds={self.seconds:g}",
            f"accepted jobs: {len(self.accepted)} ({dict(sorted(self.outcomes.items()))})",
            f"lost: {len(self.lost)}  duplicated: {len(self.duplicated)}  "
            f"unknown jobs in the store: {len(self.unknown_jobs)}",
            f"kills: {sum(self.kills.values())} {dict(sorted(self.kills.items()))}  "
            f"broker restarts: {self.broker_restarts}",
            f"duplicate publishes: {sum(self.duplicates.values())} "
            f"{dict(sorted(self.duplicates.items()))}",
            f"bad inputs: {sum(self.bad_inputs.values())} "
            f"(statuses {dict(sorted(self.bad_statuses.items()))}, 5xx {len(self.server_errors)})",
            f"submissions retried after a connection error or 5xx: {self.submit_retries}",
            f"bad inputs accepted, then failed with the expected code: {self.refused_late}",
            f"bad inputs answered 503 (retryable: the broker or store was away): "
            f"{self.unavailable}",
            f"queues: {len(self.queues)} checked, messages left: {left or 0}",
            *(f"PROBLEM {p}" for p in self.problems[:20]),
            "result: " + ("OK" if self.ok else "VIOLATED"),
        ]


# --- bad inputs ---------------------------------------------------------------------------------


def _corrupt_archive() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("archive", b"\x1f\x8b\x08\x00garbage" * 10, filename="x.tar.gz")
    return form


def _link_archive() -> aiohttp.FormData:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("ws/meta.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    form = aiohttp.FormData()
    form.add_field("archive", buffer.getvalue(), filename="x.tar.gz")
    return form


def _deep(n: int) -> str:
    return '{"workspace": "x", "spec": ' + '{"a": ' * n + "1" + "}" * n + "}"


BASE = "soak-base"
"""A workspace that exists, so a refusal is about the rest of the request."""
OVER_CAP = {
    "scorer": "classification_f1",
    "time_limit": 60,
    "resources": {"cpu": 1, "memory": "1000Ti"},
    "container": {"image": "autoscorer-examples/classification:1", "cmd": ["true"]},
}

BAD_INPUTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "not json": ("POST", "/v1/jobs", {"data": b'{"workspace": ', "json_ct": True}),
    "unknown field": ("POST", "/v1/jobs", {"json": {"workspace": "x", "colour": "red"}}),
    "path out of the root": ("POST", "/v1/jobs", {"json": {"workspace": "../../etc"}}),
    "absolute path": ("POST", "/v1/jobs", {"json": {"workspace": "/etc"}}),
    "missing workspace": ("POST", "/v1/jobs", {"json": {"workspace": "no-such-ws"}}),
    "priority out of range": ("POST", "/v1/jobs", {"json": {"workspace": "x", "priority": 99}}),
    "deep nesting": ("POST", "/v1/jobs", {"data": _deep(5000).encode(), "json_ct": True}),
    "corrupt archive": ("POST", "/v1/jobs", {"form": _corrupt_archive}),
    "link in archive": ("POST", "/v1/jobs", {"form": _link_archive}),
    "bad webhook url": (
        "POST",
        "/v1/webhooks",
        {"json": {"url": "http://[::1", "event_types": ["job.failed"]}},
    ),
    "limit 0": ("GET", "/v1/jobs?limit=0", {}),
    "crafted cursor": ("GET", "/v1/jobs?cursor=eyJ4IjogMX0", {}),
    "bad date": ("GET", "/v1/jobs?created_from=yesterday", {}),
    "unknown job": ("GET", "/v1/jobs/job-does-not-exist", {}),
    "NUL in the path": ("POST", "/v1/jobs", {"json": {"workspace": "soak-base\u0000x"}}),
    "over-long path": ("POST", "/v1/jobs", {"json": {"workspace": "a/" * 3000}}),
    "memory over the cap": ("POST", "/v1/jobs", {"json": {"workspace": BASE, "spec": OVER_CAP}}),
    "invalid UTF-8 body": (
        "POST",
        "/v1/jobs",
        {"data": b'{"workspace": "\xff\xfe"}', "json_ct": True},
    ),
    "unknown charset": (
        "POST",
        "/v1/jobs",
        {"data": b'{"workspace": "x"}', "content_type": "application/json; charset=klingon"},
    ),
    "multipart without boundary": (
        "POST",
        "/v1/jobs",
        {"data": b"--x\r\n", "content_type": "multipart/form-data"},
    ),
    "over-long rescore reason": ("POST", "/v1/jobs/{job}/rescore?reason=" + "r" * 5000, {}),
    "non-utf8 key": ("GET", "/v1/jobs", {"raw_auth": b"Bearer \xff\xfe"}),
}


LATE_REFUSALS = {"memory over the cap": "RESOURCE_LIMIT_EXCEEDED"}
"""Bad inputs the gateway may accept (202) as long as the job then fails with this code: the
operator caps are checked by the scheduler at admission and by every backend."""


async def _bad_input(api: Api, name: str, job_id: str) -> tuple[int, bool, str | None]:
    """The status of one refused request (``{job}`` in its path: ``job_id``), whether its body
    is the standard error envelope, and the job id when it was accepted after all."""
    method, path, spec = BAD_INPUTS[name]
    path = path.replace("{job}", job_id)
    kw: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if "content_type" in spec:
        headers["Content-Type"] = spec["content_type"]
        kw["data"] = spec["data"]
    if "json" in spec:
        kw["json"] = spec["json"]
    if "json_ct" in spec:
        kw["data"] = spec["data"]
        headers["Content-Type"] = "application/json"
    if "form" in spec:
        kw["data"] = spec["form"]()
    if "raw_auth" in spec:
        # aiohttp refuses non-ASCII header values: send the bytes on a raw connection
        return await _raw_request(api.url, method, path, spec["raw_auth"]), True, None
    try:
        status, body = await api.request(method, path, headers=headers, **kw)
    except (json.JSONDecodeError, aiohttp.ContentTypeError):
        return 0, False, None
    if status in (200, 202) and body.get("ok") and "job_id" in body.get("data", {}):
        return status, True, str(body["data"]["job_id"])
    enveloped = body.get("ok") is False and isinstance(body.get("error"), dict)
    if status == 503 and enveloped and not body["error"].get("retryable"):
        enveloped = False  # a 503 says "try again later": it must be a retryable fault
    return status, enveloped, None


async def _raw_request(url: str, method: str, path: str, auth: bytes) -> int:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n".encode()
            + b"Authorization: "
            + auth
            + b"\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        return int(status_line.split()[1])
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# --- the soak -----------------------------------------------------------------------------------


@dataclass
class Soak:
    stack: FaultStack
    api: Api
    tap: Tap
    report: SoakReport
    in_flight: int
    broker_restarts: int
    stop_at: float

    def running(self) -> bool:
        return time.monotonic() < self.stop_at

    async def submit(self, rng: random.Random) -> None:
        fails = rng.random() < 0.15
        name = self.stack.add_workspace(
            sleep_s=round(rng.uniform(0, 2), 1), exit_code=1 if fails else None
        )
        key = uuid.uuid4().hex
        while True:
            try:
                status, body = await self.api.request(
                    "POST", "/v1/jobs", json={"workspace": name}, headers={"Idempotency-Key": key}
                )
            except (aiohttp.ClientError, OSError, TimeoutError):
                status, body = 0, {}
            if status in (200, 202):
                job_id = str(body["data"]["job_id"])
                self.report.accepted.append(job_id)
                self.report.expected[job_id] = "failed" if fails else "succeeded"
                return
            if status and status < 500:
                self.report.problems.append(f"good submission refused {status}: {body}")
                return
            self.report.submit_retries += 1
            await asyncio.sleep(0.5)

    async def active(self) -> int:
        count = 0
        for job_id in self.report.accepted[-self.in_flight * 3 :]:
            with contextlib.suppress(aiohttp.ClientError, OSError, AssertionError):
                if (await self.api.job(job_id))["status"] not in TERMINAL:
                    count += 1
        return count

    async def submitter(self, rng: random.Random) -> None:
        while self.running():
            try:
                busy = await self.active()
            except Exception:  # the gateway is restarting: try again shortly
                busy = self.in_flight
            if busy < self.in_flight:
                await self.submit(rng)
            await asyncio.sleep(rng.uniform(0.2, 0.8))

    async def bad_inputs(self, rng: random.Random) -> None:
        while self.running():
            name = rng.choice(sorted(BAD_INPUTS))
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                job_id = rng.choice(self.report.accepted) if self.report.accepted else "job-x"
                status, enveloped, accepted = await _bad_input(self.api, name, job_id)
                self.report.bad_inputs[name] += 1
                self.report.bad_statuses[status] += 1
                if accepted is not None and name in LATE_REFUSALS:
                    if accepted not in self.report.expected:
                        self.report.accepted.append(accepted)
                        self.report.expected[accepted] = "failed"
                        self.report.expected_code[accepted] = LATE_REFUSALS[name]
                        self.report.refused_late += 1
                elif status == 503 and enveloped:
                    self.report.unavailable += 1  # the broker or store is away: retry later
                elif status >= 500:
                    self.report.server_errors.append(f"{name}: {status}")
                elif not 400 <= status < 500 or not enveloped:
                    self.report.problems.append(f"bad input {name!r}: {status}, not an envelope")
            await asyncio.sleep(rng.uniform(0.3, 1.5))

    async def chaos(self, rng: random.Random) -> None:
        """Kills every 4-10 s; the broker restarts at seeded times spread over the middle."""
        start, span = time.monotonic(), self.stop_at - time.monotonic()
        restarts = sorted(
            start + span * rng.uniform(0.25, 0.6) for _ in range(self.broker_restarts)
        )
        await asyncio.sleep(rng.uniform(3, 8))
        while self.running():
            if restarts and time.monotonic() >= restarts[0]:
                restarts.pop(0)
                self.report.broker_restarts += 1
                await restart_broker()
            else:
                service = rng.choice(SERVICES)
                self.report.kills[service] += 1
                await self.stack.restart(service)
            await asyncio.sleep(rng.uniform(4, 10))

    async def duplicates(self, rng: random.Random) -> None:
        keys = ("job.submitted", "run.completed", "score.completed")
        while self.running():
            await asyncio.sleep(rng.uniform(1, 4))
            seen = [t for t in self.tap.seen if t.routing_key in keys]
            if not seen:
                continue
            original = rng.choice(seen)
            with contextlib.suppress(Exception):  # the broker may be restarting
                await self.tap.publish_raw(original)
                self.report.duplicates[original.routing_key] += 1

    async def settle(self, within_s: float) -> None:
        """Every service up, then every accepted job terminal and its webhook in."""
        await self.stack.ensure_up()
        deadline = time.monotonic() + within_s
        for job_id in self.report.accepted:
            try:
                job = await self.api.wait_terminal(job_id, max(5.0, deadline - time.monotonic()))
            except AssertionError as exc:
                self.report.lost.append(job_id)
                self.report.problems.append(str(exc)[:300])
                continue
            self.report.outcomes[job["status"]] += 1
            code = (job["error"] or {}).get("code")
            if job_id in self.report.expected_code and code != self.report.expected_code[job_id]:
                self.report.problems.append(
                    f"{job_id} ended with {code}, expected {self.report.expected_code[job_id]}"
                )
            if job["status"] != self.report.expected[job_id]:
                self.report.problems.append(
                    f"{job_id} {job['status']}, expected {self.report.expected[job_id]}: "
                    f"{json.dumps(job['error'])[:300]}"
                )
            await wait_webhook(self.stack.receiver, job, timeout=60, settle=0)
        await asyncio.sleep(3.0)  # room for a late duplicate to show

    async def check(self) -> None:
        report = self.report
        for job_id in report.accepted:
            if job_id in report.lost:
                continue
            job = await self.api.job(job_id)
            problems = check_ended_once(job, self.tap, self.stack.receiver)
            if problems:
                kinds = " ".join(problems)
                (
                    report.duplicated if "distinct" in kinds and " 0 " not in kinds else report.lost
                ).append(job_id)
                report.problems += problems
        listed: set[str] = set()
        cursor: str | None = None
        while True:
            path = "/v1/jobs?limit=500" + (f"&cursor={cursor}" if cursor else "")
            data = await self.api.call("GET", path)
            listed |= {j["job_id"] for j in data["jobs"]}
            cursor = data["next_cursor"]
            if not cursor:
                break
        report.unknown_jobs = sorted(listed - set(report.accepted))
        url = self.stack.settings.bus.url.get_secret_value()
        names = [n for n in await stack_queue_names(self.stack.prefix) if n != self.tap.queue_name]
        await asyncio.sleep(2.0)  # the consumers settle what they just got
        report.queues = {n: c[0] for n, c in (await queue_counts(url, names, patience=90)).items()}


async def soak(
    stack: FaultStack,
    *,
    seconds: float,
    seed: int,
    broker_restarts: int = 0,
    in_flight: int = 4,
    settle_s: float = 300,
) -> SoakReport:
    """Run the soak on a started stack and return its counts."""
    report = SoakReport(seed, seconds)
    url = stack.settings.bus.url.get_secret_value()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        Tap(url, stack.settings.bus.exchange, queue=f"{stack.prefix}.soak-tap") as tap,
    ):
        api = Api(session, stack.url)
        stack.add_workspace(BASE)
        run = Soak(stack, api, tap, report, in_flight, broker_restarts, time.monotonic() + seconds)
        rngs = [random.Random(seed * 100 + n) for n in range(4)]
        await asyncio.gather(
            run.submitter(rngs[0]),
            run.bad_inputs(rngs[1]),
            run.chaos(rngs[2]),
            run.duplicates(rngs[3]),
        )
        await run.settle(settle_s)
        await run.check()
    return report


async def _main(args: argparse.Namespace) -> int:
    build_example_image()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        stack = FaultStack.create(
            Path(tmp),
            os.environ.get("AUTOSCORER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
            os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017"),
            scorer_delay=0.3,
        )
        try:
            await stack.start()
            report = await soak(
                stack,
                seconds=args.seconds,
                seed=args.seed,
                broker_restarts=args.broker_restarts,
                in_flight=args.in_flight,
            )
        finally:
            stack.stop_all()
            stack.receiver.stop()
            await stack.remove_topology()
    print("\n".join(report.lines()))
    if args.json:
        print(
            json.dumps(
                {
                    "seed": report.seed,
                    "accepted": len(report.accepted),
                    "outcomes": report.outcomes,
                    "kills": report.kills,
                    "broker_restarts": report.broker_restarts,
                    "duplicates": report.duplicates,
                    "bad_inputs": report.bad_inputs,
                    "lost": len(report.lost),
                    "duplicated": len(report.duplicated),
                    "queues_left": sum(report.queues.values()),
                }
            )
        )
    return 0 if report.ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--broker-restarts",
        type=int,
        default=0,
        help="RabbitMQ restarts (stop_app/start_app); it is shared: 0 by default",
    )
    parser.add_argument("--in-flight", type=int, default=4, help="active good jobs at most")
    parser.add_argument("--json", action="store_true", help="also print the counts as JSON")
    sys.exit(asyncio.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
