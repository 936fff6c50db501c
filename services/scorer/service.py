"""The scorer service: scores in a process pool, shares scorers between its replicas.

* ``score.requested`` (queue ``scorer.requests``, shared by the replicas): the workspace is
  scored in a pool worker with a time limit (``services.scorer.pool``), ``output/result.json`` is
  written and ``ScoreCompleted`` published. A scorer's failure, time-out or crash is a
  ``result.error`` (SCORE_ERROR / SCORE_TIMEOUT / ...), never a lost job; only a replica that is
  shutting down hands a request back (retryable ``RESOURCE_ERROR``: the bus delivers it again).
* The scoring of one request (keyed by its ``event_id``) is a task the service owns, not the
  delivery's: a broker blip that cancels the handler leaves it scoring, and the redelivered
  request joins it. Its ``ScoreCompleted`` has an id derived from the request
  (``derived_event_id(request.event_id, "score.completed")``) and is remembered for the last
  ``MEMO_SIZE`` requests, so a duplicate request is answered with the same event, not scored again.
* ``scorers.changed`` (queue ``scorer.changes.<replica>``, one per replica): ``load_scorer``
  installs a scorer here and publishes its source; every other replica writes the same file into
  its ``plugin_dir`` and loads it, skipping its own events and sources it already has (sha256).
  Pool workers pick the change up with their next job (the plugin manifest travels with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from uuid import UUID

from services.scorer.plugins import (
    Installed,
    Manifest,
    file_sha256,
    install_source,
    plugin_manifest,
    remove_plugin,
    sha256_text,
)
from services.scorer.pool import ScoreTask, ScoringPool
from services.scorer.registry import ScorerRegistry
from services.scorer.watch import ReloadEvent, watch_scorers
from shared.bus import EventBus, RetryPolicy, Subscription
from shared.errors import AutoscorerError, ErrorCode, Fault, Stage
from shared.events import (
    BaseEvent,
    Event,
    ScoreCompleted,
    ScoreRequested,
    ScorerLoadCompleted,
    ScorerLoadRequested,
    ScorersAnnounced,
    ScorersChanged,
    ScorersWanted,
    ScorerTestCompleted,
    ScorerTestRequested,
    derived_event_id,
)
from shared.joblog import arecord
from shared.memo import BoundedMemo
from shared.metrics import Metrics
from shared.models import Result
from shared.provenance import Submission, scorer_name
from shared.supervise import Supervisor, describe

log = logging.getLogger(__name__)

HANDLER_MARGIN_S = 120.0
"""Beyond the scoring time limit: waiting for a slot, replacing a killed worker."""

MEMO_SIZE = 256
"""Answered requests remembered, so that a duplicate re-publishes instead of scoring again."""

STOP_TIMEOUT_S = 5.0
"""On close, after the workers are killed: how long a scoring may take to notice."""

WATCHER_READY_S = 10.0
"""How long ``start()`` waits for the hot-reload watcher to watch (it is retried after)."""

ANNOUNCE_LOOP = "announce"
ANNOUNCE_EVERY_S = 60.0
"""The replica's catalogue (``ScorersAnnounced``) goes out on start, after every change of its
scorers and at least this often, so a gateway that starts later learns it."""


@dataclass(frozen=True, slots=True)
class ScorerServiceConfig:
    instance: str
    plugin_dir: Path
    concurrency: int = 2
    watch_paths: tuple[Path, ...] = ()
    grace_s: float = 30.0
    queue_prefix: str = ""
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def requests_queue(self) -> str:
        return f"{self.queue_prefix}scorer.requests"

    @property
    def changes_queue(self) -> str:
        return f"{self.queue_prefix}scorer.changes.{self.instance}"

    @property
    def tests_queue(self) -> str:
        return f"{self.queue_prefix}scorer.tests"

    @property
    def loads_queue(self) -> str:
        return f"{self.queue_prefix}scorer.loads"


class ScorerService:
    def __init__(
        self,
        config: ScorerServiceConfig,
        bus: EventBus,
        registry: ScorerRegistry,
        pool: ScoringPool,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics  # counts scorings that ended with an error
        self._config = config
        self._bus = bus
        self._registry = registry
        self._pool = pool
        self._manifest: Manifest = ()
        self._changing = asyncio.Lock()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._closed = asyncio.Event()
        self._stop_watch = asyncio.Event()
        self._announce_now = asyncio.Event()
        self._scoring: dict[UUID, asyncio.Task[ScoreCompleted]] = {}
        self._answered: BoundedMemo[UUID, ScoreCompleted] = BoundedMemo(MEMO_SIZE)
        self.supervisor = Supervisor("scorer")
        """The service's background loops (``watcher``); readiness reads their health."""

    @property
    def config(self) -> ScorerServiceConfig:
        return self._config

    @property
    def registry(self) -> ScorerRegistry:
        return self._registry

    async def start(self) -> None:
        """Start the workers and the watcher, then subscribe (the caller starts the bus)."""
        await self._pool.start()
        self._manifest = await asyncio.to_thread(plugin_manifest, self._registry)
        if self._config.watch_paths:
            await self._start_watcher()
        scoring = Subscription(
            self._config.requests_queue,
            ["score.requested"],
            self._on_score_requested,
            concurrency=self._config.concurrency,
            retry=self._config.retry,
            handler_timeout=self._pool.time_limit + HANDLER_MARGIN_S,
        )
        await self._bus.subscribe(scoring)
        await self._bus.subscribe(
            Subscription(
                self._config.changes_queue,
                ["scorers.changed", "scorers.wanted"],
                self._on_scorers_changed,
            )
        )
        keys = ["scorer.test.requested"]  # test-scoring: the same pool, slots and time limit
        testing = replace(scoring, queue=self._config.tests_queue, routing_keys=keys)
        await self._bus.subscribe(replace(testing, handler=self._on_test_requested))
        await self._bus.subscribe(
            Subscription(
                self._config.loads_queue, ["scorer.load.requested"], self._on_load_requested
            )
        )
        self._announce_now.set()
        self.supervisor.forever(ANNOUNCE_LOOP, self._announcer)

    async def close(self) -> None:
        """Stop taking work; let scoring finish within ``grace_s``; hand back the rest."""
        if self._closing:
            return
        self._closing = True
        self._stop_watch.set()
        await self.supervisor.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._config.grace_s):
                await self._idle.wait()
        await self._pool.close()  # what still scores raises "handed back"...
        left = list(self._scoring.values())
        if left:  # ...and what still waits for a worker is cancelled (handed back too)
            _, waiting = await asyncio.wait(left, timeout=STOP_TIMEOUT_S)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
        self._closed.set()

    async def load_scorer(self, source: Path | str) -> Installed:
        """Install a scorer (a file, or its source text) here, then on every replica."""
        text = await asyncio.to_thread(_read_source, source) if isinstance(source, Path) else source
        installed = await self._install(text)
        await self._bus.publish(
            ScorersChanged(
                action=installed.action,
                scorer=installed.scorers[0],
                scorer_version=installed.version,
                source=text,
                sha256=installed.sha256,
                origin=self._config.instance,
            )
        )
        return installed

    async def remove_scorer(self, name: str) -> list[str]:
        """Remove a scorer installed at run time, here and then on every replica."""
        version = self._registered_version(name)
        removed = await self._remove(name)
        if not removed:
            raise AutoscorerError(
                ErrorCode.SCORER_NOT_FOUND,
                f"no scorer named {name!r} was installed at run time",
                stage=Stage.CONFIG,
                details={"scorer": name},
            )
        await self._bus.publish(
            ScorersChanged(
                action="removed",
                scorer=name,
                scorer_version=version,
                origin=self._config.instance,
            )
        )
        return removed

    # -- handlers ------------------------------------------------------------------------------

    async def _on_score_requested(self, event: Event) -> None:
        if not isinstance(event, ScoreRequested):
            return
        answered = self._answered.get(event.event_id)
        if answered is not None:
            log.info("duplicate score request for %s; re-publishing its result", event.job_id)
            await self._bus.publish(answered)
            return
        scoring = self._scoring.get(event.event_id)
        if scoring is not None:
            log.info("score request for %s is being scored here; joining it", event.job_id)
        elif self._closing:
            await self._closed.wait()
            raise _handed_back()
        else:
            scoring = self._scoring[event.event_id] = asyncio.create_task(
                self._score(event), name=f"score:{event.job_id}:{event.event_id}"
            )
            scoring.add_done_callback(_log_unjoined_failure)
        await _join(scoring)

    async def _score(self, event: ScoreRequested) -> ScoreCompleted:
        """Score one request and publish its answer (raises when handed back or unpublished:
        the delivery, or its redelivery, is retried by the bus)."""
        self._busy += 1
        self._idle.clear()
        try:
            await _journal(event, "scoring_started")
            result = await self._pool.score(self._task(event))
            await _journal(event, "scoring_completed", result)
            completed = ScoreCompleted(
                event_id=derived_event_id(event.event_id, "score.completed"),
                job_id=event.job_id,
                result=result,
                scorer=event.spec.scorer,
                scorer_version=self._version(event.spec.scorer, result),
            )
            self._answered.put(event.event_id, completed)
            if result.error is not None and self._metrics is not None:
                self._metrics.scorer_error(self._scorer_label(event), result.error.code.value)
        finally:
            del self._scoring[event.event_id]
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()
        await self._bus.publish(completed)
        return completed

    async def _on_test_requested(self, event: Event) -> None:
        """Score once in the pool, write nothing, answer the asker (a gateway's
        ``/v1/scorers/test``); an asker gone meanwhile (its reply queue expired) is not waited
        for."""
        if not isinstance(event, ScorerTestRequested):
            return
        asked = {(path, sha) for path, sha in event.plugins}
        plugins = tuple(sorted(asked | set(self._manifest)))  # its own scorers, and the asker's
        task = ScoreTask(event.workspace, event.scorer, None, plugins, write=False)
        result = await self._pool.score(task)
        answer = ScorerTestCompleted(
            event_id=derived_event_id(event.event_id, "scorer.test.completed"),
            request_id=event.event_id,
            reply_to=event.reply_to,
            result=result,
        )
        await self._answer(answer)

    async def _on_load_requested(self, event: Event) -> None:
        """Install the asker's file here and on every replica (``load_scorer``), answer what
        it holds or why it was refused (a broken file keeps the last good version)."""
        if not isinstance(event, ScorerLoadRequested):
            return
        loaded: list[str] = []
        error = None
        try:
            loaded = list((await self.load_scorer(event.source)).scorers)
        except AutoscorerError as exc:
            error = exc.to_info()
        await self._answer(
            ScorerLoadCompleted(
                event_id=derived_event_id(event.event_id, "scorer.load.completed"),
                request_id=event.event_id,
                reply_to=event.reply_to,
                loaded=loaded,
                error=error,
                scorers=self._registry.infos(),
                errors=dict(self._registry.errors),
            )
        )

    async def _answer(self, answer: BaseEvent) -> None:
        """Publish a reply or announcement; an asker gone meanwhile (its reply queue expired),
        or no gateway at all, is not waited for."""
        try:
            await self._bus.publish(answer)
        except AutoscorerError as exc:
            if exc.details.get("reason") != "unroutable":
                raise
            log.info("nobody waits for the answer %s any more", answer.type)

    async def _on_scorers_changed(self, event: Event) -> None:
        if isinstance(event, ScorersWanted):  # a gateway started: announce now
            self._announce_now.set()
            return
        if not isinstance(event, ScorersChanged) or event.origin == self._config.instance:
            return
        if event.action == "removed":
            await self._remove(event.scorer)
            return
        source = await asyncio.to_thread(_event_source, event)
        target = self._config.plugin_dir / f"{event.scorer}.py"
        same_file = await asyncio.to_thread(file_sha256, target) == sha256_text(source)
        if same_file and self._loaded_from(event.scorer, target):
            log.info("scorer %s from %s is already here", event.scorer, event.origin)
            return
        installed = await self._install(source)
        log.info("installed %s from %s", ", ".join(installed.scorers), event.origin)

    # -- helpers -------------------------------------------------------------------------------

    def _loaded_from(self, scorer: str, file: Path) -> bool:
        """The registry holds ``scorer`` from ``file`` (a shared plugin_dir may hold a file that
        another replica wrote but this one has not loaded yet)."""
        with contextlib.suppress(AutoscorerError):
            return self._registry.get(scorer).info.source == f"file:{file.resolve()}"
        return False

    def _scorer_label(self, event: ScoreRequested) -> str:
        """The scorer's name when this registry knows it: a metric label stays bounded."""
        name = scorer_name(event.spec.scorer)  # pinned or not: one label per scorer
        return name if name in self._registry.names() else "unknown"

    def _task(self, event: ScoreRequested) -> ScoreTask:
        spec = event.spec
        submission = Submission(event.submitter, event.submitted_at)
        return ScoreTask(
            event.workspace,
            spec.scorer,
            dict(spec.params),
            self._manifest,
            submission=submission,
            spec=spec,
        )

    def _version(self, scorer: str, result: Result) -> str:
        return result.versioning.get("version") or self._registered_version(scorer)

    def _registered_version(self, scorer: str) -> str:
        with contextlib.suppress(AutoscorerError):
            return self._registry.get(scorer).info.version
        return "unknown"

    async def _install(self, source: str) -> Installed:
        async with self._changing:
            installed = await asyncio.to_thread(
                install_source, self._registry, self._config.plugin_dir, source
            )
            await self._refresh()
        return installed

    async def _remove(self, name: str) -> list[str]:
        async with self._changing:
            removed = await asyncio.to_thread(
                remove_plugin, self._registry, self._config.plugin_dir, name
            )
            await self._refresh()
        return removed

    async def _refresh(self) -> None:
        self._manifest = await asyncio.to_thread(plugin_manifest, self._registry)
        self._announce_now.set()

    async def _announcer(self) -> None:
        """One supervised loop: publish the catalogue when it changed, or every
        ``ANNOUNCE_EVERY_S``; a failed publish (the bus not started yet, or down) is retried
        after the supervisor's back-off. No gateway listening is no failure."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ANNOUNCE_EVERY_S):
                    await self._announce_now.wait()
            self._announce_now.clear()
            try:
                await self._publish_catalogue()
            except Exception:
                self._announce_now.set()  # again, after the supervisor's back-off
                raise
            self.supervisor.beat(ANNOUNCE_LOOP)

    async def _publish_catalogue(self) -> None:
        catalogue = ScorersAnnounced(
            origin=self._config.instance,
            scorers=self._registry.infos(),
            errors=dict(self._registry.errors),
        )
        await self._answer(catalogue)  # no gateway bound is no failure

    async def _start_watcher(self) -> None:
        """Run the hot-reload watcher under the supervisor (restarted should it fail) and wait
        (bounded) until it watches."""
        ready = asyncio.Event()

        async def watch() -> None:
            await watch_scorers(
                self._registry,
                list(self._config.watch_paths),
                self._on_reload,
                stop=self._stop_watch,
                ready=ready,
            )

        self.supervisor.forever("watcher", watch)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WATCHER_READY_S):
                await ready.wait()
        if not ready.is_set():
            log.error("the scorer watcher is not watching yet; the supervisor keeps trying")

    async def _on_reload(self, event: ReloadEvent) -> None:
        """Called by the watcher after each reload; the manifest's hashing runs in a thread."""
        if event.error is not None:
            log.error(
                "reloading %s failed, keeping the last good version: %s",
                event.file,
                event.error.message,
            )
            return
        log.info("%s %s: %s", event.change, event.file, ", ".join(event.scorers))
        await self._refresh()  # and announce the new catalogue


