"""Docker fixtures: the engine and test images come from ``scripts/provision/docker.sh``.

When the engine is absent the Docker tests fail (they never skip): the README's test command
provisions it. Every test gets its own executor ``instance`` label (other suites may run
executors on the same engine at the same time); every executor a test builds is closed
afterwards, and each test ends by asserting that the engine holds no container of its instance.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from services.executor.docker.backend import DockerExecutor
from services.executor.docker.config import DockerConfig
from services.executor.docker.sandbox import LABEL_EXECUTOR, LABEL_INSTANCE
from shared.models import JobSpec
from shared.workspace import Workspace

BUSYBOX = "autoscorer-test/busybox:1"
PYTHON = "autoscorer-test/python:3.11"

MakeExecutor = Callable[..., DockerExecutor]
MakeJob = Callable[..., tuple[JobSpec, Workspace]]


async def labelled_containers(docker: aiodocker.Docker, instance: str) -> list[dict[str, Any]]:
    """Containers (any state) of the Docker executor labelled with this ``instance``."""
    filters = {"label": [f"{LABEL_EXECUTOR}=docker", f"{LABEL_INSTANCE}={instance}"]}
    return [c._container for c in await docker.containers.list(all=True, filters=filters)]


@pytest.fixture
def instance() -> str:
    """This test's executor instance: its containers, and only those, are its business."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    """A raw engine client for assertions; fails with the fix when the engine is not running."""
    client = aiodocker.Docker()
    try:
        await client.version()
    except aiodocker.DockerError as exc:
        await client.close()
        pytest.fail(f"no Docker engine ({exc.message}); run scripts/provision/docker.sh as root")
    yield client
    await client.close()


@pytest.fixture
async def make_executor(docker: aiodocker.Docker, instance: str) -> AsyncIterator[MakeExecutor]:
    """Build executors with config overrides; afterwards no labelled container may remain."""
    built: list[DockerExecutor] = []

    def make(**config: Any) -> DockerExecutor:
        config.setdefault("pull_policy", "never")
        config.setdefault("instance", instance)
        executor = DockerExecutor(DockerConfig(**config))
        built.append(executor)
        return executor

    yield make
    for executor in built:
        await executor.close()
    leftovers = await labelled_containers(docker, instance)
    for item in leftovers:  # leave the engine clean for the next test, then fail this one
        await docker.containers.container(item["Id"]).delete(force=True)
    assert leftovers == [], f"containers left behind: {[c['Names'] for c in leftovers]}"


@pytest.fixture
def make_job(tmp_path: Path) -> MakeJob:
    """A workspace with input/data.csv, the ground truth input/gt.csv, and its meta.json."""

    def make(cmd: list[str], *, image: str = BUSYBOX, **fields: Any) -> tuple[JobSpec, Workspace]:
        root = tmp_path / f"ws-{uuid.uuid4().hex[:8]}"
        (root / "input").mkdir(parents=True)
        (root / "input" / "data.csv").write_text("id,x\n1,0.5\n2,1.5\n3,2.5\n")
        (root / "input" / "gt.csv").write_text("id,label\n1,SECRET\n2,SECRET\n3,SECRET\n")
        fields.setdefault("time_limit", 60)
        fields.setdefault("resources", {"cpu": 1, "memory": "256Mi"})
        spec = JobSpec(
            job_id=f"job-{uuid.uuid4().hex[:12]}",
            scorer="classification_f1",
            container={"image": image, "cmd": cmd},
            **fields,
        )
        (root / "meta.json").write_text(spec.model_dump_json())
        return spec, Workspace.at(root)

    return make
