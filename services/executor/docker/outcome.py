"""Turn what happened to a container into one standard error (or none), in a fixed order.

Order of precedence: cancelled, timed out, OOM-killed, output too large (a write that hit the cap
usually also makes the program exit non-zero), exited non-zero, expected output missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.executor.docker.output import OutputUsage
from shared.errors import AutoscorerError, ErrorCode, execution_error


@dataclass(slots=True)
class Observed:
    exit_code: int | None
    oom_killed: bool
    timed_out: bool
    cancelled: bool
    time_limit_s: int
    output: OutputUsage | None = None
    output_limit: int = 0
    log_tail: str = ""
    pids_at_limit: bool = False


def classify(seen: Observed) -> AutoscorerError | None:
    if seen.cancelled:
        return execution_error(ErrorCode.CANCELLED, "the job was cancelled while running")
    if seen.timed_out:
        message = f"the program ran past its time limit of {seen.time_limit_s}s and was killed"
        if seen.pids_at_limit:
            message += " (it had hit the process limit: a fork bomb?)"
        return execution_error(
            ErrorCode.TIMEOUT_ERROR,
            message,
            time_limit_s=seen.time_limit_s,
            pids_limit_reached=seen.pids_at_limit,
        )
    if seen.oom_killed:
        message = "the program was killed for exceeding its memory limit"
        return execution_error(ErrorCode.CONTAINER_OOM, message, exit_code=seen.exit_code)
    if seen.output is not None and seen.output.full:
        return execution_error(
            ErrorCode.OUTPUT_TOO_LARGE,
            f"the program filled output/ (limit {seen.output_limit} bytes)",
            output_limit=seen.output_limit,
            bytes_used=seen.output.bytes_used,
            files_used=seen.output.files_used,
        )
    if seen.exit_code != 0:
        error = execution_error(
            ErrorCode.CONTAINER_EXIT_NONZERO,
            f"the program exited with code {seen.exit_code}",
            exit_code=seen.exit_code,
            log_tail=seen.log_tail,
        )
        error.logs = seen.log_tail
        return error
    return None


def missing_outputs(output_dir: Path, expected: list[str]) -> list[str]:
    """Expected names (globs allowed) with no matching regular file under ``output_dir``."""
    missing = []
    for pattern in expected:
        if any(ch in pattern for ch in "*?["):
            found = any(p.is_file() for p in output_dir.glob(pattern))
        else:
            found = (output_dir / pattern).is_file()
        if not found:
            missing.append(pattern)
    return missing


def output_missing_error(missing: list[str]) -> AutoscorerError:
    return execution_error(
        ErrorCode.OUTPUT_MISSING, f"the run did not produce {', '.join(missing)}", missing=missing
    )
