"""Checks on what a run left in ``output/``, shared by every backend."""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from shared.errors import ErrorCode, execution_error
from shared.workspace import Workspace


def clear_output(ws: Workspace) -> None:
    """Empty ``output/`` before a run so a stale prediction can never be scored."""
    ws.output_dir.mkdir(exist_ok=True)
    for entry in ws.output_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def output_size(ws: Workspace) -> int:
    return sum(
        p.stat().st_size for p in ws.output_dir.rglob("*") if p.is_file() and not p.is_symlink()
    )


def check_outputs(ws: Workspace, expected: Iterable[str], cap_bytes: int) -> None:
    """OUTPUT_TOO_LARGE past the cap; OUTPUT_MISSING for each expected file not produced."""
    size = output_size(ws)
    if size > cap_bytes:
        raise execution_error(
            ErrorCode.OUTPUT_TOO_LARGE,
            f"output/ holds {size} bytes, over the cap of {cap_bytes}",
            size=size,
            cap=cap_bytes,
        )
    missing = [name for name in expected if not (ws.output_dir / name).is_file()]
    if missing:
        raise execution_error(
            ErrorCode.OUTPUT_MISSING,
            f"the run did not produce {', '.join('output/' + m for m in missing)}",
            missing=missing,
        )
