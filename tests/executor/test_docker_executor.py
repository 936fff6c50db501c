"""The Docker executor on a real engine: the happy path, outputs, images, cancel and cleanup."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sys
import uuid
from pathlib import Path

import aiodocker
import pytest

from services.executor.docker.sandbox import LABEL_EXECUTOR, LABEL_INSTANCE, LABEL_JOB
from shared.errors import AutoscorerError, ErrorCode
from tests.executor.conftest import BUSYBOX, PYTHON, labelled_containers

pytestmark = pytest.mark.docker

PREDICT = """
import os, numpy as np
data = np.loadtxt("input/data.csv", delimiter=",", skiprows=1)
print("uid", os.getuid(), "gid", os.getgid(), "cwd", os.getcwd())
print("input", sorted(os.listdir("input")))
np.savetxt("output/pred.csv", np.c_[data[:, 0], data[:, 1] * 2], delimiter=",", fmt="%g",
           header="id,label", comments="")
"""


async def test_happy_path_reads_input_and_writes_prediction(make_executor, make_job):
    spec, ws = make_job(["python3", "-c", PREDICT], image=PYTHON, expected_outputs=["pred.csv"])
    outcome = await make_executor().run(spec, ws)
    assert outcome.error is None, outcome.error
    assert (outcome.status, outcome.exit_code, outcome.backend) == ("succeeded", 0, "docker")
    pred = ws.output_dir / "pred.csv"
    assert pred.read_text() == "id,label\n1,1\n2,3\n3,5\n"
    assert pred.stat().st_uid == os.getuid() and pred.stat().st_mode & 0o044 == 0o044
    log = (ws.logs_dir / "container.log").read_text()
    assert "uid 65534 gid 65534 cwd /workspace" in log
    assert "input ['data.csv']" in log
    info = json.loads((ws.logs_dir / "run_info.json").read_text())
    assert info["status"] == "succeeded" and info["image"] == PYTHON
    assert info["image_id"].startswith("sha256:") and info["duration_s"] > 0
    assert not (ws.logs_dir / "inspect.json").exists()


async def test_missing_expected_output_is_reported(make_executor, make_job):
    spec, ws = make_job(["true"])
    ws.output_dir.mkdir()
    (ws.output_dir / "pred.csv").write_text("stale, from an earlier run\n")
    outcome = await make_executor().run(spec, ws, expected_outputs=["pred.csv"])
    assert outcome.error is not None and outcome.error.code is ErrorCode.OUTPUT_MISSING
    assert outcome.error.details["missing"] == ["pred.csv"]
    assert (ws.logs_dir / "inspect.json").is_file()


async def test_non_zero_exit_carries_the_last_log_lines(make_executor, make_job):
    script = "for i in 1 2 3 4 5; do echo line-$i; done; echo boom >&2; exit 3"
    spec, ws = make_job(["sh", "-c", script])
    outcome = await make_executor(env={"API_TOKEN": "s3cret"}).run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.CONTAINER_EXIT_NONZERO
    assert outcome.exit_code == 3
    tail = outcome.error.details["log_tail"].splitlines()  # stdout and stderr interleave freely
    assert sorted(tail) == ["boom", "line-1", "line-2", "line-3", "line-4", "line-5"]
    inspect = json.loads((ws.logs_dir / "inspect.json").read_text())
    assert inspect["State"]["ExitCode"] == 3
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    assert "API_TOKEN=***" in inspect["Config"]["Env"]  # operator secrets never reach logs/
    assert "s3cret" not in (ws.logs_dir / "inspect.json").read_text()


async def test_concurrent_jobs_run_side_by_side(make_executor, make_job):
    executor = make_executor()
    jobs = [make_job(["sh", "-c", f"sleep 2; echo {i} > output/pred.csv"]) for i in range(3)]
    start = asyncio.get_running_loop().time()
    outcomes = await asyncio.gather(*(executor.run(spec, ws) for spec, ws in jobs))
    assert asyncio.get_running_loop().time() - start < 5.5  # one after another takes >= 6 s
    assert [o.status for o in outcomes] == ["succeeded"] * 3
    assert [(ws.output_dir / "pred.csv").read_text() for _, ws in jobs] == ["0\n", "1\n", "2\n"]


async def test_a_program_that_cannot_start_is_the_participants_failure(make_executor, make_job):
    spec, ws = make_job(["/no/such/program"])
    outcome = await make_executor().run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.CONTAINER_FAILED
    assert outcome.error.fault == "participant"


async def test_the_log_keeps_what_the_engine_recorded(make_executor, make_job):
    spec, ws = make_job(["sh", "-c", r"printf 'caf\303\251 \377\376 end\n'"])
    outcome = await make_executor().run(spec, ws)
    assert outcome.status == "succeeded", outcome.error
    # UTF-8 kept as is; the engine's json-file driver itself turns invalid bytes into U+FFFD
    assert (ws.logs_dir / "container.log").read_text() == "café \ufffd\ufffd end\n"


async def test_symlinks_in_output_are_not_followed(make_executor, make_job):
    script = "ln -s /etc/passwd output/pred.csv; ln -s / output/root; echo ok > output/real.txt"
    spec, ws = make_job(["sh", "-c", script])
    outcome = await make_executor().run(spec, ws)
    assert outcome.status == "succeeded", outcome.error
    assert sorted(p.name for p in ws.output_dir.iterdir()) == ["real.txt"]
    assert len(outcome.extra["output_skipped"]) == 2


@pytest.mark.parametrize("archive", ["image.tar", "image.tar.gz"])
async def test_shipped_image_archive_is_loaded_instead_of_pulled(
    make_executor, make_job, docker: aiodocker.Docker, archive
):
    shipped = f"autoscorer-test/shipped:{uuid.uuid4().hex[:8]}"
    repo, tag = shipped.split(":")
    await docker.images.tag(BUSYBOX, repo, tag=tag)
    spec, ws = make_job(["sh", "-c", "echo from-archive > output/pred.csv"], image=shipped)
    try:
        await _export(docker, shipped, ws.root / archive)
    finally:
        await docker.images.delete(shipped)
    try:
        outcome = await make_executor(pull_policy="never").run(spec, ws)
        busybox = await docker.images.inspect(BUSYBOX)
    finally:
        await docker.images.delete(shipped)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.image == shipped and outcome.image_id == busybox["Id"]
    assert (ws.output_dir / "pred.csv").read_text() == "from-archive\n"


async def _export(docker: aiodocker.Docker, name: str, path) -> None:
    chunks = []
    async with docker.images.export_image(name) as stream:
        while chunk := await stream.read(1 << 20):
            chunks.append(chunk)
    data = b"".join(chunks)
    if path.name.endswith(".gz"):
        data = await asyncio.to_thread(gzip.compress, data, 1)
    await asyncio.to_thread(path.write_bytes, data)


async def test_corrupt_image_archive_is_a_load_failure(make_executor, make_job):
    spec, ws = make_job(["true"], image="autoscorer-test/never-there:1")
    (ws.root / "image.tar").write_bytes(b"not a tar archive at all" * 100)
    outcome = await make_executor().run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.IMAGE_LOAD_FAILED


async def _container_of(docker: aiodocker.Docker, job_id: str) -> None:
    filters = {"label": [f"{LABEL_JOB}={job_id}"], "status": ["running"]}
    while not await docker.containers.list(filters=filters):
        await asyncio.sleep(0.05)


async def test_cancel_kills_and_removes_the_container(make_executor, make_job, docker):
    spec, ws = make_job(["sleep", "120"])
    executor = make_executor()
    task = asyncio.create_task(executor.run(spec, ws))
    await asyncio.wait_for(_container_of(docker, spec.job_id), 30)
    assert await executor.cancel(spec.job_id) is True
    outcome = await asyncio.wait_for(task, 30)
    assert outcome.status == "cancelled"
    assert outcome.error is not None and outcome.error.code is ErrorCode.CANCELLED
    assert await executor.cancel(spec.job_id) is False


async def test_cancel_before_the_container_starts(make_executor, make_job):
    spec, ws = make_job(["sh", "-c", "echo started; sleep 120"])
    executor = make_executor()
    task = asyncio.create_task(executor.run(spec, ws))
    await asyncio.sleep(0)  # the run has registered the job but created nothing yet
    assert await executor.cancel(spec.job_id) is True
    outcome = await asyncio.wait_for(task, 30)
    assert outcome.status == "cancelled" and outcome.exit_code is None
    assert "started" not in (ws.logs_dir / "container.log").read_text()


async def test_cancelled_run_task_still_removes_its_container(
    make_executor, make_job, docker, instance
):
    spec, ws = make_job(["sleep", "120"])
    task = asyncio.create_task(make_executor().run(spec, ws))
    await asyncio.wait_for(_container_of(docker, spec.job_id), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await labelled_containers(docker, instance) == []
    assert not os.path.ismount(ws.private_dir / "docker-output")


async def _labelled_container(docker, job_id: str, instance: str, cmd: list[str]) -> str:
    """A container as a crashed executor of ``instance`` would have left it."""
    body = {
        "Image": BUSYBOX,
        "Cmd": cmd,
        "HostConfig": {"NetworkMode": "none"},
        "Labels": {LABEL_EXECUTOR: "docker", LABEL_JOB: job_id, LABEL_INSTANCE: instance},
    }
    container = await docker.containers.create(body)
    await container.start()
    return container.id


async def test_cleanup_leftovers_removes_only_containers_of_dead_jobs(
    make_executor, docker, instance
):
    dead = await _labelled_container(docker, "job-dead", instance, ["sleep", "60"])
    live = await _labelled_container(docker, "job-live", instance, ["sleep", "60"])
    executor = make_executor()
    try:
        assert await executor.cleanup_leftovers({"job-live"}) == 1
        remaining = [c["Id"] for c in await labelled_containers(docker, instance)]
        assert remaining == [live] and dead not in remaining
    finally:
        await docker.containers.container(live).delete(force=True)
    assert await executor.cleanup_leftovers(set()) == 0


async def test_cleanup_leftovers_of_an_instance_spares_other_instances(
    make_executor, docker, instance
):
    other = f"{instance}-other"
    await _labelled_container(docker, "job-a", instance, ["true"])
    kept = await _labelled_container(docker, "job-b", other, ["true"])
    try:
        assert await make_executor().cleanup_leftovers(()) == 1
        assert [c["Id"] for c in await labelled_containers(docker, other)] == [kept]
    finally:
        await docker.containers.container(kept).delete(force=True)


async def test_unreachable_engine_is_a_retryable_platform_error(make_executor, make_job):
    spec, ws = make_job(["true"])
    executor = make_executor(docker_host="unix:///nonexistent/docker.sock")
    with pytest.raises(AutoscorerError) as caught:
        await executor.run(spec, ws)
    assert caught.value.code is ErrorCode.BACKEND_UNAVAILABLE and caught.value.retryable
    info = json.loads((ws.logs_dir / "run_info.json").read_text())
    assert info["error"]["code"] == "BACKEND_UNAVAILABLE"


CRASHING_EXECUTOR = """
import asyncio, sys
from services.executor.docker.backend import DockerExecutor
from services.executor.docker.config import DockerConfig
from shared.workspace import Workspace
ws = Workspace.at(sys.argv[1])
config = DockerConfig(pull_policy="never", instance=sys.argv[2])
asyncio.run(DockerExecutor(config).run(ws.load_spec(), ws))
"""


async def test_cleanup_leftovers_after_an_executor_crash(make_executor, make_job, docker, instance):
    spec, ws = make_job(["sleep", "120"])
    argv = [sys.executable, "-c", CRASHING_EXECUTOR, str(ws.root), instance]
    proc = await asyncio.create_subprocess_exec(*argv)
    try:
        await asyncio.wait_for(_container_of(docker, spec.job_id), 60)
    finally:
        proc.kill()  # SIGKILL: no finally block of the executor runs
        await proc.wait()
    mount = ws.private_dir / "docker-output"
    running = await labelled_containers(docker, instance)
    assert [c["Labels"][LABEL_JOB] for c in running] == [spec.job_id]
    assert os.path.ismount(mount)
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    line = next(ln for ln in mounts if str(mount) in ln)
    source, _, fstype, options = line.split()[:4]
    assert (source, fstype) == ("autoscorer-output", "tmpfs")
    assert {"nosuid", "nodev", "mode=700", "uid=65534", "size=524288k"} <= set(options.split(","))
    assert await make_executor().cleanup_leftovers({"some-other-live-job"}) == 1
    assert await labelled_containers(docker, instance) == []
    assert not os.path.ismount(mount)
