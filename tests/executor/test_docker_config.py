"""Docker executor settings, image references and the job policy checks (no engine needed)."""

from __future__ import annotations

import pytest

from services.executor.docker.config import DockerConfig
from services.executor.docker.images import check_allowed, normalise
from services.executor.docker.sandbox import SandboxPaths, check_policy, create_body
from services.executor.registry import create_executor, validate_backend_config
from shared.errors import AutoscorerError, ErrorCode
from shared.models import JobSpec


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("busybox", "busybox:latest"),
        ("busybox:1.36", "busybox:1.36"),
        ("docker.io/library/python:3.11", "python:3.11"),
        ("docker.io/team/model", "team/model:latest"),
        ("localhost:5000/team/model", "localhost:5000/team/model:latest"),
        ("localhost:5000/team/model:v2", "localhost:5000/team/model:v2"),
        ("python@sha256:" + "a" * 64, "python@sha256:" + "a" * 64),
        ("  ghcr.io/org/img:tag ", "ghcr.io/org/img:tag"),
    ],
)
def test_references_are_normalised_to_repo_tag(given, expected):
    assert normalise(given) == expected


def test_allow_list_matches_normalised_references():
    check_allowed("python:3.11", None)
    check_allowed("autoscorer-test/busybox:1", ["autoscorer-test/*", "python:3.*"])
    with pytest.raises(AutoscorerError) as caught:
        check_allowed("evil/miner:latest", ["autoscorer-test/*"])
    assert caught.value.code is ErrorCode.IMAGE_NOT_ALLOWED


@pytest.mark.parametrize(
    "source",
    ["/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run", "/", "/tmp/docker.sock"],
)
def test_mounting_the_docker_socket_is_refused(source):
    config = {"type": "docker", "extra_mounts": [{"source": source, "target": "/x"}]}
    with pytest.raises(AutoscorerError) as caught:
        validate_backend_config(config)
    assert caught.value.code is ErrorCode.CONFIG_VALIDATION_ERROR


@pytest.mark.parametrize("user", ["0", "0:0", "1000:0", "root", "nobody"])
def test_participants_never_run_as_root_or_by_name(user):
    with pytest.raises(AutoscorerError):
        validate_backend_config({"type": "docker", "user": user})


def test_unknown_settings_are_rejected_and_defaults_are_locked_down():
    with pytest.raises(AutoscorerError):
        validate_backend_config({"type": "docker", "privileged": True})
    config = DockerConfig()
    assert (config.network, config.user, config.allow_gpus, config.pull_policy) == (
        "none",
        "65534:65534",
        False,
        "ifnotpresent",
    )


def _spec(**container) -> JobSpec:
    return JobSpec(
        scorer="x",
        container={"image": "busybox", **container},
        resources={"cpu": 1.5, "memory": "300Mi"},
    )


def test_create_body_is_a_locked_down_sandbox(tmp_path):
    paths = SandboxPaths(tmp_path / "in", tmp_path / "meta.json", tmp_path / "out")
    spec = _spec(cmd=["true"], env={"SEED": "1", "TOKEN": "job"})
    body = create_body(spec, DockerConfig(env={"TOKEN": "operator"}), "sha256:abc", paths)
    host = body["HostConfig"]
    assert body["Image"] == "sha256:abc" and body["User"] == "65534:65534"
    assert sorted(body["Env"]) == ["SEED=1", "TOKEN=operator"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Memory"] == host["MemorySwap"] == 300 * 1024**2
    assert host["NanoCpus"] == 1_500_000_000 and host["PidsLimit"] == 256
    assert "DeviceRequests" not in host and host["Privileged"] is False
    targets = {m["Target"]: m["ReadOnly"] for m in host["Mounts"]}
    assert targets == {
        "/workspace/input": True,
        "/workspace/meta.json": True,
        "/workspace/output": False,
    }
    assert not any("docker.sock" in m["Source"] for m in host["Mounts"])


def test_gpus_need_both_the_job_and_the_config(tmp_path):
    spec = JobSpec(scorer="x", container={"image": "busybox"}, resources={"gpus": 2})
    with pytest.raises(AutoscorerError) as caught:
        check_policy(spec, DockerConfig())
    assert caught.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
    check_policy(spec, DockerConfig(allow_gpus=True))
    paths = SandboxPaths(tmp_path, tmp_path, tmp_path)
    body = create_body(spec, DockerConfig(allow_gpus=True), "sha256:abc", paths)
    assert body["HostConfig"]["DeviceRequests"] == [
        {"Driver": "", "Count": 2, "Capabilities": [["gpu"]]}
    ]


def test_a_job_cannot_loosen_the_network():
    with pytest.raises(AutoscorerError) as caught:
        check_policy(_spec(network_policy="host"), DockerConfig())
    assert caught.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
    check_policy(_spec(network_policy="host"), DockerConfig(network="host"))


def test_the_registry_builds_the_docker_backend():
    executor = create_executor({"type": "docker", "pids_limit": 64})
    assert executor.name == "docker"
