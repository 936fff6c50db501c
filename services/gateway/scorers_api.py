"""/v1/scorers: list (anyone), load / reload / test / watch (admins).

The list is the scorer service's catalogue (``ScorersAnnounced``, kept by
:class:`~services.gateway.catalogue.ScorerCatalogue`). Loading is a request to the scorer service
(``ScorerLoadRequested``, the one way to install a scorer): a scorer replica loads the file
all-or-nothing and passes it to every replica (``ScorersChanged``); the gateway keeps the last
good file under ``<data_root>/scorers`` (what /v1/scorers/watch watches) and runs none of its
code.

Watching (``/v1/scorers/watch``) runs under the gateway's supervisor (:class:`ScorerWatches`):
no bare task, a failing watcher or sender is logged and shows in /readyz.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from watchfiles import awatch

from services.gateway.auth import require_admin
from services.gateway.bodies import model_body
from services.gateway.context import GATEWAY, Gateway
from services.gateway.http import api_error, ok, shown
from services.gateway.jobs_api import MAX_WORKSPACE, existing_workspace
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.supervise import Supervisor
from shared.workspace import Workspace

log = logging.getLogger(__name__)

_FILENAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\.py$")


ROUTES = web.RouteTableDef()
"""The routes of ``/v1/scorers``: each handler is declared where it is defined."""

WATCH_LOOP = "scorer-watch"
ANNOUNCE_LOOP = "scorer-announce"
ANNOUNCE_ATTEMPTS = 5
"""tries of sending one changed file to the scorer service (the supervisor's back-off between
them), then it is dropped with an error in the log"""
WATCH_READY_S = 10.0
MAX_PENDING = 256  # changed files waiting to be sent


@dataclass
class _Generation:
    """What one run of ``watch_scorers`` watches, and whether it has started."""

    files: frozenset[str]
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class ScorerWatches:
    """The watched scorer files, under two loops of the gateway's supervisor.

    ``scorer-watch`` watches the current set of files (with watchfiles; no code is loaded here)
    and starts again whenever the set changes (watching nothing, it waits). A file that changed
    is queued for ``scorer-announce``, which sends it to the scorer service (a
    ``ScorerLoadRequested``, as /v1/scorers/reload does); one that cannot be sent is retried
    after the supervisor's back-off, so the loop shows as failing in /readyz, and after
    ``ANNOUNCE_ATTEMPTS`` tries it is dropped with an error in the log. A file the scorer service
    refuses (a broken edit) is logged; the last good version stays.
    """

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.files: dict[str, Path] = {}
        self._restart = asyncio.Event()
        self._current: _Generation | None = None
        self._next = asyncio.Event()  # set (and replaced) when a new generation starts
        self._pending: deque[Path] = deque()
        self._queued = asyncio.Event()
        self._attempts = 0

    def supervise(self, supervisor: Supervisor) -> None:
        supervisor.forever(WATCH_LOOP, self._watch)
        supervisor.forever(ANNOUNCE_LOOP, self._announce)

    def names(self) -> list[str]:
        return sorted(self.files)

    async def add(self, name: str, file: Path) -> None:
        """Watch ``file`` too; returns once a watcher covering it has started."""
        if name not in self.files:
            self.files[name] = file
            self._restart.set()
        try:
            async with asyncio.timeout(WATCH_READY_S):
                await self._watching(name)
        except TimeoutError as exc:
            raise AutoscorerError(
                ErrorCode.BACKEND_UNAVAILABLE,
                "the scorer watcher did not start; the gateway's log has the details",
                stage=Stage.PLATFORM,
            ) from exc

    def remove(self, name: str) -> None:
        del self.files[name]
        self._restart.set()

    async def _watching(self, name: str) -> None:
        while True:
            current, upcoming = self._current, self._next
            if current is not None and name in current.files and name in self.files:
                await current.ready.wait()
                return
            await upcoming.wait()

    async def _watch(self) -> None:
        """One supervised loop: watch the current files until they change, then again."""
        while True:
            self._restart.clear()
            files = dict(self.files)
            current = self._current = _Generation(frozenset(files))
            self._next.set()
            self._next = asyncio.Event()
            self.gw.supervisor.beat(WATCH_LOOP)
            if not files:
                current.ready.set()
                await self._restart.wait()
                continue
            await watch_files(
                list(files.values()), self._on_change, stop=self._restart, ready=current.ready
            )

    def _on_change(self, file: Path) -> None:
        self.gw.supervisor.beat(WATCH_LOOP)
        if len(self._pending) >= MAX_PENDING:
            log.error("scorer watch: queue full, %s not sent", file.name)
            return
        self._pending.append(file)
        self._queued.set()

    async def _announce(self) -> None:
        """One supervised loop: send the changed files to the scorer service, oldest first."""
        while True:
            while not self._pending:
                self._queued.clear()
                await self._queued.wait()
            file = self._pending[0]
            try:
                await self._send(file)
            except Exception:
                self._attempts += 1
                if self._attempts < ANNOUNCE_ATTEMPTS:
                    raise  # the supervisor logs and counts it, and runs the loop again later
                self._pending.popleft()
                self._attempts = 0
                log.exception(
                    "scorer watch: gave up on %s after %d tries", file.name, ANNOUNCE_ATTEMPTS
                )
                continue
            self._pending.popleft()
            self._attempts = 0
            self.gw.supervisor.beat(ANNOUNCE_LOOP)

    async def _send(self, file: Path) -> None:
        try:
            source = await asyncio.to_thread(file.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:  # deleted or half-written: not sent
            log.warning("scorer watch: cannot read %s: %s", file.name, exc)
            return
        try:
            await install(self.gw, file.name, source)
        except AutoscorerError as exc:
            if exc.code is not ErrorCode.SCORER_LOAD_ERROR:
                raise
            log.warning("scorer watch: %s refused, the last good version stays: %s", file.name, exc)


async def watch_files(
    files: list[Path],
    on_change: Callable[[Path], None],
    *,
    stop: asyncio.Event,
    ready: asyncio.Event,
    debounce_ms: int = 150,
) -> None:
    """Call ``on_change`` for each of ``files`` that is written, until ``stop`` is set. Folders
    are watched (not the files) so that editors that save by rename are seen too."""
    wanted = {file.resolve() for file in files}
    roots = sorted({file.parent for file in wanted})
    watcher = awatch(*roots, stop_event=stop, debounce=debounce_ms, step=50, recursive=False)
    ready.set()
    async for changes in watcher:
        for path in sorted({Path(raw) for _, raw in changes} & wanted):
            if path.exists():
                on_change(path)


WATCHES = web.AppKey("scorer_watches", ScorerWatches)


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(pattern=_FILENAME.pattern)
    source: str = Field(min_length=1, max_length=1_000_000)


class TestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scorer_name: str = Field(min_length=1, max_length=128)
    workspace: str = Field(min_length=1, max_length=MAX_WORKSPACE)


class WatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(pattern=_FILENAME.pattern)


def plugin_dir(gw: Gateway) -> Path:
    path = gw.settings.data_root / "scorers"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def install(gw: Gateway, filename: str, source: str) -> list[str]:
    """Ask the scorer service to install ``source``; the scorers it holds. A refused file is
    its ``SCORER_LOAD_ERROR`` (naming the file, not where a replica keeps it)."""
    answer = await gw.scorer_tests.load(filename, source)
    gw.scorers.replace(answer.scorers, answer.errors)
    if answer.error is not None:
        raise _without_paths(AutoscorerError.from_info(answer.error), filename)
    return answer.loaded


@ROUTES.get("/v1/scorers")
async def list_scorers(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    errors = {source: info.model_dump(mode="json") for source, info in gw.scorers.errors.items()}
    return ok(
        {"scorers": [i.model_dump(mode="json") for i in gw.scorers.infos()], "errors": errors}
    )


async def _load(request: web.Request) -> web.Response:
    require_admin(request)
    gw = request.app[GATEWAY]
    body = model_body(request, LoadRequest)
    file = plugin_dir(gw) / body.filename
    previous = await asyncio.to_thread(_replace, file, body.source)
    try:
        names = await install(gw, body.filename, body.source)
    except BaseException:
        await asyncio.to_thread(_restore, file, previous)  # keep the last good file on disk too
        raise
    return ok({"loaded": names, "file": body.filename})


_PATH = re.compile(r"(?:/[^\s'\"/]+)+/[^\s'\"/]+\.py|_incoming-[0-9a-f]+\.py")
"""a path to a Python file, or the scorer's scratch name for a file it checks"""