def _read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AutoscorerError(
            ErrorCode.SCORER_LOAD_ERROR,
            f"cannot read scorer file {path}: {exc}",
            stage=Stage.CONFIG,
            details={"path": str(path)},
        ) from exc


def _event_source(event: ScorersChanged) -> str:
    """The scorer source an event carries (or points to), checked against its sha256."""
    source = event.source
    if source is None:
        assert event.source_ref is not None  # the event's validator guarantees one of them
        source = _read_source(Path(event.source_ref))
    if event.sha256 is not None and sha256_text(source) != event.sha256:
        raise AutoscorerError(
            ErrorCode.BAD_FORMAT,
            f"scorer {event.scorer} source does not match its sha256",
            stage=Stage.CONFIG,
            details={"scorer": event.scorer, "origin": event.origin},
            fault=Fault.ORGANISER,  # the organiser's scorer source (docs/ERRORS.md)
        )
    return source


async def _journal(event: ScoreRequested, step: str, result: Result | None = None) -> None:
    """One line in this service's log (DEBUG) and in the workspace's ``logs/job.jsonl``."""
    code = result.error.code.value if result and result.error else None
    log.debug("%s %s with %s", step, event.job_id, event.spec.scorer, extra={"error_code": code})
    await arecord(
        event.workspace,
        step,
        event.job_id,
        attempt=event.attempt,
        service="scorer",
        only_if_reachable=True,
        scorer=event.spec.scorer,
        error_code=code,
        timing=dict(result.timing) if result else None,
        summary=dict(result.summary) if result and not result.error else None,
    )


async def _join(task: asyncio.Task[ScoreCompleted]) -> None:
    """Wait for a scoring. Shielded: when the bus cancels this handler (its channel died in a
    broker blip), the scoring goes on, and the broker's redelivery of the request joins it
    again. A scoring that ``close()`` had to cancel is handed back."""
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and (current is None or current.cancelling() == 0):
            raise _handed_back() from None
        raise


def _log_unjoined_failure(task: asyncio.Task[ScoreCompleted]) -> None:
    """A scoring whose delivery was gone when it ended (a broker blip) has nobody to raise to:
    say what happened; the broker redelivers the request, which re-publishes or is handed back."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("%s ended without an answer: %s", task.get_name(), describe(exc))


def _handed_back() -> AutoscorerError:
    return AutoscorerError(
        ErrorCode.RESOURCE_ERROR,
        "scorer replica is shutting down; the request is handed back",
        stage=Stage.SCORING,
        details={"reason": "handed_back"},
    )
