"""A scorer that returns NaN or infinity is the organiser's bug: SCORE_ERROR on every path.

The check sits in ``ScorerDef.score`` (the one place the CLI, the scorer service and the
gateway's /v1/scorers/test all score through); these tests go through each of those paths with a
real plugin file, and a real pool worker for the service.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest

from services.cli.main import main
from services.scorer.engine import score_workspace
from services.scorer.main import create_scorer_service
from services.scorer.plugins import registry_from_settings
from services.scorer.registry import ScorerRegistry
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings
from shared.events import Event, ScoreCompleted, ScoreRequested, parse_event
from shared.models import JobSpec
from shared.workspace import Workspace

PLUGIN = """
from shared.models import Result
from shared.scoring import register

NAN, INF = float("nan"), float("inf")


def _scorer(name, build):
    return register(name, version="1.0.0", task_type="demo", description=name,
                    expected_files=(), primary_metric="value")(build)


nan_metric = _scorer("nan_metric", lambda ws, p: Result(summary={"value": 1.0},
                                                        metrics={"value": NAN}))
inf_summary = _scorer("inf_summary", lambda ws, p: Result(summary={"value": INF}))
neg_inf = _scorer("neg_inf", lambda ws, p: Result(summary={"value": 0.5}, metrics={"x": -INF}))
per_class_nan = _scorer("per_class_nan", lambda ws, p: Result(
    summary={"value": 0.5}, metrics={"per_class": {"cat": 0.5, "dog": NAN}}))


@register("deep_nan", version="1.0.0", task_type="demo", description="nested after the fact",
          expected_files=(), primary_metric="value")
def deep_nan(ws, params):
    result = Result(summary={"value": 0.5})
    result.metrics["table"] = {"a": {"b": [1.0, {"c": NAN}]}}  # no validation on assignment
    return result


@register("numpy_nan", version="1.0.0", task_type="demo", description="numpy float64 nan",
          expected_files=(), primary_metric="value")
def numpy_nan(ws, params):
    import numpy as np
    result = Result(summary={"value": 0.5})
    result.summary["value"] = np.float64("nan")
    return result


@register("wrong_type", version="1.0.0", task_type="demo", description="a list as a summary",
          expected_files=(), primary_metric="value")
def wrong_type(ws, params):
    result = Result(summary={"value": 0.5})
    result.summary["value"] = [1, 2]  # no validation on assignment
    return result


@register("numpy_details", version="1.0.0", task_type="demo", description="odd error details",
          expected_files=(), primary_metric="value")
def numpy_details(ws, params):
    import numpy as np
    from shared.errors import AutoscorerError, ErrorCode, Stage
    raise AutoscorerError(ErrorCode.BAD_FORMAT, "bad rows", stage=Stage.VALIDATION,
                          details={"rows": np.arange(3), "worst": np.float64("nan"), "x": object()})


@register("finite", version="1.0.0", task_type="demo", description="all fine",
          expected_files=(), primary_metric="value")
def finite(ws, params):
    return Result(summary={"value": 0.25}, metrics={"per_class": {"a": 1.0}})
