"""Scoring workers never outlive their parent, even one killed with SIGKILL.

A parent process (a scorer service's pool, or the CLI's one-shot worker) is SIGKILLed with real
workers running; the workers must be gone within seconds: PR_SET_PDEATHSIG on Linux, and the
parent-pid watchdog that also works where prctl does not exist (tested on its own here).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

POOL_PARENT = """
import asyncio, sys
from services.scorer.pool import ScoringPool

async def main():
    pool = ScoringPool(2, 30.0)
    await pool.start()
    print(" ".join(str(slot.pid) for slot in pool._slots), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""

WATCHDOG_PARENT = """
import multiprocessing, os, time
from services.scorer import lifeline

if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=lifeline._watch_parent, args=(os.getpid(),), daemon=False)
    child.start()
    print(child.pid, flush=True)
    time.sleep(600)
"""

SLEEPY = """
import time

from shared.models import Result
from shared.scoring import register


@register("sleepy", version="1.0.0", task_type="demo", description="never finishes",
          expected_files=(), primary_metric="value")
def sleepy(ws, params):
    (ws.output_dir / "scoring.started").touch()
    time.sleep(600)
    return Result(summary={"value": 1.0})
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int], within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _start(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _kill_parent(parent: subprocess.Popen[str]) -> None:
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    assert parent.stdout is not None
    parent.stdout.close()


def _reap_leftovers(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_exit_when_the_service_is_sigkilled() -> None:
    parent = _start(POOL_PARENT)
    assert parent.stdout is not None
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(p) for p in workers)

    _kill_parent(parent)

    left = _wait_gone(workers)
    _reap_leftovers(left)
    assert left == [], f"pool workers {left} outlived their SIGKILLed parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_watchdog_alone_ends_an_orphan() -> None:
    """The portable fallback: no prctl armed, only the parent-pid watchdog."""
    parent = _start(WATCHDOG_PARENT)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)

    _kill_parent(parent)

    left = _wait_gone([child])
    _reap_leftovers(left)
    assert left == [], "the watchdog did not end the orphan"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cli_score_worker_exits_when_the_cli_is_sigkilled(tmp_path: Path) -> None:
    plugin = tmp_path / "sleepy.py"
    plugin.write_text(SLEEPY, encoding="utf-8")
    ws = tmp_path / "ws"
    (ws / "output").mkdir(parents=True)
    (ws / "meta.json").write_text(json.dumps({"scorer": "sleepy"}))
    cli = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "score", str(ws), "--plugin", str(plugin)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 60
    while not (ws / "output" / "scoring.started").exists():
        assert time.monotonic() < deadline and cli.poll() is None
        time.sleep(0.05)
    workers = [p for p in _children(cli.pid) if _alive(p)]
    assert workers

    _kill_parent(cli)

    left = _wait_gone(workers)
    _reap_leftovers(left)
    assert left == [], f"the CLI's scoring worker {left} outlived it"
