"""The bus's plain parts: topic matching, retry policy, the retry/dead-letter decision."""

from __future__ import annotations

import pytest

from shared.bus import RetryPolicy, Subscription, topic_matches
from shared.bus_dispatch import Action, decide
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.events import Event


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("job.submitted", "job.submitted", True),
        ("job.submitted", "job.failed", False),
        ("job.*", "job.failed", True),
        ("job.*", "job", False),
        ("job.*", "job.cancel.requested", False),
        ("run.requested.*", "run.requested.docker", True),
        ("#", "anything.at.all", True),
        ("#", "", True),
        ("job.#", "job", True),
        ("job.#", "job.a.b", True),
        ("#.completed", "score.completed", True),
        ("#.completed", "completed", True),
        ("*.completed", "run.score.completed", False),
        ("run.#.docker", "run.requested.docker", True),
        ("run.#.docker", "run.docker", True),
    ],
)
def test_topic_matching_follows_amqp(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_retry_delays_repeat_the_last_step() -> None:
    policy = RetryPolicy(max_attempts=6, delays=(1.0, 5.0))

    assert [policy.delay_after(n) for n in range(1, 6)] == [1.0, 5.0, 5.0, 5.0, 5.0]


@pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"delays": ()}, {"delays": (-1.0,)}])
def test_retry_policy_refuses_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)  # type: ignore[arg-type]


async def _noop(event: Event) -> None:
    return None


SUB = Subscription("q", ("job.*",), _noop, retry=RetryPolicy(max_attempts=3, delays=(0.5, 2.0)))


def test_retryable_errors_retry_until_the_last_attempt() -> None:
    error = AutoscorerError(ErrorCode.BACKEND_UNAVAILABLE, "down", stage=Stage.EXECUTION)

    verdicts = [decide(error, attempt, SUB) for attempt in (1, 2, 3)]

    assert [(v.action, v.delay) for v in verdicts] == [
        (Action.RETRY, 0.5),
        (Action.RETRY, 2.0),
        (Action.DEAD, 0.0),
    ]


def test_permanent_errors_are_dead_at_once() -> None:
    error = AutoscorerError(ErrorCode.MISMATCH, "ids differ", stage=Stage.SCORING)

    assert decide(error, 1, SUB).action is Action.DEAD


@pytest.mark.parametrize(
    "options",
    [
        {"queue": ""},
        {"routing_keys": ()},
        {"concurrency": 0},
        {"handler_timeout": 0},
        {"expires": 0.0},
    ],
)
def test_subscription_refuses_nonsense(options: dict[str, object]) -> None:
    fields: dict[str, object] = {"queue": "q", "routing_keys": ("a",), "handler": _noop}
    with pytest.raises(ValueError):
        Subscription(**(fields | options))  # type: ignore[arg-type]
