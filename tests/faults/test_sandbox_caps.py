"""Issue 7, class 6: the job must not loosen the sandbox (CONVENTIONS item 15).

Operator caps (``settings.limits``, ``shared.limits.SandboxLimits``) refuse a spec asking for
more memory, CPU, ``/dev/shm``, time or GPUs with ``RESOURCE_LIMIT_EXCEEDED`` on every backend:
the local backend and the Docker backend for real (a real engine, no mocks), the Kubernetes
backend through the HTTP-level fake of tests/executor/k8s_fake.py reached by the real
kubernetes-asyncio client — there the refusal is shown on the manifest path: no Job is ever
POSTed. ``ground_truth: []`` still hides ``gt.csv``; ``/tmp`` is noexec and the ulimits (nofile,
core 0, fsize) hold inside a real container and in the local backend's child process.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.executor.local import LocalConfig, LocalExecutor
from services.executor.main import create_executor_service
from services.executor.registry import create_executor
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import Settings, backend_config
from shared.errors import AutoscorerError, ErrorCode, Fault, Stage
from shared.events import Event, RunCompleted, RunRequested
from shared.limits import SandboxLimits, check_within_caps
from shared.models import JobSpec, RunOutcome
from shared.workspace import Workspace
from tests.executor.conftest import (  # the Docker fixtures, shared with tests/executor
    BUSYBOX,
    PYTHON,
    docker,
    instance,
    make_executor,
    make_job,
)
from tests.executor.k8s_fake import FakeCluster, executor_settings, serve

__all__ = ["docker", "instance", "make_executor", "make_job"]  # fixtures used by name

PY = sys.executable

# One spec per cap, each over the default caps (16Gi, 8 CPU, 2Gi shm, 24 h, 8 GPUs) and each
# accepted by the JobSpec schema: only the operator's caps stand between them and the engine.
OVER_CAPS: list[tuple[str, dict[str, Any]]] = [
    ("resources.memory", {"resources": {"cpu": 1, "memory": "1000Ti"}}),
    ("resources.cpu", {"resources": {"cpu": 256, "memory": "256Mi"}}),
    ("container.shm_size", {"shm_size": "500Gi"}),
    ("time_limit", {"time_limit": 3 * 24 * 3600}),
    ("resources.gpus", {"resources": {"cpu": 1, "memory": "256Mi", "gpus": 64}}),
]
CAP_IDS = [field for field, _ in OVER_CAPS]


def over_cap_spec(overrides: dict[str, Any], *, cmd: list[str], image: str = BUSYBOX) -> JobSpec:
    body: dict[str, Any] = {
        "job_id": f"job-{uuid.uuid4().hex[:12]}",
        "scorer": "classification_f1",
        "time_limit": 60,
        "resources": {"cpu": 1, "memory": "256Mi"},
        "container": {"image": image, "cmd": cmd},
    }
    shm = overrides.pop("shm_size", None)
    body.update(overrides)
    if shm is not None:
        body["container"]["shm_size"] = shm
    return JobSpec.model_validate(body)


def workspace_for(root: Path, spec: JobSpec) -> Workspace:
    (root / "input").mkdir(parents=True)
    (root / "input" / "data.csv").write_text("id,x\n1,0.5\n")
    (root / "input" / "gt.csv").write_text("id,label\n1,SECRET\n")
    (root / "meta.json").write_text(spec.model_dump_json())
    return Workspace.at(root)


def assert_refused(error: AutoscorerError | Any, field: str) -> None:
    assert error.code is ErrorCode.RESOURCE_LIMIT_EXCEEDED
    assert error.stage is Stage.CONFIG
    assert error.fault is Fault.PARTICIPANT and error.retryable is False
    assert [item["field"] for item in error.details["exceeded"]] == [field]


# -- the shared check ------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "overrides"), OVER_CAPS, ids=CAP_IDS)
def test_check_within_caps_names_the_field_over_its_cap(field, overrides):
    spec = over_cap_spec(dict(overrides), cmd=["true"])
    with pytest.raises(AutoscorerError) as err:
        check_within_caps(spec, SandboxLimits())
    assert_refused(err.value, field)


def test_a_spec_at_the_caps_passes_and_every_excess_is_listed():
    at_caps = over_cap_spec(
        {
            "resources": {"cpu": 8, "memory": "16Gi", "gpus": 8},
            "time_limit": 24 * 3600,
            "shm_size": "2Gi",
        },
        cmd=["true"],
    )
    check_within_caps(at_caps, SandboxLimits())
    everything = over_cap_spec(
        {
            "resources": {"cpu": 9, "memory": "17Gi", "gpus": 9},
            "time_limit": 24 * 3600 + 1,
            "shm_size": "3Gi",
        },
        cmd=["true"],
    )
    with pytest.raises(AutoscorerError) as err:
        check_within_caps(everything, SandboxLimits())
    assert len(err.value.details["exceeded"]) == 5


# -- local backend ---------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "overrides"), OVER_CAPS, ids=CAP_IDS)
async def test_local_backend_refuses_each_cap_before_running(tmp_path, field, overrides):
    marker = tmp_path / "ran"
    spec = over_cap_spec(dict(overrides), cmd=[PY, "-c", f"open({str(marker)!r}, 'w')"])
    ws = workspace_for(tmp_path / "ws", spec)
    with pytest.raises(AutoscorerError) as err:
        await LocalExecutor(LocalConfig()).run(spec, ws)
    assert_refused(err.value, field)
    assert not marker.exists()
    assert not ws.participant_dir.exists()


async def test_caps_come_from_the_settings_and_a_backend_may_narrow_them(tmp_path):
    settings = Settings(
        limits={"max_memory": "1Gi"},
        executor={
            "backends": {
                "local": {"type": "local"},
                "tight": {"type": "local", "limits": {"max_cpu": 0.5}},
            }
        },
    )
    spec = over_cap_spec({"resources": {"cpu": 1, "memory": "2Gi"}}, cmd=[PY, "-c", "0"])
    ws = workspace_for(tmp_path / "ws", spec)
    executor = create_executor(backend_config(settings, "local"))
    with pytest.raises(AutoscorerError) as err:
        await executor.run(spec, ws)
    assert_refused(err.value, "resources.memory")
    tight = create_executor(backend_config(settings, "tight"))
    with pytest.raises(AutoscorerError) as err:
        await tight.run(spec, ws)
    assert {i["field"] for i in err.value.details["exceeded"]} == {
        "resources.memory",
        "resources.cpu",
    }


async def test_a_run_request_that_skipped_admission_is_refused_by_the_executor_service(
    tmp_path, no_leaked_tasks
):
    """A replayed or hand-published RunRequested never passed the gateway or the scheduler."""
    settings = Settings(limits={"max_memory": "1Gi"}, executor_service={"heartbeat_s": 0.1})
    bus = MemoryBus(drain_timeout=2.0)
    executor = create_executor(backend_config(settings, "local"))
    service = create_executor_service(settings, bus, executor, instance="caps")
    done: list[RunCompleted] = []

    async def observe(event: Event) -> None:
        if isinstance(event, RunCompleted):
            done.append(event)

    marker = tmp_path / "ran"
    spec = over_cap_spec(
        {"resources": {"cpu": 1, "memory": "1000Ti"}},
        cmd=[PY, "-c", f"open({str(marker)!r}, 'w')"],
    )
    ws = workspace_for(tmp_path / "ws", spec)
    await bus.subscribe(
        Subscription("observer", ["run.started", "run.heartbeat", "run.completed"], observe)
    )
    await service.start()
    await bus.start()
    try:
        await bus.publish(
            RunRequested(job_id=spec.job_id, backend="local", spec=spec, workspace=str(ws.root))
        )
        async with asyncio.timeout(20):
            while not done:
                await asyncio.sleep(0.02)
    finally:
        await service.close()
        await bus.close()
        await executor.close()
    [completed] = done
    assert completed.outcome.status == "failed" and completed.outcome.error is not None
    assert_refused(completed.outcome.error, "resources.memory")
    assert not marker.exists() and not bus.dead_letters


def local_job(tmp_path: Path, code: str, **fields: Any) -> tuple[JobSpec, Workspace]:
    spec = JobSpec.model_validate(
        {
            "job_id": "job-sandbox-local",
            "scorer": "classification_f1",
            "time_limit": 30,
            "container": {"image": "unused", "cmd": [PY, "-c", code]},
            **fields,
        }
    )
    return spec, workspace_for(tmp_path / "ws", spec)


async def test_local_ground_truth_stays_hidden_when_the_spec_lists_none(tmp_path):
    code = "import os; print('SEEN', sorted(os.listdir('input')))"
    spec, ws = local_job(tmp_path, code, ground_truth=[])
    (ws.input_dir / "secret_answers.csv").write_text("x\n")
    config = LocalConfig(limits=SandboxLimits(ground_truth=["gt.*", "secret*"]))
    outcome = await LocalExecutor(config).run(spec, ws)
    assert outcome.status == "succeeded", outcome.error
    assert "SEEN ['data.csv']" in (ws.logs_dir / "container.log").read_text()


async def test_a_spec_glob_written_from_the_workspace_root_hides_its_file(tmp_path):
    code = "import os; print('SEEN', sorted(os.listdir('input')))"
    spec, ws = local_job(tmp_path, code, ground_truth=["input/labels.csv"])
    (ws.input_dir / "labels.csv").write_text("id,label\n1,SECRET\n")
    outcome = await LocalExecutor(LocalConfig()).run(spec, ws)
    assert outcome.status == "succeeded", outcome.error
    assert "SEEN ['data.csv']" in (ws.logs_dir / "container.log").read_text()


RLIMITS = (
    "import resource as r\n"
    "print('LIMITS', [r.getrlimit(x) for x in (r.RLIMIT_NOFILE, r.RLIMIT_CORE, r.RLIMIT_FSIZE)])\n"
    "import errno, signal\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "try:\n"
    "    open('output/big', 'wb').write(b'x' * (2 * 1024 * 1024))\n"
    "except OSError as exc:\n"
    "    print('WRITE', errno.errorcode[exc.errno])\n"
)


async def test_local_child_gets_nofile_core_and_fsize_limits(tmp_path):
    spec, ws = local_job(tmp_path, RLIMITS)
    config = LocalConfig(limits=SandboxLimits(nofile=256, fsize="1Mi"))
    outcome = await LocalExecutor(config).run(spec, ws)
    log = (ws.logs_dir / "container.log").read_text()
    assert outcome.status == "succeeded", (outcome.error, log)
    mib = 1024 * 1024
    assert f"LIMITS [(256, 256), (0, 0), ({mib}, {mib})]" in log
    assert "WRITE EFBIG" in log
    assert (ws.output_dir / "big").stat().st_size == mib
    # the parent's own limits are untouched
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] != mib


# -- Docker backend (real engine) ------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.parametrize(("field", "overrides"), OVER_CAPS, ids=CAP_IDS)
async def test_docker_backend_refuses_each_cap_before_creating_a_container(
    make_executor, make_job, docker, instance, field, overrides
):
    overrides = dict(overrides)
    shm = overrides.pop("shm_size", None)
    spec, ws = make_job(["sh", "-c", "echo RAN"], **overrides)
    if shm is not None:
        spec = spec.model_copy(
            update={"container": spec.container.model_copy(update={"shm_size": shm})}
        )
    outcome = await make_executor(allow_gpus=True).run(spec, ws)
    assert outcome.status == "failed" and outcome.error is not None
    assert_refused(outcome.error, field)
    assert outcome.started_at is None and outcome.exit_code is None
    assert not (ws.logs_dir / "container.log").exists()
    recorded = RunOutcome.model_validate_json((ws.logs_dir / "run_info.json").read_text())
    assert recorded.error is not None and recorded.error.code is ErrorCode.RESOURCE_LIMIT_EXCEEDED


@pytest.mark.docker
async def test_docker_ground_truth_stays_hidden_when_the_spec_lists_none(make_executor, make_job):
    spec, ws = make_job(
        ["sh", "-c", "ls -a /workspace/input; cat /workspace/input/gt.csv"], ground_truth=[]
    )
    outcome = await make_executor().run(spec, ws)
    log = (ws.logs_dir / "container.log").read_text()
    assert outcome.error is not None and outcome.exit_code != 0, log
    assert "data.csv" in log and "SECRET" not in log
    assert "gt.csv': No such file" in log


NOEXEC = """
grep ' /tmp ' /proc/mounts
printf '#!/bin/sh\\necho RAN-FROM-TMP\\n' > /tmp/run.sh && chmod +x /tmp/run.sh
/tmp/run.sh; echo "script rc=$?"
cp /bin/busybox /tmp/bb 2>/dev/null || cp "$(command -v sh)" /tmp/bb
/tmp/bb echo RAN-BINARY-FROM-TMP; echo "binary rc=$?"
"""


@pytest.mark.docker
async def test_tmp_is_noexec_in_a_real_container(make_executor, make_job):
    spec, ws = make_job(["sh", "-c", NOEXEC])
    outcome = await make_executor().run(spec, ws)
    log = (ws.logs_dir / "container.log").read_text()
    assert outcome.status == "succeeded", (outcome.error, log)
    mount = next(line for line in log.splitlines() if " /tmp " in line)
    assert {"noexec", "nosuid", "nodev"} <= set(mount.split()[3].split(","))
    assert "RAN-FROM-TMP" not in log and "RAN-BINARY-FROM-TMP" not in log
    assert "script rc=126" in log and "binary rc=126" in log
    assert "Permission denied" in log


ULIMITS = """
echo "nofile=$(ulimit -n) core=$(ulimit -c) fsize-blocks=$(ulimit -f)"
python3 - <<'EOF'
import errno, resource as r, signal
print('LIMITS', [r.getrlimit(x) for x in (r.RLIMIT_NOFILE, r.RLIMIT_CORE, r.RLIMIT_FSIZE)])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
try:
    open('/tmp/big', 'wb').write(b'x' * (3 * 1024 * 1024))
