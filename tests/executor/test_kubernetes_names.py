"""Names, labels, PVC subPaths and image references of the Kubernetes executor (pure functions).

Nothing here talks to a cluster; no Kubernetes API server runs on these machines.
"""

from __future__ import annotations

import re

import pytest

from services.executor.kubernetes.names import (
    job_id_label,
    job_labels,
    job_name,
    job_selector,
    normalise_image,
    workspace_sub_path,
)
from shared.errors import AutoscorerError, ErrorCode

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


@pytest.mark.parametrize("job_id", ["job-1", "Job_With.Dots_AND_CAPS", "x" * 128, "__a__", "9"])
def test_job_name_is_a_dns_label(job_id: str) -> None:
    name = job_name(job_id)
    assert len(name) <= 63
    assert DNS_LABEL.match(name)


def test_job_names_differ_for_ids_that_sanitise_alike() -> None:
    assert job_name("a_b") != job_name("a.b")
    assert job_name("JOB") != job_name("job")


@pytest.mark.parametrize("job_id", ["job-1", "x" * 63, "x" * 64, "a_", "A.b-c_d"])
def test_job_id_label_is_a_valid_label_value(job_id: str) -> None:
    value = job_id_label(job_id)
    assert len(value) <= 63
    assert LABEL_VALUE.match(value)


def test_short_ids_are_their_own_label_and_long_ones_a_stable_hash() -> None:
    assert job_id_label("job-1") == "job-1"
    assert job_id_label("x" * 64) == job_id_label("x" * 64) != job_id_label("x" * 65)


def test_selector_matches_the_labels() -> None:
    labels = job_labels("job-1")
    for term in job_selector("job-1").split(","):
        key, _, value = term.partition("=")
        assert labels[key] == value


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("busybox", "busybox:latest"),
        ("busybox:1.36", "busybox:1.36"),
        ("ghcr.io/org/model", "ghcr.io/org/model:latest"),
        ("registry:5000/org/model", "registry:5000/org/model:latest"),
        ("registry:5000/org/model:v2", "registry:5000/org/model:v2"),
        ("org/model@sha256:" + "a" * 64, "org/model@sha256:" + "a" * 64),
        (" padded ", "padded:latest"),
    ],
)
def test_normalise_image(ref: str, expected: str) -> None:
    assert normalise_image(ref) == expected


def test_sub_path_is_the_path_below_the_mount_with_the_pvc_prefix() -> None:
    assert workspace_sub_path("/data/ws/2026/job-1", "/data/ws", "") == "2026/job-1"
    assert workspace_sub_path("/data/ws/job-1", "/data/ws", "tenants/a") == "tenants/a/job-1"


@pytest.mark.parametrize("local", ["/elsewhere/job-1", "/data/ws", "/data/wsx/job-1"])
def test_sub_path_outside_the_mount_is_workspace_invalid(local: str) -> None:
    with pytest.raises(AutoscorerError) as caught:
        workspace_sub_path(local, "/data/ws", "")
    assert caught.value.code is ErrorCode.WORKSPACE_INVALID
