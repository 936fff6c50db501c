"""CLI score honours scorer.time_limit, and a crashing scorer is one standard error, not a
traceback (unless --debug)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.cli.main import main

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = """
import os
import time

from shared.models import Result
from shared.scoring import register


@register("sleepy", version="1.0.0", task_type="demo", description="never finishes",
          expected_files=(), primary_metric="value")
def sleepy(ws, params):
    time.sleep(600)
    return Result(summary={"value": 1.0})


@register("crashing", version="1.0.0", task_type="demo", description="raises",
          expected_files=(), primary_metric="value")
def crashing(ws, params):
    raise RuntimeError("division by zero in the organiser's code")


@register("chatty", version="1.0.0", task_type="demo", description="prints",
          expected_files=(), primary_metric="value")
def chatty(ws, params):
    print("hello from the scorer")
    os.write(1, b"raw bytes on fd 1\\n")
    return Result(summary={"value": 1.0})


@register("vanishing", version="1.0.0", task_type="demo", description="kills its interpreter",
          expected_files=(), primary_metric="value")
def vanishing(ws, params):
    os._exit(3)
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    plugin = tmp_path / "plugins.py"
    plugin.write_text(PLUGIN, encoding="utf-8")
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    (ws / "meta.json").write_text(json.dumps({"scorer": "sleepy"}))
    config = tmp_path / "settings.yaml"
    config.write_text("scorer:\n  time_limit: 2\n")
    return plugin, ws, config


def test_score_stops_at_the_scorer_time_limit(setup, capsys):
    plugin, ws, config = setup
    started = time.monotonic()
    code = main(["score", str(ws), "--plugin", str(plugin), "--config", str(config), "--json"])
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()

    assert code == 1
    error = json.loads(out)["error"]
    assert (error["code"], error["stage"], error["fault"]) == (
        "SCORE_TIMEOUT",
        "scoring",
        "organiser",
    )
    assert "2s" in error["message"]
    assert elapsed < 30
    assert json.loads((ws / "output" / "result.json").read_text())["error"]["code"] == (
        "SCORE_TIMEOUT"
    )
    assert "Traceback" not in err


def test_scorers_test_honours_the_time_limit_too(setup, capsys):
    plugin, ws, config = setup
    code = main(
        ["scorers", "test", "sleepy", str(ws), "--plugin", str(plugin), "--config", str(config)]
    )
    _, err = capsys.readouterr()
    assert code == 1 and err.startswith("error SCORE_TIMEOUT")
    assert not (ws / "output" / "result.json").exists()  # scorers test never writes


@pytest.mark.parametrize(("scorer", "words"), [("crashing", "RuntimeError"), ("vanishing", "died")])
def test_a_crashing_scorer_is_one_standard_error_line(setup, scorer, words):
    """As a user sees it: a separate process, its whole stderr (the worker's included)."""
    plugin, ws, _ = setup
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "score",
            str(ws),
            "--scorer",
            scorer,
            "--plugin",
            str(plugin),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0].startswith("error SCORE_ERROR (scoring, organiser fault): "), done.stderr
    assert words in lines[0]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_debug_shows_the_scorer_traceback(setup):
    plugin, ws, _ = setup
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "score",
            str(ws),
            "--scorer",
            "crashing",
            "--plugin",
            str(plugin),
            "--debug",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "division by zero" in done.stderr
    assert "error SCORE_ERROR" in done.stderr
    assert '  exception: "RuntimeError"' in done.stderr  # --debug shows the details too


def test_a_scorer_printing_to_stdout_cannot_break_the_json_output(setup):
    plugin, ws, _ = setup
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "score",
            str(ws),
            "--scorer",
            "chatty",
            "--plugin",
            str(plugin),
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["data"]["summary"] == {"value": 1.0}
    assert "hello from the scorer" in done.stderr and "raw bytes on fd 1" in done.stderr
