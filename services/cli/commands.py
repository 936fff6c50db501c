"""The CLI commands. Each takes parsed arguments and returns an :class:`Outcome`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from services.cli import jobs
from services.cli.envelope import print_error, print_result
from services.executor.registry import validate_backend_config
from services.scorer.oneshot import score_once
from services.scorer.plugins import plugin_manifest
from services.scorer.pool import ScoreTask
from services.scorer.registry import ScorerRegistry
from services.scorer.watch import ReloadEvent, watch_scorers
from shared.config import Settings, load_settings
from shared.errors import AutoscorerError, ErrorCode, ErrorInfo, Stage
from shared.models import Result
from shared.report import write_report
from shared.workspace import Workspace


def _nothing() -> None:
    return None


@dataclass
class Outcome:
    data: Any = None
    error: ErrorInfo | None = None
    show: Callable[[], None] = field(default=_nothing)

    def __post_init__(self) -> None:
        if self.show is _nothing and self.error is not None:
            error = self.error
            self.show = lambda: print_error(error)


def _settings(args: argparse.Namespace) -> Settings:
    path = args.config
    if path is None and (env := _env_config()) is not None:
        path = Path(env)
    return load_settings(path)


def _env_config() -> str | None:
    return os.environ.get("AUTOSCORER_CONFIG") or None


def _registry(settings: Settings, extra: list[Path]) -> ScorerRegistry:
    registry = ScorerRegistry.with_builtins()
    with contextlib.redirect_stdout(sys.stderr):  # a plugin printing on import: not into --json
        for path in [*settings.scorer.plugin_paths, *extra]:
            registry.load_path(path)
    return registry


def _result_outcome(result: Result, ws: Workspace, *, written: bool = True) -> Outcome:
    where = str(ws.result_path) if written else "(not written)"
    return Outcome(
        data=result.model_dump(mode="json"),
        error=result.error,
        show=lambda: print_result(result, where),
    )


# --- workspace commands -------------------------------------------------------------------


def validate(args: argparse.Namespace) -> Outcome:
    settings = _settings(args)
    registry = _registry(settings, args.plugin)
    ws = Workspace.at(args.workspace)
    spec = ws.load_spec()
    scorer = registry.get(spec.scorer)
    scorer.parse_params(spec.params)
    for relative in scorer.info.expected_files:
        if relative.startswith("input/"):
            ws.require(relative)
    checks = {
        "meta.json": "ok",
        "scorer": f"{scorer.name} {scorer.info.version}",
        "params": "ok",
        "ground_truth": [f for f in scorer.info.expected_files if f.startswith("input/")],
        "container": spec.container.image if spec.container else None,
        "time_limit": spec.time_limit,
    }
    data = {"workspace": str(ws.root), "job_id": spec.job_id, "checks": checks}

    def show() -> None:
        print(f"workspace {ws.root} is valid")
        for key, value in checks.items():
            print(f"  {key:<14} {value}")

    return Outcome(data=data, show=show)


def run(args: argparse.Namespace) -> Outcome:
    settings = _settings(args)
    registry = _registry(settings, args.plugin)
    ws = Workspace.at(args.workspace)
    outcome = asyncio.run(jobs.run_job(settings, registry, ws, args.backend))
    data = outcome.model_dump(mode="json")

    def show() -> None:
        if outcome.error is not None:
            print_error(outcome.error)
            return
        print(f"run {outcome.status} on {outcome.backend} in {outcome.duration_s:.2f}s")
        print(f"  log: {ws.logs_dir / 'container.log'}")

    return Outcome(data=data, error=outcome.error, show=show)


def _score(
    settings: Settings,
    registry: ScorerRegistry,
    ws: Workspace,
    *,
    scorer: str | None,
    params: dict[str, Any] | None = None,
    write: bool = True,
) -> Result:
    """Score in a worker process under ``scorer.time_limit``, as the scorer service does."""
    task = ScoreTask(str(ws.root), scorer, params, plugin_manifest(registry), write=write)
    log_level = logging.getLogger().getEffectiveLevel()
    return score_once(task, settings.scorer.time_limit, log_level=log_level)


def score(args: argparse.Namespace) -> Outcome:
    settings = _settings(args)
    registry = _registry(settings, args.plugin)
    ws = Workspace.at(args.workspace)
    ws.output_dir.mkdir(exist_ok=True)
    result = _score(settings, registry, ws, scorer=args.scorer, params=args.params)
    return _result_outcome(result, ws)


def report(args: argparse.Namespace) -> Outcome:
    """Write output/report.html from the workspace's result.json, run info and logs."""
    ws = Workspace.at(args.workspace)
    path = write_report(ws)
    data = {"workspace": str(ws.root), "report": str(path)}
    return Outcome(data=data, show=lambda: print(f"report written to {path}"))


