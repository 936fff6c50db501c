"""A run request delivered again after its attempt has answered, to an executor replica that
does not remember it (restarted, or another replica): the answer is read back from the
workspace, not made again. Re-running would empty ``output/`` while the scheduler already has
the first answer and the scorer may be reading those files (the MISSING_FILE of the soak test
through a broker restart, docs/RELIABILITY.md)."""

from __future__ import annotations

from pathlib import Path

from shared.events import RunCompleted, RunStarted
from tests.services.test_executor_service import PY, _request, _workspace, replica


def _counting(tmp_path: Path) -> tuple[list[str], Path]:
    runs = tmp_path / "runs"
    return ["sh", "-c", f"echo ran >> {runs} && {PY} submission/predict.py"], runs


async def test_a_redelivered_request_is_answered_from_the_workspace_not_run_again(
    tmp_path, no_leaked_tasks
):
    cmd, runs = _counting(tmp_path)
    spec, root = _workspace(tmp_path, cmd)
    request = _request(spec, root)
    async with replica("exec-a") as first:
        await first.bus.publish(request)
        [answered] = await first.until(RunCompleted)
    assert isinstance(answered, RunCompleted)
    assert answered.outcome.status == "succeeded", answered.outcome.error
    scored = root / "output" / "pred.csv"
    before = scored.read_text()

    async with replica("exec-b") as restarted:  # the broker delivers the request again
        await restarted.bus.publish(request)
        [again] = await restarted.until(RunCompleted)
        assert restarted.of(RunStarted) == []

    assert again == answered  # same event id: the scheduler drops it as a duplicate
    assert runs.read_text() == "ran\n", "the attempt ran twice"
    assert scored.read_text() == before  # output/ was not emptied under the scorer


async def test_a_past_attempt_is_not_run_again_after_a_newer_one_answered(
    tmp_path, no_leaked_tasks
):
    cmd, runs = _counting(tmp_path)
    spec, root = _workspace(tmp_path, cmd)
    async with replica("exec-a") as first:
        await first.bus.publish(_request(spec, root, attempt=2))
        await first.until(RunCompleted)
    async with replica("exec-b") as restarted:  # attempt 1's request, long given up on
        await restarted.bus.publish(_request(spec, root, attempt=1))
        await restarted.bus.publish(later := _request(spec, root, attempt=3))
        [done] = await restarted.until(RunCompleted)
    assert isinstance(done, RunCompleted)
    assert done.attempt == later.attempt  # attempt 1 got no run and no answer
    assert runs.read_text() == "ran\nran\n"
