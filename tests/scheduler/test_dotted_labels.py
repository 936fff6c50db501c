"""A classification job whose labels hold dots and dollars succeeds on the Mongo store (FerretDB).

Its result has per-class tables keyed by the labels (``"1.5"``, ``"cat.v2"``, ``"$x"``) and its
params keys with dots: FerretDB refuses such field names, and before the store encoded them the
``ScoreCompleted`` transition failed with ``STORE_ERROR`` on every delivery until the reaper
failed the job with ``DEADLINE_EXCEEDED``. The result here is the real classification scorer's.

The server comes from ``scripts/provision/ferretdb.sh`` (or ``AUTOSCORER_TEST_MONGO_URL``); the
test has its own database, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from services.scorer.builtin.classification import classification_f1
from shared.events import Event, JobSubmitted, ScoreCompleted, ScoreRequested, derived_event_id
from shared.jobs import JobStatus
from shared.models import ContainerSpec, JobSpec, Result
from shared.workspace import Workspace
from tests.scheduler.fakes import FakeScorer, eventually
from tests.scheduler.real import Names, real_scheduler_rig
from tests.scheduler.rig import Rig, eventually_async, scheduler_settings

pytestmark = pytest.mark.mongo

LABELS = ["1.5", "cat.v2", "$x", "a.b.c", "$"]


@dataclass
class LabelledScorer(FakeScorer):
    """Answers every ``ScoreRequested`` with one given result."""

    result: Result = field(default_factory=Result)

    async def handle(self, event: Event) -> None:
        assert isinstance(event, ScoreRequested)
        self.requests.append(event)
        await self.bus.publish(
            ScoreCompleted(
                event_id=derived_event_id(event.event_id, "score.completed"),
                job_id=event.job_id,
                result=self.result,
                scorer=event.spec.scorer,
                scorer_version="1.0.0",
            )
        )


def classification_result(root: Path) -> Result:
    (root / "input").mkdir()
    (root / "output").mkdir()
    truth = [LABELS[i % len(LABELS)] for i in range(20)]
    guess = [LABELS[(i * 7) % len(LABELS)] for i in range(20)]
    for path, labels in (("input/gt.csv", truth), ("output/pred.csv", guess)):
        rows = "".join(f"r{i},{label}\n" for i, label in enumerate(labels))
        (root / path).write_text("id,label\n" + rows)
    result: Result = classification_f1.score(Workspace.at(root), {"plots": False})
    assert set(LABELS) <= set(result.metrics["f1_per_class"])  # type: ignore[arg-type]
    return result


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    names = Names.fresh("dots")
    settings = scheduler_settings(queue=names.queue("scheduler.jobs"))
    result = classification_result(tmp_path)
    scorer = partial(LabelledScorer, result=result)
    async with real_scheduler_rig("memory", names, settings, scorer) as rig:
        yield rig


async def test_a_classification_job_with_dotted_labels_succeeds_on_mongo(rig: Rig) -> None:
    assert isinstance(rig.scorer, LabelledScorer)
    params = {"plots": False, "class.weights": {"1.5": 2.0, "$x": 1.0}, "ranges": [[0, 1]]}
    spec = JobSpec(
        job_id="job-dotted",
        scorer="classification_f1",
        params=params,
        container=ContainerSpec(image="participant:latest"),
    )
    await rig.bus.publish(
        JobSubmitted(job_id=spec.job_id, spec=spec, workspace="/ws/job-dotted", submitter="bob")
    )

    job = await rig.wait_status("job-dotted", JobStatus.SUCCEEDED, timeout=30)

    assert job.result == rig.scorer.result
    assert job.result_versions == [rig.scorer.result]
    assert job.spec.params == params
    await eventually(lambda: rig.observer.of_type(ScoreCompleted, "job-dotted"))
    await eventually_async(lambda: _outbox_empty(rig, "job-dotted"))  # popped: entries matched


async def _outbox_empty(rig: Rig, job_id: str) -> bool:
    return (await rig.job(job_id)).outbox == []
