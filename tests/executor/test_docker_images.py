"""Image resolution on a real engine: exact matching, pull failures, the allow-list."""

from __future__ import annotations

import pytest

from services.executor.docker.images import local_image
from shared.errors import AutoscorerError, ErrorCode
from tests.executor.conftest import BUSYBOX

pytestmark = pytest.mark.docker


async def test_references_match_exactly_never_by_id_prefix_or_other_tag(docker):
    image = await docker.images.inspect(BUSYBOX)
    resolved = await local_image(docker, BUSYBOX)
    assert resolved is not None and resolved.image_id == image["Id"]
    assert await local_image(docker, "autoscorer-test/busybox:latest") is None
    short_id = image["Id"].removeprefix("sha256:")[:12]
    assert await local_image(docker, short_id) is None  # the engine itself would accept this
    assert await local_image(docker, image["Id"]) is not None


async def test_untagged_reference_means_latest(make_executor, make_job):
    spec, ws = make_job(["true"], image="autoscorer-test/busybox")
    outcome = await make_executor(pull_policy="never").run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.IMAGE_NOT_PRESENT
    assert "autoscorer-test/busybox:latest" in outcome.error.message


async def test_unreachable_registry_is_a_retryable_pull_failure(make_executor, make_job):
    spec, ws = make_job(["true"], image="127.0.0.1:9/nobody/nothing:1")
    with pytest.raises(AutoscorerError) as caught:
        await make_executor(pull_policy="ifnotpresent").run(spec, ws)
    assert caught.value.code is ErrorCode.IMAGE_PULL_FAILED and caught.value.retryable


async def test_policy_always_pulls_even_when_present(make_executor, make_job):
    spec, ws = make_job(["true"])
    with pytest.raises(AutoscorerError) as caught:  # no registry here: the pull must be tried
        await make_executor(pull_policy="always").run(spec, ws)
    assert caught.value.code in (ErrorCode.IMAGE_PULL_FAILED, ErrorCode.IMAGE_NOT_FOUND)


async def test_images_off_the_allow_list_are_refused(make_executor, make_job):
    spec, ws = make_job(["true"])
    outcome = await make_executor(allowed_images=["python:*"]).run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.IMAGE_NOT_ALLOWED
    assert outcome.status == "failed"


async def test_gpu_job_on_an_executor_without_gpus_is_refused(make_executor, make_job):
    spec, ws = make_job(["true"], resources={"gpus": 1})
    outcome = await make_executor().run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.CONFIG_VALIDATION_ERROR
