"""Provenance in every result, scorer version pinning and the refusal of non-file URIs.

Real scorers (the built-in classification_f1 and a plugin file), real workspaces on disk, the
engine every mode scores through (``services.scorer.engine``) and the one-shot worker process the
CLI uses; nothing is faked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.scorer.engine import score_workspace
from services.scorer.oneshot import score_once
from services.scorer.pool import ScoreTask
from services.scorer.registry import ScorerRegistry
from shared.errors import AutoscorerError, ErrorCode
from shared.models import JobSpec, RunOutcome
from shared.provenance import Submission, parse_scorer_ref, scorer_name
from shared.workspace import Workspace, load_spec
from tests.scorer.plugin_text import plugin

GT = "id,label\na,cat\nb,dog\nc,cat\nd,bird\n"
PRED = "id,label\na,cat\nb,cat\nc,cat\nd,bird\n"


def make_workspace(root: Path, scorer: str = "classification_f1", **spec: object) -> Workspace:
    (root / "input").mkdir(parents=True)
    (root / "output").mkdir()
    (root / "input" / "gt.csv").write_text(GT)
    (root / "input" / "features.csv").write_text("id,x\na,1\n")
    (root / "output" / "pred.csv").write_text(PRED)
    meta = {"job_id": "job-prov", "scorer": scorer, "params": {}, **spec}
    (root / "meta.json").write_text(json.dumps(meta))
    return Workspace.at(root)


@pytest.fixture(scope="module")
def registry() -> ScorerRegistry:
    return ScorerRegistry.with_builtins()


def test_every_result_carries_its_provenance(tmp_path: Path, registry: ScorerRegistry) -> None:
    ws = make_workspace(tmp_path / "ws")
    result = score_workspace(registry, ws)
    assert result.error is None
    prov = result.provenance
    assert prov is not None
    source = Path("services/scorer/builtin/classification.py").read_bytes()
    assert prov.scorer.name == "classification_f1"
    assert prov.scorer.version == registry.get("classification_f1").info.version
    assert prov.scorer.source == "module:services.scorer.builtin.classification"
    assert prov.scorer.source_sha256 == hashlib.sha256(source).hexdigest()
    assert prov.scorer.pinned is None
    files = {f.module: f.sha256 for f in prov.scorer.source_files}  # its helpers count too
    builtin = Path("services/scorer/builtin")
    for module, path in (
        ("services.scorer.builtin.classification", builtin / "classification.py"),
        ("services.scorer.builtin.tabular", builtin / "tabular.py"),
        ("services.scorer.builtin.tabular_ints", builtin / "tabular_ints.py"),
    ):
        assert files[module] == hashlib.sha256(path.read_bytes()).hexdigest(), module
    assert all(name.startswith("services.scorer.builtin") for name in files)
    gt = {f.path: f.sha256 for f in prov.ground_truth.files}
    assert gt == {"input/gt.csv": hashlib.sha256(GT.encode()).hexdigest()}  # not features.csv
    preds = {f.path: f.sha256 for f in prov.predictions.files}
    assert preds == {"output/pred.csv": hashlib.sha256(PRED.encode()).hexdigest()}
    assert prov.image.image_id is None
    assert "no run" in prov.image.note
    assert prov.platform.name == "autoscorer"
    assert prov.platform.version
    assert prov.job_id == "job-prov"
    assert prov.submitted_at is None  # the CLI: the local user, no job record
    # what is on disk is what was returned
    on_disk = json.loads(ws.result_path.read_text())
    assert on_disk["provenance"]["ground_truth"]["sha256"] == prov.ground_truth.sha256


def test_one_byte_of_ground_truth_changes_its_digest(
    tmp_path: Path, registry: ScorerRegistry
) -> None:
    ws = make_workspace(tmp_path / "ws")
    first = score_workspace(registry, ws).provenance
    gt = ws.input_dir / "gt.csv"
    data = bytearray(gt.read_bytes())
    data[-2] = ord("e")  # bird -> bire: one byte
    gt.write_bytes(bytes(data))
    second = score_workspace(registry, ws).provenance
    assert first is not None
    assert second is not None
    assert first.ground_truth.sha256 != second.ground_truth.sha256
    assert first.ground_truth.files[0].sha256 != second.ground_truth.files[0].sha256
    assert first.predictions.sha256 == second.predictions.sha256
    assert first.scorer.source_sha256 == second.scorer.source_sha256


def test_platform_files_are_not_predictions(tmp_path: Path, registry: ScorerRegistry) -> None:
    """result.json, report.html and artifacts/ are written by the platform after scoring."""
    ws = make_workspace(tmp_path / "ws")
    first = score_workspace(registry, ws).provenance
    (ws.output_dir / "artifacts").mkdir(exist_ok=True)
    (ws.output_dir / "artifacts" / "plot.png").write_bytes(b"png")
    (ws.output_dir / "report.html").write_text("<html></html>")
    second = score_workspace(registry, ws).provenance
    assert first is not None
    assert second is not None
    assert first.predictions == second.predictions


def test_image_and_submitter_come_from_the_run_and_the_job(
    tmp_path: Path, registry: ScorerRegistry
) -> None:
    ws = make_workspace(tmp_path / "ws")
    ws.logs_dir.mkdir()
    run = RunOutcome(
        job_id="job-prov",
        backend="docker",
        status="succeeded",
        image="autoscorer-test/python:3.11",
        image_id="sha256:" + "ab" * 32,
        extra={"image_digest": "autoscorer-test/python@sha256:" + "cd" * 32},
    )
    (ws.logs_dir / "run_info.json").write_text(run.model_dump_json())
    from datetime import UTC, datetime

    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    result = score_workspace(registry, ws, submission=Submission("alice", at))
    prov = result.provenance
    assert prov is not None
    assert prov.image.backend == "docker"
    assert prov.image.reference == "autoscorer-test/python:3.11"
    assert prov.image.image_id == run.image_id
    assert prov.image.digest == run.extra["image_digest"]
    assert (prov.submitted_by, prov.submitted_at) == ("alice", at)

    local = run.model_copy(update={"backend": "local", "image": None, "image_id": None})
    (ws.logs_dir / "run_info.json").write_text(local.model_dump_json())
    prov = score_workspace(registry, ws).provenance
    assert prov is not None
    assert prov.image.image_id is None
    assert "local backend" in prov.image.note


def test_the_cli_worker_records_the_plugin_source(tmp_path: Path) -> None:
    """A plugin scorer scored in the CLI's one-shot worker: its file's sha256 is recorded."""
    plugin_file = tmp_path / "demo_prov.py"
    plugin_file.write_text(plugin(name="demo_prov", version="2.0.0"))
    ws = make_workspace(tmp_path / "ws", scorer="demo_prov@2.0.0")
    digest = hashlib.sha256(plugin_file.read_bytes()).hexdigest()
    manifest = ((str(plugin_file.resolve()), digest),)
    result = score_once(ScoreTask(str(ws.root), None, None, manifest), 60)
    assert result.error is None, result.error
    prov = result.provenance
    assert prov is not None
    assert prov.scorer.source == f"file:{plugin_file.resolve()}"
    assert prov.scorer.source_sha256 == digest
    assert prov.scorer.pinned == "2.0.0"
    assert [f.sha256 for f in prov.scorer.source_files] == [digest]  # a plugin: its one file


# -- pinning ------------------------------------------------------------------------------------


def test_a_pinned_loaded_version_is_accepted(tmp_path: Path, registry: ScorerRegistry) -> None:
    version = registry.get("classification_f1").info.version
    ws = make_workspace(tmp_path / "ws", scorer=f"classification_f1@{version}")
    result = score_workspace(registry, ws)
    assert result.error is None
    assert result.provenance is not None
    assert result.provenance.scorer.pinned == version
    assert result.versioning["scorer"] == "classification_f1"


def test_a_pinned_version_that_is_not_loaded_is_refused(
    tmp_path: Path, registry: ScorerRegistry
) -> None:
    loaded = registry.get("classification_f1").info.version
    with pytest.raises(AutoscorerError) as caught:
        registry.get("classification_f1@0.0.1-old")
    assert caught.value.code is ErrorCode.SCORER_NOT_FOUND
    assert caught.value.details == {
        "scorer": "classification_f1",
        "version": "0.0.1-old",
        "loaded_version": loaded,
    }
    ws = make_workspace(tmp_path / "ws", scorer="classification_f1@0.0.1-old")
    result = score_workspace(registry, ws)
    assert result.error is not None
    assert result.error.code is ErrorCode.SCORER_NOT_FOUND
    assert "not the pinned 0.0.1-old" in result.error.message
    assert result.provenance is None  # nothing was scored


@pytest.mark.parametrize("bad", ["classification_f1@", "@1.0.0", "a@1@2", "a@ 1", "a@-1"])
def test_a_malformed_pin_is_refused_in_the_spec(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError):
        JobSpec(scorer=bad)
    (tmp_path / "meta.json").write_text(json.dumps({"scorer": bad}))
    with pytest.raises(AutoscorerError) as caught:
        load_spec(tmp_path / "meta.json")
    assert caught.value.code is ErrorCode.CONFIG_VALIDATION_ERROR


_NAME = st.text(st.characters(codec="utf-8", exclude_characters="@"), min_size=1, max_size=40)
_VERSION = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")


@given(_NAME, _VERSION)
def test_a_well_formed_reference_parses_back(name: str, version: str) -> None:
    assert parse_scorer_ref(f"{name}@{version}") == (name, version)
    assert parse_scorer_ref(name) == (name, None)
    assert scorer_name(f"{name}@{version}") == name


@given(st.text(max_size=80))
def test_any_reference_parses_or_raises_value_error(ref: str) -> None:
    try:
        name, version = parse_scorer_ref(ref)
    except ValueError:
        return
    assert name
    assert "@" not in name
    assert ref == (name if version is None else f"{name}@{version}")


# -- URIs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "uri"),
    [
        ("input_uri", "s3://bucket/input"),
        ("output_uri", "gs://bucket/output"),
        ("input_uri", "http://example.org/input"),
        ("output_uri", "./output"),
    ],
)
def test_uris_other_than_file_are_refused(tmp_path: Path, field: str, uri: str) -> None:
    with pytest.raises(ValidationError, match="object storage is not supported yet"):
        JobSpec.model_validate({"scorer": "classification_f1", field: uri})
    (tmp_path / "meta.json").write_text(json.dumps({"scorer": "classification_f1", field: uri}))
    with pytest.raises(AutoscorerError) as caught:
        load_spec(tmp_path / "meta.json")
    assert caught.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
    assert JobSpec.model_validate({"scorer": "x", field: "file://./somewhere"})


def test_a_meta_json_without_a_job_id_records_none(
    tmp_path: Path, registry: ScorerRegistry
) -> None:
    """JobSpec makes up a job id when meta.json has none: provenance does not claim it."""
    ws = make_workspace(tmp_path / "ws")
    (ws.meta_path).write_text(json.dumps({"scorer": "classification_f1"}))
    prov = score_workspace(registry, ws).provenance
    assert prov is not None
    assert prov.job_id is None
    spec = JobSpec(job_id="job-from-event", scorer="classification_f1")
    prov = score_workspace(registry, ws, spec=spec).provenance
    assert prov is not None
    assert prov.job_id == "job-from-event"
