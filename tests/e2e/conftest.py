"""Fixtures for the end-to-end tests on the real components (provisioned by scripts/test.sh)."""

import os
import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE_IMAGE = "autoscorer-test/python:3.11"


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    return os.environ.get("AUTOSCORER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def mongo_url() -> str:
    return os.environ.get("AUTOSCORER_TEST_MONGO_URL", "mongodb://127.0.0.1:27017")


@pytest.fixture(scope="session")
def example_images() -> list[str]:
    """Each example's participant image, built from its submission/Dockerfile on the local base
    image (no registry is reachable here; on a real host the Dockerfile's BASE is python:3.11)."""
    tags = []
    for name in ("classification", "classification-acc", "regression", "detection"):
        tag = f"autoscorer-examples/{name}:1"
        subprocess.run(
            [
                "docker",
                "build",
                "-q",
                "--build-arg",
                f"BASE={BASE_IMAGE}",
                "-t",
                tag,
                str(EXAMPLES / name / "submission"),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        tags.append(tag)
    return tags