def pipeline(args: argparse.Namespace) -> Outcome:
    settings = _settings(args)
    registry = _registry(settings, args.plugin)
    ws = Workspace.at(args.workspace)
    result = asyncio.run(jobs.pipeline(settings, registry, ws, args.backend))
    return _result_outcome(result, ws)


# --- scorers ------------------------------------------------------------------------------


def scorers_list(args: argparse.Namespace) -> Outcome:
    registry = _registry(_settings(args), args.plugin)
    infos = [info.model_dump(mode="json") for info in registry.infos()]

    def show() -> None:
        for info in registry.infos():
            print(f"{info.name:<28} {info.version:<8} {info.task_type:<16} {info.description}")

    return Outcome(data={"scorers": infos}, show=show)


def _path_arg(args: argparse.Namespace) -> Path:
    path: Path | None = args.path or args.file_path
    if path is None:
        raise AutoscorerError(
            ErrorCode.CONFIG_VALIDATION_ERROR, "give a scorer file or folder", stage=Stage.CONFIG
        )
    return path


def scorers_load(args: argparse.Namespace) -> Outcome:
    registry = _registry(_settings(args), args.plugin)
    path = _path_arg(args)
    names = registry.load_path(path)
    if args.watch:
        _watch_forever(registry, path, json_lines=args.json)
    data = {"path": str(path), "loaded": names}
    return Outcome(data=data, show=lambda: print(f"loaded {', '.join(names)} from {path}"))


def scorers_reload(args: argparse.Namespace) -> Outcome:
    """Load, then load again: shows that the file reloads cleanly and what it registers."""
    registry = _registry(_settings(args), args.plugin)
    path = _path_arg(args)
    before = {n: registry.get(n).info.version for n in registry.load_path(path)}
    after = {n: registry.get(n).info.version for n in registry.load_path(path)}
    if args.watch:
        _watch_forever(registry, path, json_lines=args.json)
    data = {"path": str(path), "before": before, "after": after}
    return Outcome(data=data, show=lambda: print(f"reloaded {', '.join(after)} from {path}"))


def _print_event(event: ReloadEvent, json_lines: bool) -> None:
    if json_lines:
        record = {
            "file": str(event.file),
            "change": event.change,
            "scorers": list(event.scorers),
            "error": event.error.model_dump(mode="json") if event.error else None,
        }
        print(json.dumps(record, allow_nan=False, default=str), flush=True)
    elif event.error is not None:
        print(f"{event.file}: reload failed, keeping the last good version", flush=True)
        print_error(event.error)
    else:
        print(f"{event.file}: {event.change} {', '.join(event.scorers)}", flush=True)


