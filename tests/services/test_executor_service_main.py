"""The composition roots start as processes and stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


async def _serve_then_stop(module: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while "serving" not in (line := (await process.stderr.readline()).decode()):
                assert line, "".join(seen)
                seen.append(line)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            rest = await process.stderr.read()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return code, "".join(seen) + rest.decode()


@pytest.mark.parametrize("module", ["services.executor.main", "services.scorer.main"])
async def test_the_service_process_serves_until_sigterm(module, tmp_path):
    env = {"AUTOSCORER__SCORER__PLUGIN_DIR": str(tmp_path / "plugins")}
    code, log = await _serve_then_stop(module, tmp_path, env)
    assert code == 0, log
    assert "Traceback" not in log
