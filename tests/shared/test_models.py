import pytest
from pydantic import ValidationError

from shared.models import JobSpec, Resources, parse_memory


def test_full_design_form_round_trips():
    data = {
        "job_id": "job-demo-001",
        "task_type": "classification",
        "scorer": "classification_f1",
        "params": {"average": "macro"},
        "input_uri": "file://./input",
        "output_uri": "file://./output",
        "time_limit": 60,
        "resources": {"cpu": 2, "memory": "4Gi", "gpus": 1},
        "container": {
            "image": "python:3.11-slim",
            "cmd": ["python", "predict.py"],
            "env": {"A": "1"},
            "shm_size": "1g",
            "gpus": 1,
            "network_policy": "none",
        },
    }
    spec = JobSpec.model_validate(data)
    assert spec.resources.memory_bytes == 4 * 1024**3
    assert spec.container is not None and spec.container.shm_size == "1g"
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


def test_short_meta_form_of_the_readme_notes():
    spec = JobSpec.model_validate(
        {
            "scorer": "classification_f1",
            "params": {"threshold": 0.5},
            "resources": {"cpu": 2, "memory": "4Gi", "gpu": 0},
            "timeout": 300,
        }
    )
    assert spec.time_limit == 300
    assert spec.resources.gpus == 0
    assert spec.job_id.startswith("job-")


@pytest.mark.parametrize(
    "data",
    [
        {"scorer": "x", "timeout": 5, "time_limit": 6},
        {"scorer": "x", "resources": {"gpu": 1, "gpus": 2}},
        {"scorer": "x", "job_id": "../etc"},
        {"scorer": "x", "resources": {"memory": "lots"}},
        {"scorer": "x", "time_limit": 0},
        {"scorer": ""},
        {"scorer": "x", "surprise": 1},
    ],
)
def test_invalid_specs_are_refused(data):
    with pytest.raises(ValidationError):
        JobSpec.model_validate(data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4Gi", 4 * 1024**3),
        ("512Mi", 512 * 1024**2),
        ("1g", 1024**3),
        ("256m", 256 * 1024**2),
        ("1G", 10**9),
        ("1024", 1024),
        ("1.5Gi", int(1.5 * 1024**3)),
        (2048, 2048),
    ],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["", "-1Gi", "0", "4 GiB please", "1Pi"])
def test_parse_memory_rejects(bad):
    with pytest.raises(ValueError):
        parse_memory(bad)


def test_resources_defaults_are_sane():
    assert Resources().memory_bytes == 1024**3
