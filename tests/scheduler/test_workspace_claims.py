"""One active job per workspace (issue 7, class 5) where the scheduler admits jobs: a platform's
``JobSubmitted`` claims its workspace in the store, a finished job releases it, and a re-score
claims it again. Memory bus + SQLite store (the store's claims are tested on FerretDB too, in
tests/shared/test_store_contract.py).
"""

from __future__ import annotations

from shared.errors import ErrorCode, Stage
from shared.events import CancelRequested, JobFailed, JobSubmitted
from shared.jobs import JobStatus
from shared.store import TransitionOutcome
from tests.scheduler.fakes import eventually
from tests.scheduler.rig import Rig, submitted

S = JobStatus
SHARED = "/ws/shared"


def on_shared(job_id: str) -> JobSubmitted:
    return submitted(job_id).model_copy(update={"workspace": SHARED})


async def test_a_second_platform_job_on_an_active_workspace_is_refused(rig: Rig) -> None:
    rig.scorer.ignore = {"job-first"}  # stays in scoring: active
    await rig.bus.publish(on_shared("job-first"))
    await rig.wait_status("job-first", S.SCORING)

    await rig.bus.publish(on_shared("job-second"))
    second = await rig.wait_status("job-second", S.FAILED)
    await eventually(lambda: rig.observer.of_type(JobFailed, "job-second"))

    assert second.error is not None
    assert (second.error.code, second.error.stage) == (ErrorCode.INVALID_STATE, Stage.VALIDATION)
    assert "job-first" not in second.error.message  # another tenant's job is not named
    assert (await rig.job("job-first")).status is S.SCORING
    assert [r.job_id for r in rig.executor.requests] == ["job-first"]


async def test_a_finished_job_frees_its_workspace_for_the_next(rig: Rig) -> None:
    rig.scorer.ignore = {"job-first"}
    await rig.bus.publish(on_shared("job-first"))
    await rig.wait_status("job-first", S.SCORING)
    await rig.bus.publish(CancelRequested(job_id="job-first", requested_by="alice"))
    await rig.wait_status("job-first", S.CANCELLED)

    await rig.bus.publish(on_shared("job-next"))

    await rig.wait_status("job-next", S.SUCCEEDED)
    assert await rig.store.claim_workspace(SHARED, "job-later") == "job-later"  # released


async def test_a_rescore_waits_for_the_workspace_to_be_free(rig: Rig) -> None:
    await rig.bus.publish(on_shared("job-done"))
    await rig.wait_status("job-done", S.SUCCEEDED)
    rig.scorer.ignore = {"job-busy"}
    await rig.bus.publish(on_shared("job-busy"))
    await rig.wait_status("job-busy", S.SCORING)

    refused = await rig.scheduler.request_rescore("job-done", reason="while busy")
    await rig.bus.publish(CancelRequested(job_id="job-busy", requested_by="alice"))
    await rig.wait_status("job-busy", S.CANCELLED)
    rescored = await rig.scheduler.request_rescore("job-done", reason="now")

    assert refused.outcome is TransitionOutcome.STATE_MISMATCH
    assert refused.job.status is S.SUCCEEDED
    assert rescored.applied
    await rig.wait_status("job-done", S.SUCCEEDED)
    assert (await rig.job("job-done")).scoring_round() == 2
