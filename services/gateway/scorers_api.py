"""/v1/scorers: list (anyone), load / reload / test / watch (admins).

The gateway keeps its own registry (built-ins, configured plugins, what admins load) so it can
list and test scorers. Loading is all-or-nothing: the file must import and register cleanly here
first; then a ``ScorersChanged`` event carries its source to every scorer replica.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.auth import require_admin
from services.gateway.bodies import model_body
from services.gateway.context import GATEWAY, Gateway
from services.gateway.http import api_error, ok, shown
from services.gateway.jobs_api import MAX_WORKSPACE, existing_workspace
from services.scorer.engine import score_workspace
from services.scorer.watch import ReloadEvent, watch_scorers
from shared.errors import AutoscorerError, ErrorCode
from shared.events import ScorersChanged
from shared.workspace import Workspace

_FILENAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\.py$")


@dataclass
class Watches:
    """Watched scorer files by name, and announcements still being published."""

    tasks: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = field(default_factory=dict)
    pending: set[asyncio.Task[None]] = field(default_factory=set)


WATCHES = web.AppKey("scorer_watches", Watches)
Action = Literal["loaded", "reloaded"]


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


async def announce(gw: Gateway, file: Path, names: list[str], action: Action) -> None:
    source = await asyncio.to_thread(file.read_text, encoding="utf-8")
    digest = hashlib.sha256(source.encode()).hexdigest()
    for name in names:
        version = gw.registry.get(name).info.version
        event = ScorersChanged(
            action=action,
            scorer=name,
            scorer_version=version,
            source=source,
            sha256=digest,
            origin=gw.instance_id,
            source_ref=file.name,
        )
        await gw.bus.publish(event)


async def list_scorers(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    errors = {source: info.model_dump(mode="json") for source, info in gw.registry.errors.items()}
    return ok(
        {"scorers": [i.model_dump(mode="json") for i in gw.registry.infos()], "errors": errors}
    )


async def _load(request: web.Request, action: Action) -> web.Response:
    require_admin(request)
    gw = request.app[GATEWAY]
    body = model_body(request, LoadRequest)
    file = plugin_dir(gw) / body.filename
    previous = await asyncio.to_thread(_replace, file, body.source)
    try:
        names = gw.registry.load_file(file)
    except AutoscorerError as exc:
        await asyncio.to_thread(_restore, file, previous)  # keep the last good file on disk too
        raise _without_paths(exc, file) from exc
    except Exception:
        await asyncio.to_thread(_restore, file, previous)
        raise
    await announce(gw, file, names, action)
    return ok({"loaded": names, "file": body.filename})


def _without_paths(exc: AutoscorerError, file: Path) -> AutoscorerError:
    """The registry's error as the client may see it: the file's name, not where it lives."""
    kept = {k: v for k, v in exc.details.items() if k in ("exception", "scorer")}
    message = exc.message.replace(str(file.resolve()), file.name).replace(str(file), file.name)
    return AutoscorerError(
        exc.code, message, stage=exc.stage, details={**kept, "file": file.name}
    )


def _replace(file: Path, source: str) -> str | None:
    previous = file.read_text(encoding="utf-8") if file.exists() else None
    file.write_text(source, encoding="utf-8")
    return previous


def _restore(file: Path, previous: str | None) -> None:
    if previous is None:
        file.unlink()
    else:
        file.write_text(previous, encoding="utf-8")


async def load_scorer(request: web.Request) -> web.Response:
    return await _load(request, "loaded")


async def reload_scorer(request: web.Request) -> web.Response:
    return await _load(request, "reloaded")


async def test_scorer(request: web.Request) -> web.Response:
    require_admin(request)
    gw = request.app[GATEWAY]
    body = model_body(request, TestRequest)
    ws = Workspace.at(existing_workspace(gw.settings.data_root, body.workspace))
    result = await asyncio.to_thread(
        score_workspace, gw.registry, ws, scorer=body.scorer_name, write=False
    )
    return ok({"scorer": body.scorer_name, "result": result.model_dump(mode="json")})


async def start_watch(request: web.Request) -> web.Response:
    require_admin(request)
    gw = request.app[GATEWAY]
    body = model_body(request, WatchRequest)
    file = plugin_dir(gw) / body.filename
    if not file.is_file():
        raise api_error(ErrorCode.NOT_FOUND, f"no scorer file {body.filename!r}; load it first")
    watches = request.app[WATCHES].tasks
    if body.filename not in watches:
        stop, ready = asyncio.Event(), asyncio.Event()

        def on_event(event: ReloadEvent) -> None:
            if event.change == "loaded":
                task = asyncio.get_running_loop().create_task(
                    announce(gw, event.file, list(event.scorers), "reloaded")
                )
                _keep(request.app, task)

        watches[body.filename] = (
            asyncio.create_task(
                watch_scorers(gw.registry, [file], on_event, stop=stop, ready=ready)
            ),
            stop,
        )
        await ready.wait()
    return ok({"watching": sorted(watches)})


def _keep(app: web.Application, task: asyncio.Task[None]) -> None:
    pending = app[WATCHES].pending
    pending.add(task)
    task.add_done_callback(pending.discard)


async def stop_watch(request: web.Request) -> web.Response:
    require_admin(request)
    name = request.query.get("filename", "")
    watches = request.app[WATCHES].tasks
    if name not in watches:
        raise api_error(ErrorCode.NOT_FOUND, f"not watching {shown(name)}")
    task, stop = watches.pop(name)
    stop.set()
    await task
    return ok({"watching": sorted(watches)})


async def list_watches(request: web.Request) -> web.Response:
    require_admin(request)
    return ok({"watching": sorted(request.app[WATCHES].tasks)})


async def watches_ctx(app: web.Application) -> AsyncIterator[None]:
    watches = app[WATCHES] = Watches()
    yield
    for task, stop in watches.tasks.values():
        stop.set()
        await task
    if watches.pending:
        await asyncio.wait(watches.pending, timeout=5)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/scorers", list_scorers),
        web.post("/v1/scorers/load", load_scorer),
        web.post("/v1/scorers/reload", reload_scorer),
        web.post("/v1/scorers/test", test_scorer),
        web.get("/v1/scorers/watch", list_watches),
        web.post("/v1/scorers/watch", start_watch),
        web.delete("/v1/scorers/watch", stop_watch),
    ]
