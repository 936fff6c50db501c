"""What the report holds and how it is written: ``autoscorer report WS``, the report the scorer
writes after result.json, every metric, timing and run info, and images only when they match."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from services.cli.main import main
from shared.models import Result, RunOutcome
from shared.report import from_workspace, render, write_report
from shared.workspace import Workspace

Scored = Callable[..., tuple[Workspace, Result]]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IMG = re.compile(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]*)">')


def test_cli_report_writes_one_self_contained_file(
    scored: Scored, capsys: pytest.CaptureFixture[str]
) -> None:
    ws, result = scored("regression")
    (ws.output_dir / "report.html").unlink()
    assert main(["report", str(ws.root), "--json"]) == 0
    envelope = json.loads(capsys.readouterr().out)
    assert envelope["status"] == "success"
    path = Path(envelope["data"]["report"])
    assert path == ws.output_dir / "report.html"
    html = path.read_text()
    assert sorted(IMG.findall(html)) == ["pred_vs_true", "residuals"]
    assert "http://" not in html and "https://" not in html  # nothing to fetch
    assert "Content-Security-Policy" in html
    for metric in result.metrics:
        assert f"<th>{metric}</th>" in html


def test_cli_report_without_a_result_is_a_standard_error(
    example: Callable[[str], Workspace], capsys: pytest.CaptureFixture[str]
) -> None:
    ws = example("classification")
    assert main(["report", str(ws.root), "--json"]) == 1
    envelope = json.loads(capsys.readouterr().out)
    assert envelope["status"] == "error"
    assert envelope["error"]["code"] == "MISSING_FILE"
    assert not (ws.output_dir / "report.html").exists()


def test_scoring_writes_the_report_with_every_metric_and_the_run(scored: Scored) -> None:
    ws, result = scored("classification")
    outcome = RunOutcome(
        job_id="j",
        backend="local",
        status="succeeded",
        exit_code=0,
        duration_s=1.25,
        peak_memory_bytes=123456789,
        cpu_seconds=0.5,
    )
    (ws.logs_dir).mkdir(exist_ok=True)
    (ws.logs_dir / "run_info.json").write_text(outcome.model_dump_json())
    html = write_report(ws).read_text()
    for name, value in result.metrics.items():
        assert f"<th>{name}</th>" in html or f"<summary>{name} (" in html
        if isinstance(value, dict):
            for label in value:
                assert f"<th>{label}</th>" in html
    for key in result.timing:
        assert f"<th>{key}</th>" in html
    assert "123456789" in html and "1.25" in html and "<th>peak_memory_bytes</th>" in html
    assert "<th>provenance</th>" in html  # the result's provenance section (issue 12)


def test_an_image_that_does_not_match_its_sha256_is_not_shown(scored: Scored) -> None:
    ws, result = scored("detection")
    path = ws.root / result.artifacts["ap_by_size"].path
    path.write_bytes(path.read_bytes() + b"tampered")
    html = render(from_workspace(ws))
    assert sorted(IMG.findall(html)) == ["pr_iou50", "pr_iou75"]
    assert "does not match the sha256" in html


def test_an_artifact_path_leading_out_of_output_is_not_read(scored: Scored, tmp_path: Path) -> None:
    ws, result = scored("detection")
    secret = ws.root / "input" / "gt.json"
    forged = {
        "escape": result.artifacts["ap_by_size"].model_copy(
            update={"path": "output/../input/gt.json"}
        ),
        "link": result.artifacts["pr_iou50"],
    }
    (ws.root / "output" / "artifacts" / "pr_iou50.png").unlink()
    (ws.root / "output" / "artifacts" / "pr_iou50.png").symlink_to(secret)
    html = render(from_workspace(ws, result.model_copy(update={"artifacts": forged})))
    assert IMG.findall(html) == []
    assert html.count("the file is not available") == 2


def test_pipeline_writes_the_report_with_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``autoscorer pipeline`` on the local backend: the report has the run's outcome (backend,
    exit code, duration) and the pipeline's timing next to the scores."""
    ws = tmp_path / "regression"
    shutil.copytree(EXAMPLES / "regression", ws, ignore=shutil.ignore_patterns("output", "logs"))
    assert main(["pipeline", str(ws), "--backend", "local", "--json"]) == 0
    capsys.readouterr()
    html = (ws / "output" / "report.html").read_text()
    for shown in (
        "<th>backend</th><td>local</td>",
        "<th>exit_code</th>",
        "<th>duration_s</th>",
        "<th>total_s</th>",
        "<th>rmse</th>",
    ):
        assert shown in html
    assert len(IMG.findall(html)) == 2


def test_a_failed_run_leaves_a_report_with_its_error_and_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "regression"
    shutil.copytree(EXAMPLES / "regression", ws, ignore=shutil.ignore_patterns("output", "logs"))
    meta = json.loads((ws / "meta.json").read_text())
    meta["container"]["cmd"] = ["python3", "-c", "print('<b>about to fail</b>'); exit(3)"]
    (ws / "meta.json").write_text(json.dumps(meta))
    assert main(["pipeline", str(ws), "--backend", "local", "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    html = (ws / "output" / "report.html").read_text()
    assert f"<td>{error['code']}</td>" in html and f"<td>{error['fault']}</td>" in html
    assert "&lt;b&gt;about to fail&lt;/b&gt;" in html and "<b>about" not in html


def test_every_string_from_a_result_is_escaped(scored: Scored) -> None:
    """Labels, artifact names and descriptions, params and provenance values are data."""
    ws, result = scored("classification")
    hostile = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    artifact = result.artifacts["per_class_prf"].model_copy(update={"description": hostile})
    forged = result.model_copy(
        update={
            "metrics": {**result.metrics, "f1_per_class": {hostile: 0.5}, hostile: 1.0},
            "summary": {**result.summary, hostile: hostile},
            "artifacts": {**result.artifacts, hostile: artifact},
            "versioning": {hostile: hostile},
        }
    )
    html = render(from_workspace(ws, forged))
    assert "<script>" not in html and "<img src=x" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6
