"""The report in a real headless browser (Debian's chromium, scripts/provision/chromium.sh).

Each report is opened from disk as a file:// page: it must load without a console error (a CSP
violation or a failed load is one), request nothing but itself and its data: images, render every
image (naturalWidth > 0) and run no script, even when participant strings try to inject markup.
A full-page screenshot of each is kept under .pytest-artifacts/report/ (git ignores it; the path
is printed) so a person can look at what was checked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from services.scorer.engine import score_workspace
from services.scorer.registry import ScorerRegistry
from shared.models import Result
from shared.report import write_report
from shared.workspace import Workspace
from tests.report.browser import PageLoad, open_page

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("AUTOSCORER_TEST_ARTIFACTS", ROOT / ".pytest-artifacts")) / "report"
HOSTILE = '<img src="http://127.0.0.1:9/x.png" onerror="alert(1)"><script>alert(2)</script>'
Scored = Callable[..., tuple[Workspace, Result]]


async def check(path: Path, tmp_path: Path, shot_name: str) -> PageLoad:
    load = await open_page(path.as_uri(), tmp_path / "chromium-profile")
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{shot_name}.png"
    shot.write_bytes(load.screenshot)
    print(f"\nscreenshot of {path.name}: {shot}")
    assert load.console_errors == []
    assert [url for url in load.requests if not url.startswith(("file:", "data:"))] == []
    assert all(image["complete"] and image["width"] > 0 for image in load.images), load.images
    assert load.scripts == 0
    assert load.screenshot.startswith(b"\x89PNG")
    return load


@pytest.mark.parametrize(
    ("name", "plots"),
    [("classification", 3), ("regression", 2), ("detection", 3)],
)
async def test_report_renders_in_chromium(
    scored: Scored, tmp_path: Path, name: str, plots: int
) -> None:
    ws, result = scored(name)
    assert result.ok
    report = ws.output_dir / "report.html"  # written by the scorer after result.json
    load = await check(report, tmp_path, f"{name}-report")
    assert len(load.images) == plots
    assert "Metrics" in load.text and "Provenance" in load.text
    assert "sha256" in load.text


async def test_failed_job_report_shows_the_error_and_escapes_participant_text(
    example: Callable[[str], Workspace], registry: ScorerRegistry, tmp_path: Path
) -> None:
    """A participant writes markup into its predictions' header and its log: the report shows
    the error (code, stage, fault, message, log tail) as text, and the browser runs nothing."""
    ws = example("classification")
    (ws.output_dir / "pred.csv").write_text(f"id,{HOSTILE}\nx,1\n")
    ws.logs_dir.mkdir(exist_ok=True)
    (ws.logs_dir / "container.log").write_text(f"starting\n{HOSTILE}\nTraceback: boom\n")
    result = score_workspace(registry, ws)
    assert result.error is not None
    path = write_report(ws)
    html = path.read_text()
    assert "<script>" not in html and 'onerror="alert' not in html
    load = await check(path, tmp_path, "failed-report")
    assert load.images == []
    error = result.error
    for shown in (
        error.code.value,
        error.stage.value,
        error.fault.value,
        "Traceback: boom",
        HOSTILE,
    ):
        assert shown in load.text
