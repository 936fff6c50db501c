"""Every Prometheus metric AutoScorer exports, defined once (docs/OBSERVABILITY.md lists them).

A composition root builds one :class:`Metrics` per process (``autoscorer serve``: one for all four
services) and passes it to the parts that record: the scheduler (jobs finished and their times),
the scorer service (scorer errors), the webhook dispatcher (deliveries), the executor service
(runs in flight), the outbox relay (backlog), the bus (dead letters), the store
(:func:`instrument_store`) and the supervisors (:meth:`Metrics.watch_loops`). Nothing is
registered at import: each ``Metrics`` holds its own ``CollectorRegistry``.

Labels stay bounded: statuses, fault classes, error codes, queue and loop names, scorer names
(the registry's), store operations, and task types folded into :data:`TASK_TYPES` (a job's
``task_type`` is free text). Never a job id.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.jobs import Job, JobStatus
from shared.supervise import Supervisor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

TASK_TYPES = frozenset(
    {"unknown", "classification", "regression", "detection", "segmentation", "ranking"}
)
"""Task types kept as label values; any other ``task_type`` is counted as ``other``."""

JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 7200, 21600)

STORE_OPS = (
    "create", "get", "list_jobs", "transition", "acquire_lease", "renew_lease", "release_lease",
    "find_expired_leases", "find_overdue", "find_without_deadline", "set_deadline",
    "find_active_by_workspace", "claim_workspace", "release_workspace", "append_outbox",
    "pop_outbox", "find_pending_outbox", "count_queued_ahead", "recent_run_seconds", "queue_stats",
)  # fmt: skip
"""The ``JobStore`` operations timed by :func:`instrument_store` (every one but init/close)."""

S = TypeVar("S")


def task_type_label(task_type: str) -> str:
    return task_type if task_type in TASK_TYPES else "other"


class Metrics:
    """One process's metrics and the registry that exports them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_finished = Counter(
            "autoscorer_jobs_finished",
            "Jobs that reached a terminal state (a re-score that ends counts again)",
            ["status", "task_type", "fault", "code"],
            registry=r,
        )
        self.queue_wait = self._job_histogram("queue_wait", "queued (summed over retries)")
        self.run_time = self._job_histogram("run", "running (summed over attempts)")
        self.scoring_time = self._job_histogram("scoring", "scoring")
        self.image_pull = Histogram(
            "autoscorer_job_image_pull_seconds",
            "Time the last run of a finished job took to make its image present (pull or "
            "load; near 0 when it was there): the docker backend reports it",
            ["task_type"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "autoscorer_job_end_to_end_seconds",
            "From submission to the terminal state, by that state",
            ["status", "task_type"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.scorer_errors = Counter(
            "autoscorer_scorer_errors",
            "Scorings that ended with an error, by scorer and error code",
            ["scorer", "code"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "autoscorer_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retry, failed)",
            ["outcome"],
            registry=r,
        )
        self.webhook_lag = Histogram(
            "autoscorer_webhook_delivery_lag_seconds",
            "From the delivery's creation to its successful attempt",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.runs_in_flight = Gauge(
            "autoscorer_executor_runs_in_flight",
            "Runs an executor replica holds now (running or waiting for a slot)",
            ["backend", "replica"],
            registry=r,
        )
        self.run_slots = Gauge(
            "autoscorer_executor_run_slots",
            "Runs an executor replica may hold at once (executor_service.concurrency)",
            ["backend", "replica"],
            registry=r,
        )
        self.data_root_bytes = Gauge(
            "autoscorer_data_root_bytes",
            "Disk used under the gateway's data root (workspaces, uploads), set by every "
            "retention sweep",
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "autoscorer_outbox_backlog",
            "Outbox entries waiting to be published, as the relay's last sweep found them "
            "(at most relay_batch jobs read)",
            registry=r,
        )
        self.dead_letters = Counter(
            "autoscorer_bus_dead_letters",
            "Messages a queue gave up on (dead-lettered), by queue and error code",
            ["queue", "code"],
            registry=r,
        )
        self.store_latency = Histogram(
            "autoscorer_store_operation_seconds",
            "Job store operation latency, by operation and outcome (ok, error)",
            ["op", "outcome"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self._loops = _LoopCollector()
        r.register(self._loops)

    def _job_histogram(self, name: str, what: str) -> Histogram:
        return Histogram(
            f"autoscorer_job_{name}_seconds",
            f"Time a finished job spent {what}",
            ["task_type"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )

    def watch_loops(self, *supervisors: Supervisor) -> None:
        """Export the health of these supervisors' loops (read at each scrape)."""
        self._loops.add(supervisors)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    # -- what the services record ----------------------------------------------------------

    def job_finished(self, job: Job) -> None:
        """Count a job that just reached a terminal state and observe its times (scheduler)."""
        task = task_type_label(job.spec.task_type)
        fault = job.error.fault.value if job.error else "none"
        code = job.error.code.value if job.error else "none"
        self.jobs_finished.labels(job.status.value, task, fault, code).inc()
        spent = time_in_states(job)
        for status, histogram in (
            (JobStatus.QUEUED, self.queue_wait),
            (JobStatus.RUNNING, self.run_time),
            (JobStatus.SCORING, self.scoring_time),
        ):
            if status in spent:
                histogram.labels(task).observe(spent[status])
        pull = job.run_outcome.extra.get("image_pull_s") if job.run_outcome else None
        if isinstance(pull, int | float) and not isinstance(pull, bool):
            self.image_pull.labels(task).observe(max(float(pull), 0.0))
        if job.history:
            total = (job.history[-1].at - job.history[0].at).total_seconds()
            self.end_to_end.labels(job.status.value, task).observe(max(total, 0.0))

    def scorer_error(self, scorer: str, code: str) -> None:
        self.scorer_errors.labels(scorer, code).inc()

    def webhook_attempt(self, outcome: str, created_at: datetime, at: datetime) -> None:
        self.webhook_deliveries.labels(outcome).inc()
        if outcome == "delivered":
            self.webhook_lag.observe(max((at - created_at).total_seconds(), 0.0))

    def dead_lettered(self, queue: str, code: str) -> None:
        self.dead_letters.labels(queue, code).inc()

    def track_in_flight(
        self, backend: str, replica: str, count: Callable[[], int], slots: int
    ) -> None:
        """The in-flight gauge reads ``count()`` at each scrape; ``slots`` is the replica's cap."""
        self.runs_in_flight.labels(backend, replica).set_function(count)
        self.run_slots.labels(backend, replica).set(slots)


def time_in_states(job: Job) -> dict[JobStatus, float]:
    """Seconds the job spent in each state it left, from its history (repeats summed)."""
    spent: dict[JobStatus, float] = {}
    for change, following in zip(job.history, job.history[1:], strict=False):
        seconds = max((following.at - change.at).total_seconds(), 0.0)
        spent[change.status] = spent.get(change.status, 0.0) + seconds
    return spent


class _LoopCollector(Collector):
    """``autoscorer_loop_*`` read from each watched supervisor's ``health()`` at scrape time."""

    def __init__(self) -> None:
        self._supervisors: list[Supervisor] = []

    def add(self, supervisors: Iterable[Supervisor]) -> None:
        self._supervisors.extend(s for s in supervisors if s not in self._supervisors)

    def collect(self) -> Iterator[Metric]:
        labels = ["service", "loop"]
        healthy = GaugeMetricFamily(
            "autoscorer_loop_healthy", "1: the supervised loop is healthy", labels=labels
        )
        failing = GaugeMetricFamily(
            "autoscorer_loop_consecutive_failures",
            "Failures in a row of a supervised loop",
            labels=labels,
        )
        failures = CounterMetricFamily(
            "autoscorer_loop_failures", "Failures of a supervised loop", labels=labels
        )
        restarts = CounterMetricFamily(
            "autoscorer_loop_restarts", "Restarts of a supervised forever loop", labels=labels
        )
        for sup in self._supervisors:
            for name, h in sorted(sup.health().items()):
                key = [sup.service, name]
                healthy.add_metric(key, 1.0 if h.healthy else 0.0)
                failing.add_metric(key, float(h.consecutive_failures))
                failures.add_metric(key, float(h.failures))
                restarts.add_metric(key, float(h.restarts))
        yield from (healthy, failing, failures, restarts)


def instrument_store(store: S, metrics: Metrics | None) -> S:
    """Time every ``JobStore`` operation of ``store`` (wrapping its bound methods on the
    instance, so the store's own code is unchanged); ``store`` as it was when ``metrics`` is
    None."""
    if metrics is None:
        return store
    for op in STORE_OPS:
        method = getattr(store, op, None)
        if method is not None:
            setattr(store, op, _timed(metrics.store_latency, op, method))
    return store


def _timed(
    histogram: Histogram, op: str, method: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    ok, error = histogram.labels(op, "ok"), histogram.labels(op, "error")

    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await method(*args, **kwargs)
        except BaseException:
            error.observe(time.perf_counter() - started)
            raise
        ok.observe(time.perf_counter() - started)
        return result

    return timed