def _watch_forever(registry: ScorerRegistry, path: Path, *, json_lines: bool) -> None:
    async def watch() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ready = asyncio.Event()
        task = asyncio.create_task(
            watch_scorers(
                registry, [path], lambda e: _print_event(e, json_lines), stop=stop, ready=ready
            )
        )
        await ready.wait()
        print(f"watching {path} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(watch())


def scorers_test(args: argparse.Namespace) -> Outcome:
    settings = _settings(args)
    registry = _registry(settings, args.plugin)
    name = args.scorer_flag or args.scorer_name
    where = args.workspace_flag or args.workspace
    if name is None or where is None:
        raise AutoscorerError(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            "usage: autoscorer scorers test NAME WORKSPACE",
            stage=Stage.CONFIG,
        )
    ws = Workspace.at(where)
    result = _score(settings, registry, ws, scorer=name, write=False)
    return _result_outcome(result, ws, written=False)


# --- config -------------------------------------------------------------------------------


def config_show(args: argparse.Namespace) -> Outcome:
    settings = _settings(args)
    data = {
        "executor.default_backend": settings.executor.default_backend,
        "executor.backends": sorted(settings.executor.backends),
        "scorer.plugin_paths": [str(p) for p in settings.scorer.plugin_paths],
        "scorer.watch": settings.scorer.watch,
        "bus.kind": settings.bus.kind,
        "store.kind": settings.store.kind,
    }

    def show() -> None:
        for key, value in data.items():
            print(f"{key}: {value}")

    return Outcome(data=data, show=show)


def config_validate(args: argparse.Namespace) -> Outcome:
    settings = _settings(args)
    problems: list[dict[str, Any]] = []
    for alias, config in settings.executor.backends.items():
        try:
            validate_backend_config(config)
        except AutoscorerError as exc:
            problems.append({"backend": alias, **exc.to_info().model_dump(mode="json")})
    if settings.executor.default_backend not in settings.executor.backends:
        problems.append(
            {"setting": "executor.default_backend", "message": "not a configured backend"}
        )
    for path in settings.scorer.plugin_paths:
        if not path.exists():
            problems.append({"setting": "scorer.plugin_paths", "message": f"{path} does not exist"})
    if problems:
        raise AutoscorerError(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            f"{len(problems)} setting(s) are invalid",
            stage=Stage.CONFIG,
            details={"problems": problems},
        )
    return Outcome(data={"valid": True}, show=lambda: print("settings are valid"))


def config_dump(args: argparse.Namespace) -> Outcome:
    dumped = _settings(args).redacted()
    return Outcome(data=dumped, show=lambda: print(yaml.safe_dump(dumped, sort_keys=False), end=""))


# --- services -----------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> Outcome:
    from services.cli.serve import run_serve

    settings = _settings(args)
    if args.port is not None:
        settings.gateway.port = args.port
    run_serve(settings)
    return Outcome(data={"stopped": True}, show=lambda: None)


def _print_status(job: dict[str, Any]) -> None:
    print(f"{job['job_id']}: {job['status']}", file=sys.stderr, flush=True)


def submit(args: argparse.Namespace) -> Outcome:
    from services.cli.client import Client, api_key, pack_workspace

    if args.workspace is None and args.remote_workspace is None:
        raise AutoscorerError(
            ErrorCode.CONFIG_VALIDATION_ERROR,
            "name a local workspace or --remote-workspace",
            stage=Stage.CONFIG,
        )

    async def go() -> Any:
        async with aiohttp.ClientSession() as session:
            client = Client(session, args.url, api_key(args.api_key))
            if args.remote_workspace:
                data = await client.submit_path(args.remote_workspace, args.priority)
            else:
                archive = await asyncio.to_thread(pack_workspace, Path(args.workspace))
                data = await client.submit_archive(archive, args.priority)
            if not args.wait:
                return data
            return await client.wait(data["job_id"], args.wait_timeout, _print_status)

    job = asyncio.run(go())
    return _job_outcome(job)


def status(args: argparse.Namespace) -> Outcome:
    from services.cli.client import Client, api_key

    async def go() -> Any:
        async with aiohttp.ClientSession() as session:
            return await Client(session, args.url, api_key(args.api_key)).job(args.job_id)

    return _job_outcome(asyncio.run(go()))


def _job_outcome(data: dict[str, Any]) -> Outcome:
    job = data.get("job", data)
    error = ErrorInfo.model_validate(job["error"]) if job.get("error") else None

    def show() -> None:
        print(f"job {job['job_id']}: {job['status']}")
        if job.get("queue"):
            _print_queue(job["queue"])
        result = job.get("result") or {}
        for key, value in (result.get("summary") or {}).items():
            print(f"  {key:<24} {value}")
        if error is not None:
            print_error(error)

    return Outcome(data=data, error=error, show=show)


def _print_queue(queue: dict[str, Any]) -> None:
    """Where a queued job stands (GET /v1/jobs/{id}'s ``queue``)."""
    print(f"  queue position {queue['position']} on {queue['backend']} ({queue['ahead']} ahead)")
    basis = queue.get("estimated_from")
    if queue.get("estimated_start_at") is None or not basis:
        print("  estimated start: unknown (no finished runs on this backend yet)")
        return
    print(
        f"  estimated start: {queue['estimated_start_at']} (median run "
        f"{basis['median_run_seconds']:.1f}s of the last {basis['recent_runs']}, "
        f"{basis['run_slots']} at once)"
    )