def _without_paths(exc: AutoscorerError, filename: str) -> AutoscorerError:
    """The scorer's error as the client may see it: the file's name, not where it lives."""
    kept = {
        k: _PATH.sub(filename, v) if isinstance(v, str) else v
        for k, v in exc.details.items()
        if k in ("exception", "scorer")
    }
    message = _PATH.sub(filename, exc.message)
    return AutoscorerError(exc.code, message, stage=exc.stage, details={**kept, "file": filename})


def _replace(file: Path, source: str) -> str | None:
    previous = file.read_text(encoding="utf-8") if file.exists() else None
    file.write_text(source, encoding="utf-8")
    return previous


def _restore(file: Path, previous: str | None) -> None:
    if previous is None:
        file.unlink()
    else:
        file.write_text(previous, encoding="utf-8")


@ROUTES.post("/v1/scorers/load")
async def load_scorer(request: web.Request) -> web.Response:
    return await _load(request)


@ROUTES.post("/v1/scorers/reload")
async def reload_scorer(request: web.Request) -> web.Response:
    return await _load(request)


@ROUTES.post("/v1/scorers/test")
async def test_scorer(request: web.Request) -> web.Response:
    """Scored by a scorer replica, in its pool under its time limit (``scorer_tests.py``):
    organisers' code never runs in the gateway, and a scorer that hangs or exits is killed or
    reported there."""
    require_admin(request)
    gw = request.app[GATEWAY]
    body = model_body(request, TestRequest)
    ws = Workspace.at(existing_workspace(gw.settings.data_root, body.workspace))
    gw.scorers.get(body.scorer_name)  # SCORER_NOT_FOUND before a scorer is asked
    result = await gw.scorer_tests.score(str(ws.root), body.scorer_name)
    return ok({"scorer": body.scorer_name, "result": result.model_dump(mode="json")})


