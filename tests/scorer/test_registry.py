import pytest

from services.scorer.registry import ScorerRegistry
from shared.errors import AutoscorerError, ErrorCode
from shared.workspace import Workspace
from tests.scorer.plugin_text import plugin


@pytest.fixture
def registry():
    return ScorerRegistry()


def test_builtins_are_registered_with_metadata():
    registry = ScorerRegistry.with_builtins()
    names = registry.names()
    for name in (
        "classification_f1",
        "classification_accuracy",
        "regression_rmse",
        "detection_map",
    ):
        assert name in names
        info = registry.get(name).info
        assert info.version and info.task_type and info.description and info.expected_files
        assert info.params_schema["type"] == "object"
        assert info.source.startswith("module:")


def test_load_file_registers_and_scores(tmp_path, registry):
    file = tmp_path / "demo.py"
    file.write_text(plugin(value=2.0))
    assert registry.load_path(file) == ["demo"]
    result = registry.get("demo").score(Workspace.at(tmp_path), {"factor": 3})
    assert result.summary["value"] == 6.0
    assert result.versioning == {"scorer": "demo", "version": "1.0.0"}


def test_params_are_validated_against_the_schema(tmp_path, registry):
    (tmp_path / "demo.py").write_text(plugin())
    registry.load_path(tmp_path / "demo.py")
    with pytest.raises(AutoscorerError) as err:
        registry.get("demo").score(Workspace.at(tmp_path), {"factor": "lots"})
    assert err.value.code is ErrorCode.BAD_PARAMS


def test_same_name_twice_in_one_file_is_refused(tmp_path, registry):
    text = plugin() + plugin().replace("def scorer(", "def scorer_again(")
    (tmp_path / "twice.py").write_text(text)
    with pytest.raises(AutoscorerError) as err:
        registry.load_path(tmp_path / "twice.py")
    assert err.value.code is ErrorCode.SCORER_CONFLICT
    assert registry.names() == []


def test_same_name_from_two_files_is_refused(tmp_path, registry):
    (tmp_path / "a.py").write_text(plugin())
    (tmp_path / "b.py").write_text(plugin(version="9.9.9"))
    registry.load_path(tmp_path / "a.py")
    with pytest.raises(AutoscorerError) as err:
        registry.load_path(tmp_path / "b.py")
    assert err.value.code is ErrorCode.SCORER_CONFLICT
    assert registry.get("demo").info.version == "1.0.0"


def test_a_plugin_cannot_replace_a_builtin(tmp_path):
    registry = ScorerRegistry.with_builtins()
    (tmp_path / "evil.py").write_text(plugin(name="classification_f1"))
    with pytest.raises(AutoscorerError) as err:
        registry.load_path(tmp_path / "evil.py")
    assert err.value.code is ErrorCode.SCORER_CONFLICT
    assert registry.get("classification_f1").info.source.startswith("module:")


def test_reload_swaps_versions_and_drops_removed_scorers(tmp_path, registry):
    file = tmp_path / "demo.py"
    file.write_text(plugin() + plugin(name="other").replace("def scorer(", "def other("))
    assert registry.load_path(file) == ["demo", "other"]
    file.write_text(plugin(version="2.0.0"))
    assert registry.load_path(file) == ["demo"]
    assert registry.get("demo").info.version == "2.0.0"
    assert "other" not in registry.names()


@pytest.mark.parametrize(
    "broken",
    [
        "def oops(:\n",
        "raise RuntimeError('boom')\n",
        "import does_not_exist_anywhere\n",
        "import sys\nsys.exit(3)\n",
    ],
)
def test_broken_edit_keeps_last_good_version_and_records_error(tmp_path, registry, broken):
    file = tmp_path / "demo.py"
    file.write_text(plugin(version="1.0.0"))
    registry.load_path(file)
    file.write_text(plugin(version="2.0.0") + broken)
    with pytest.raises(AutoscorerError) as err:
        registry.load_path(file)
    assert err.value.code is ErrorCode.SCORER_LOAD_ERROR
    assert registry.get("demo").info.version == "1.0.0"
    assert next(iter(registry.errors.values())).code is ErrorCode.SCORER_LOAD_ERROR
    file.write_text(plugin(version="3.0.0"))
    registry.load_path(file)
    assert registry.get("demo").info.version == "3.0.0"
    assert registry.errors == {}


def test_folder_loads_good_files_and_reports_bad_ones(tmp_path, registry):
    (tmp_path / "a.py").write_text(plugin(name="alpha"))
    (tmp_path / "b.py").write_text("syntax error here(\n")
    (tmp_path / "_private.py").write_text("raise SystemExit")
    with pytest.raises(AutoscorerError) as err:
        registry.load_path(tmp_path)
    assert err.value.details["path"].endswith("b.py")
    assert registry.names() == ["alpha"]


@pytest.mark.parametrize("raised", ["SystemExit(3)", "KeyboardInterrupt()"])
def test_a_file_that_raises_an_exit_or_interrupt_is_a_load_error(tmp_path, registry, raised):
    """Loading runs organisers' code inside a service: it must not stop the process."""
    file = tmp_path / "bye.py"
    file.write_text(f"raise {raised}\n")
    with pytest.raises(AutoscorerError) as err:
        registry.load_path(file)
    assert err.value.code is ErrorCode.SCORER_LOAD_ERROR
    assert err.value.details["exception"] == raised.split("(")[0]


def test_unknown_scorer_and_missing_path(tmp_path, registry):
    with pytest.raises(AutoscorerError) as err:
        registry.get("nope")
    assert err.value.code is ErrorCode.SCORER_NOT_FOUND
    with pytest.raises(AutoscorerError) as err2:
        registry.load_path(tmp_path / "absent.py")
    assert err2.value.code is ErrorCode.SCORER_LOAD_ERROR


def test_expected_files_are_checked_before_scoring(tmp_path, registry):
    (tmp_path / "needs.py").write_text(
        plugin(name="needs").replace("expected_files=()", 'expected_files=("output/pred.csv",)')
    )
    registry.load_path(tmp_path / "needs.py")
    with pytest.raises(AutoscorerError) as err:
        registry.get("needs").score(Workspace.at(tmp_path), {})
    assert err.value.code is ErrorCode.MISSING_FILE
    assert err.value.details["path"] == "output/pred.csv"
