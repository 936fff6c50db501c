"""The local backend: a subprocess on this machine (explicitly not a sandbox)."""

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from services.executor.local import LocalConfig, LocalExecutor
from services.executor.registry import create_executor
from shared.errors import AutoscorerError, ErrorCode
from shared.models import JobSpec
from shared.workspace import Workspace

PY = sys.executable


def _job(
    tmp_path, code: str, *, time_limit: int = 30, expected=("pred.csv",)
) -> tuple[JobSpec, Workspace]:
    (tmp_path / "input" / "data").mkdir(parents=True)
    (tmp_path / "input" / "gt.csv").write_text("id,label\n1,secret\n")
    (tmp_path / "input" / "data" / "x.csv").write_text("id,x\n1,0.5\n")
    spec = JobSpec(
        job_id="job-local-1",
        scorer="classification_f1",
        time_limit=time_limit,
        container={"image": "unused", "cmd": [PY, "-c", code]},
        expected_outputs=list(expected),
    )
    (tmp_path / "meta.json").write_text(spec.model_dump_json())
    return spec, Workspace.at(tmp_path)


async def _run(spec, ws, **config):
    return await LocalExecutor(LocalConfig(**config)).run(spec, ws)


async def test_happy_path_sees_input_but_never_ground_truth(tmp_path):
    code = (
        "import os, pathlib\n"
        "seen = sorted(str(p) for p in pathlib.Path('input').rglob('*'))\n"
        "print('seen', seen)\n"
        "assert not os.path.exists('input/gt.csv')\n"
        "assert pathlib.Path('meta.json').is_file()\n"
        "open('output/pred.csv', 'w').write(open('input/data/x.csv').read())\n"
    )
    spec, ws = _job(tmp_path, code)
    outcome = await _run(spec, ws)
    assert outcome.error is None, outcome.error
    assert (outcome.status, outcome.exit_code, outcome.backend) == ("succeeded", 0, "local")
    assert (ws.output_dir / "pred.csv").read_text() == "id,x\n1,0.5\n"
    log = (ws.logs_dir / "container.log").read_text()
    assert "gt.csv" not in log and "x.csv" in log
    info = json.loads((ws.logs_dir / "run_info.json").read_text())
    assert info["status"] == "succeeded" and info["extra"]["sandbox"] is False


async def test_stale_output_is_cleared_before_the_run(tmp_path):
    spec, ws = _job(tmp_path, "pass")
    ws.output_dir.mkdir()
    (ws.output_dir / "pred.csv").write_text("stale")
    outcome = await _run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.OUTPUT_MISSING


async def test_time_limit_kills_the_whole_process_group(tmp_path):
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open('output/child.pid', 'w').write(str(child.pid))\n"
        "print('sleeping', flush=True)\n"
        "time.sleep(60)\n"
    )
    spec, ws = _job(tmp_path, code, time_limit=1)
    started = time.monotonic()
    outcome = await _run(spec, ws)
    assert time.monotonic() - started < 10
    assert outcome.error is not None and outcome.error.code is ErrorCode.TIMEOUT_ERROR
    assert outcome.timed_out and outcome.status == "failed"
    assert "sleeping" in outcome.error.details["log_tail"]
    child = int((ws.output_dir / "child.pid").read_text())
    await asyncio.sleep(0.2)
    assert _dead(child)


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for init to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


async def test_nonzero_exit_reports_log_tail(tmp_path):
    spec, ws = _job(
        tmp_path, "import sys\nprint('loading model')\nraise SystemExit('model file corrupt')"
    )
    outcome = await _run(spec, ws)
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.CONTAINER_EXIT_NONZERO
    assert outcome.error.details["exit_code"] == 1
    assert outcome.error.details["log_tail"][-1] == "model file corrupt"
    assert outcome.error.logs == "logs/container.log"


async def test_log_flood_is_capped_with_a_marker(tmp_path):
    code = (
        "import sys\n"
        "for _ in range(20000): sys.stdout.write('x' * 99 + '\\n')\n"
        "open('output/pred.csv','w')"
    )
    spec, ws = _job(tmp_path, code)
    outcome = await _run(spec, ws, log_cap_bytes=10_000)
    assert outcome.error is None
    assert outcome.log_truncated
    text = (ws.logs_dir / "container.log").read_text()
    assert len(text) < 10_300
    assert "log truncated" in text.splitlines()[-1]


async def test_output_cap_and_missing_output(tmp_path):
    spec, ws = _job(tmp_path, "open('output/pred.csv','w').write('x' * 5000)")
    outcome = await _run(spec, ws, output_cap_bytes=1000)
    assert outcome.error is not None and outcome.error.code is ErrorCode.OUTPUT_TOO_LARGE


async def test_missing_command_is_the_participants_clear_error(tmp_path):
    spec, ws = _job(tmp_path, "pass")
    spec = spec.model_copy(
        update={"container": spec.container.model_copy(update={"cmd": ["/no/such/prog"]})}
    )
    with pytest.raises(AutoscorerError) as err:
        await _run(spec, ws)
    assert err.value.code is ErrorCode.CONTAINER_FAILED  # the participant's, never retried
    assert not err.value.retryable


async def test_cancel_stops_the_run(tmp_path):
    spec, ws = _job(tmp_path, "import time\ntime.sleep(60)")
    executor = LocalExecutor(LocalConfig())
    task = asyncio.create_task(executor.run(spec, ws))
    await asyncio.sleep(0.5)
    assert await executor.cancel(spec.job_id) is True
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.status == "cancelled"
    assert outcome.error is not None and outcome.error.code is ErrorCode.CANCELLED
    assert await executor.cancel(spec.job_id) is False


def test_backend_registry_refuses_unknown_aliases_and_bad_config():
    with pytest.raises(AutoscorerError) as err:
        create_executor({"type": "podman"})
    assert err.value.code is ErrorCode.BACKEND_NOT_FOUND
    with pytest.raises(AutoscorerError) as err2:
        create_executor({"type": "local", "log_cap_bytes": -5})
    assert err2.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
    assert isinstance(create_executor({"type": "local"}), LocalExecutor)
