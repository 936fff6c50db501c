"""Backend choice: kubernetes when enabled, else docker, else whatever is enabled."""

from __future__ import annotations

import pytest

from services.scheduler.routing import Router
from shared.config import SchedulerSettings
from shared.errors import AutoscorerError, ErrorCode
from shared.models import JobSpec

SPEC = JobSpec(job_id="job-1", scorer="classification")


@pytest.mark.parametrize(
    ("enabled", "expected"),
    [
        (["docker", "kubernetes"], "kubernetes"),
        (["docker"], "docker"),
        (["local"], "local"),
        (["gpu-pool", "docker"], "docker"),
        (["gpu-pool"], "gpu-pool"),
    ],
)
def test_the_first_enabled_backend_in_order_wins(enabled: list[str], expected: str) -> None:
    router = Router.from_settings(SchedulerSettings(enabled_backends=enabled))

    assert router.route(SPEC) == expected


def test_the_default_is_the_embedded_local_backend() -> None:
    assert Router.from_settings(SchedulerSettings()).route(SPEC) == "local"


def test_an_alias_that_cannot_be_a_routing_key_word_is_a_config_error() -> None:
    with pytest.raises(AutoscorerError) as raised:
        Router.from_settings(SchedulerSettings(enabled_backends=["Docker.eu"]))

    assert raised.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