@ROUTES.post("/v1/scorers/watch")
async def start_watch(request: web.Request) -> web.Response:
    require_admin(request)
    gw = request.app[GATEWAY]
    body = model_body(request, WatchRequest)
    file = plugin_dir(gw) / body.filename
    if not file.is_file():
        raise api_error(ErrorCode.NOT_FOUND, f"no scorer file {body.filename!r}; load it first")
    watches = request.app[WATCHES]
    await watches.add(body.filename, file)
    return ok({"watching": watches.names()})


@ROUTES.delete("/v1/scorers/watch")
async def stop_watch(request: web.Request) -> web.Response:
    require_admin(request)
    name = request.query.get("filename", "")
    watches = request.app[WATCHES]
    if name not in watches.files:
        raise api_error(ErrorCode.NOT_FOUND, f"not watching {shown(name)}")
    watches.remove(name)
    return ok({"watching": watches.names()})


@ROUTES.get("/v1/scorers/watch")
async def list_watches(request: web.Request) -> web.Response:
    require_admin(request)
    return ok({"watching": request.app[WATCHES].names()})


async def scorer_tests_ctx(app: web.Application) -> AsyncIterator[None]:
    """Bind the gateway's reply queue for /v1/scorers/test and its queue of the scorer
    service's announcements when the app starts."""
    gw = app[GATEWAY]
    await gw.scorer_tests.subscribe()
    await gw.scorers.subscribe(gw.bus, gw.instance_id)
    yield


async def watches_ctx(app: web.Application) -> AsyncIterator[None]:
    """The scorer watcher's loops start with the app under the gateway's supervisor; the app's
    cleanup closes that supervisor (and so every loop of the gateway)."""
    gw = app[GATEWAY]
    watches = app[WATCHES] = ScorerWatches(gw)
    watches.supervise(gw.supervisor)
    yield
    await gw.supervisor.close()


def routes() -> list[web.AbstractRouteDef]:
    return list(ROUTES)