except OSError as exc:
    print('WRITE', errno.errorcode[exc.errno])
EOF
"""


@pytest.mark.docker
async def test_ulimits_are_visible_and_hold_inside_the_container(make_executor, make_job):
    spec, ws = make_job(["sh", "-c", ULIMITS], image=PYTHON)
    limits = SandboxLimits(nofile=512, fsize="2Mi")
    outcome = await make_executor(limits=limits.model_dump()).run(spec, ws)
    log = (ws.logs_dir / "container.log").read_text()
    assert outcome.status == "succeeded", (outcome.error, log)
    two_mib = 2 * 1024 * 1024
    assert f"nofile=512 core=0 fsize-blocks={two_mib // 512}" in log  # sh counts 512-byte blocks
    assert f"LIMITS [(512, 512), (0, 0), ({two_mib}, {two_mib})]" in log
    assert "WRITE EFBIG" in log


@pytest.mark.docker
async def test_default_ulimits_reach_the_container(make_executor, make_job):
    spec, ws = make_job(["sh", "-c", "echo nofile=$(ulimit -n) core=$(ulimit -c)"])
    outcome = await make_executor().run(spec, ws)
    log = (ws.logs_dir / "container.log").read_text()
    assert outcome.status == "succeeded", (outcome.error, log)
    assert f"nofile={SandboxLimits().nofile} core=0" in log


# -- Kubernetes backend (the HTTP-level fake; the manifest path) ------------------------------


@pytest.fixture
async def k8s(tmp_path: Path) -> AsyncIterator[tuple[FakeCluster, Any, Path]]:
    cluster = FakeCluster()
    root = tmp_path / "pvc"
    async with serve(cluster) as url:
        executor = create_executor(executor_settings(url, str(root), allow_gpus=True))
        try:
            yield cluster, executor, root
        finally:
            await executor.close()


@pytest.mark.parametrize(("field", "overrides"), OVER_CAPS, ids=CAP_IDS)
async def test_kubernetes_backend_refuses_each_cap_before_posting_a_job(k8s, field, overrides):
    cluster, executor, root = k8s
    spec = over_cap_spec(dict(overrides), cmd=["python", "run.py"], image="ghcr.io/team/m")
    ws = workspace_for(root / spec.job_id, spec)
    outcome = await executor.run(spec, ws)
    assert outcome.status == "failed" and outcome.error is not None
    assert_refused(outcome.error, field)
    assert cluster.created == [] and cluster.calls("POST", "/jobs") == []
    info = json.loads((ws.logs_dir / "run_info.json").read_text())
    assert info["error"]["code"] == "RESOURCE_LIMIT_EXCEEDED"


async def test_kubernetes_ground_truth_stays_hidden_when_the_spec_lists_none(k8s):
    cluster, executor, root = k8s
    spec = over_cap_spec({"ground_truth": []}, cmd=["python", "run.py"], image="ghcr.io/team/m")
    ws = workspace_for(root / spec.job_id, spec)
    outcome = await executor.run(spec, ws)
    assert outcome.status == "succeeded", outcome.error
    assert sorted(p.name for p in (ws.participant_dir / "input").iterdir()) == ["data.csv"]
    (manifest,) = cluster.created
    mounts = manifest["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    source = {m["mountPath"]: m.get("subPath") for m in mounts}["/workspace/input"]
    assert source.endswith(".autoscorer/participant/input")


async def test_kubernetes_manifest_of_a_spec_at_the_caps_stays_within_them(k8s):
    cluster, executor, root = k8s
    at_caps = {
        "resources": {"cpu": 8, "memory": "16Gi", "gpus": 8},
        "time_limit": 24 * 3600,
        "shm_size": "2Gi",
    }
    spec = over_cap_spec(at_caps, cmd=["python", "run.py"], image="ghcr.io/team/m")
    ws = workspace_for(root / spec.job_id, spec)
    outcome = await executor.run(spec, ws)
    assert outcome.status == "succeeded", outcome.error
    (manifest,) = cluster.created
    caps = SandboxLimits()
    pod = manifest["spec"]["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert int(limits["memory"]) == caps.max_memory_bytes
    assert limits["cpu"] == "8000m" and limits["nvidia.com/gpu"] == "8"
    assert manifest["spec"]["activeDeadlineSeconds"] == caps.max_time_limit_s
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert int(shm["emptyDir"]["sizeLimit"]) == caps.max_shm_bytes