"""

BAD = ["nan_metric", "inf_summary", "neg_inf", "per_class_nan", "deep_nan", "numpy_nan"]


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def plugin_file(tmp_path: Path) -> Path:
    path = tmp_path / "plugins" / "nonfinite.py"
    path.parent.mkdir()
    path.write_text(PLUGIN, encoding="utf-8")
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "output").mkdir(parents=True)
    (root / "input").mkdir()
    (root / "meta.json").write_text(json.dumps({"scorer": "finite"}))
    return root


def _assert_score_error(error: dict[str, Any], scorer: str, words: str = "non-finite") -> None:
    assert error["code"] == "SCORE_ERROR", error
    assert (error["stage"], error["fault"], error["retryable"]) == ("scoring", "organiser", False)
    assert words in error["message"]
    assert error["details"]["scorer"] == scorer


@pytest.mark.parametrize("scorer", BAD)
def test_engine_turns_non_finite_into_score_error(plugin_file, workspace, scorer):
    registry = ScorerRegistry.with_builtins()
    registry.load_file(plugin_file)

    result = score_workspace(registry, Workspace.at(workspace), scorer=scorer)

    assert result.error is not None
    _assert_score_error(result.error.model_dump(mode="json"), scorer)
    assert result.metrics == {} and result.summary == {}
    written = _strict_json((workspace / "output" / "result.json").read_text())
    assert written["error"]["code"] == "SCORE_ERROR"


@pytest.mark.parametrize("scorer", ["wrong_type", "numpy_details"])
def test_cli_reports_malformed_results_and_errors_cleanly(plugin_file, workspace, capfd, scorer):
    """A result changed after validation, or an error with NumPy values in its details, still
    gives a standard error in strict JSON (they used to crash the writer of result.json)."""
    argv = ["score", str(workspace), "--scorer", scorer, "--plugin", str(plugin_file), "--json"]
    code = main(argv)
    out, err = capfd.readouterr()
    assert code == 1 and "Traceback" not in err
    error = _strict_json(out)["error"]
    if scorer == "wrong_type":
        _assert_score_error(error, scorer, "does not allow")
    else:
        assert error["code"] == "BAD_FORMAT"
        assert error["details"]["rows"] == [0, 1, 2] and error["details"]["worst"] is None
    assert _strict_json((workspace / "output" / "result.json").read_text())["error"] == error


def test_a_finite_result_still_scores(plugin_file, workspace):
    registry = ScorerRegistry.with_builtins()
    registry.load_file(plugin_file)
    result = score_workspace(registry, Workspace.at(workspace), scorer="finite")
    assert result.error is None and result.summary == {"value": 0.25}


@pytest.mark.parametrize("scorer", BAD)
def test_cli_json_prints_the_standard_error(plugin_file, workspace, capsys, scorer):
    code = main(
        ["score", str(workspace), "--scorer", scorer, "--plugin", str(plugin_file), "--json"]
    )
    out, err = capsys.readouterr()

    assert code == 1
    envelope = _strict_json(out)
    assert envelope["status"] == "error"
    _assert_score_error(envelope["error"], scorer)
    assert "Traceback" not in err
    assert _strict_json((workspace / "output" / "result.json").read_text())["error"]["code"] == (
        "SCORE_ERROR"
    )


@pytest.mark.parametrize("scorer", ["nan_metric", "deep_nan"])
def test_cli_plain_prints_one_standard_error(plugin_file, workspace, capfd, scorer):
    code = main(["score", str(workspace), "--scorer", scorer, "--plugin", str(plugin_file)])
    out, err = capfd.readouterr()  # capfd: the scoring worker's stderr too

    assert code == 1
    assert out == ""
    assert err.startswith("error SCORE_ERROR (scoring, organiser fault): ")
    assert "Traceback" not in err and "nan" not in out.lower()


def test_cli_scorers_test_refuses_nan_too(plugin_file, workspace, capsys):
    code = main(
        ["scorers", "test", "per_class_nan", str(workspace), "--plugin", str(plugin_file), "--json"]
    )
    out, _ = capsys.readouterr()
    assert code == 1
    _assert_score_error(_strict_json(out)["error"], "per_class_nan")


async def test_scorer_service_publishes_a_valid_score_error(plugin_file, workspace, tmp_path):
    """Through the real pool worker: the ScoreCompleted round-trips the wire (it used to fail
    validation, be dead-lettered and wedge the job in ``scoring``)."""
    settings = Settings(
        scorer={
            "pool_size": 1,
            "time_limit": 30.0,
            "grace_s": 1.0,
            "plugin_paths": [plugin_file.parent],
            "plugin_dir": tmp_path / "installed",
            "queue_prefix": "nonfinite.",
        }
    )
    bus = MemoryBus()
    completed: list[ScoreCompleted] = []

    async def collect(event: Event) -> None:
        if isinstance(event, ScoreCompleted):
            completed.append(event)

    await bus.subscribe(Subscription("nonfinite.watch", ["score.completed"], collect))
    service = create_scorer_service(
        settings, bus, registry_from_settings(settings.scorer), instance="nonfinite"
    )
    await service.start()
    await bus.start()
    try:
        for scorer in ["per_class_nan", "inf_summary"]:
            spec = JobSpec(scorer=scorer)
            await bus.publish(
                ScoreRequested(job_id=spec.job_id, spec=spec, workspace=str(workspace))
            )
        async with asyncio.timeout(60):
            while len(completed) < 2:
                await asyncio.sleep(0.02)
    finally:
        await service.close()
        await bus.close()

    for event in completed:
        again = parse_event(event.model_dump_json())
        assert isinstance(again, ScoreCompleted) and again == event
        assert event.result.error is not None
        _assert_score_error(event.result.error.model_dump(mode="json"), event.scorer)


def test_nan_cannot_leak_into_cli_json_output(capsys):
    """The backstop: the envelope printer refuses NaN rather than printing invalid JSON."""
    from services.cli.envelope import print_json

    with pytest.raises(ValueError, match="not JSON compliant"):
        print_json({"status": "success", "data": {"x": math.nan}})


async def test_gateway_scorers_test_answers_strict_json(plugin_file, tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from services.gateway.app import create_app
    from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
    from shared.config import ApiKey, GatewaySettings
    from shared.store_sqlite import SqliteJobStore

    root = tmp_path / "data"
    (root / "ws" / "one" / "output").mkdir(parents=True)
    (root / "ws" / "one" / "meta.json").write_text(json.dumps({"scorer": "finite"}))
    settings = GatewaySettings(
        data_root=root, api_keys=[ApiKey(key="admin-key", subject="ops", role="admin")]
    )
    registry = ScorerRegistry.with_builtins()
    registry.load_file(plugin_file)
    bus, store = MemoryBus(), SqliteJobStore(tmp_path / "jobs.sqlite3")
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")
    scorer = create_scorer_service(  # /v1/scorers/test asks the scorer service, which has them
        Settings(scorer={"pool_size": 1, "plugin_dir": tmp_path / "scorer-plugins"}),
        bus,
        registry,
        instance="scorer-1",
    )
    await scorer.start()
    await bus.start()
    await store.init()
    await hooks.init()
    app = create_app(settings, store, bus, registry.infos(), hooks, instance_id="gw-nonfinite")
    try:
        async with TestClient(TestServer(app)) as client:
            for name in ["nan_metric", "deep_nan", "inf_summary"]:
                resp = await client.post(
                    "/v1/scorers/test",
                    json={"scorer_name": name, "workspace": "ws/one"},
                    headers={"Authorization": "Bearer admin-key"},
                )
                body = _strict_json(await resp.text())
                assert resp.status == 200, body
                _assert_score_error(body["data"]["result"]["error"], name)
    finally:
        await scorer.close()
        await bus.close()
        await store.close()
        await hooks.close()
