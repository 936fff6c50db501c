import pytest

from shared.config import load_settings
from shared.errors import AutoscorerError, ErrorCode


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("AUTOSCORER__"):
            monkeypatch.delenv(key)


def test_defaults_are_the_embedded_mode():
    settings = load_settings()
    assert settings.executor.default_backend == "local"
    assert settings.bus.kind == "memory"
    assert settings.store.kind == "sqlite"


def test_environment_overrides_yaml_and_false_means_false(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text(
        "scorer:\n  watch: true\n  time_limit: 5\nexecutor:\n  default_backend: docker\n"
    )
    monkeypatch.setenv("AUTOSCORER__SCORER__WATCH", "false")
    settings = load_settings(config)
    assert settings.scorer.watch is False
    assert settings.scorer.time_limit == 5
    assert settings.executor.default_backend == "docker"


def test_secrets_are_redacted(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("bus:\n  url: amqp://user:hunter2@broker/\n")
    settings = load_settings(config)
    assert settings.bus.url.get_secret_value().endswith("hunter2@broker/")
    assert "hunter2" not in str(settings.redacted())


@pytest.mark.parametrize(
    "text",
    ["scorer: [1, 2", "- a\n- b\n", "scorer:\n  nope: 1\n", "executor:\n  backends:\n    x: {}\n"],
)
def test_bad_files_are_config_validation_errors(tmp_path, text):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(AutoscorerError) as err:
        load_settings(config)
    assert err.value.code is ErrorCode.CONFIG_VALIDATION_ERROR


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(AutoscorerError) as err:
        load_settings(tmp_path / "absent.yaml")
    assert err.value.code is ErrorCode.CONFIG_VALIDATION_ERROR


def test_bad_env_value_is_reported(monkeypatch):
    monkeypatch.setenv("AUTOSCORER__SCORER__TIME_LIMIT", "soon")
    with pytest.raises(AutoscorerError) as err:
        load_settings()
    assert err.value.details["errors"][0]["loc"] in (
        ("scorer", "time_limit"),
        ["scorer", "time_limit"],
    )
