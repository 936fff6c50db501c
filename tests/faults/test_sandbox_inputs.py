"""Issue 7, class 7 (the parts under shared/): hostile quantities, specs, meta.json and paths.

Each must end as the standard error — never OverflowError, RecursionError, a raw OSError or a
traceback. Property tests (hypothesis) drive ``parse_memory``, the spec's resources (through
the JobSpec schema, then the operator's caps, then the Docker create body and the Kubernetes
manifest that a run would get) and ``Workspace.at``; the CLI is driven in-process.
"""

# ruff: noqa: PT017 - a property test accepts either outcome and asserts on the error it got

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.cli.main import main as cli_main
from services.executor.docker.config import DockerConfig
from services.executor.docker.sandbox import SandboxPaths, host_config
from services.executor.kubernetes.config import KubernetesConfig
from services.executor.kubernetes.manifest import resources as k8s_resources
from services.executor.local import LocalConfig, LocalExecutor
from shared.bounded_json import JsonTooDeep, depth_exceeds, loads_bounded
from shared.config import load_settings
from shared.errors import AutoscorerError, ErrorCode
from shared.limits import SandboxLimits, check_within_caps, requested_gpus
from shared.models import MAX_MEMORY_BYTES, MAX_PARAMS_DEPTH, JobSpec, parse_memory
from shared.workspace import MAX_META_BYTES, Workspace, load_spec

CAPS = SandboxLimits()

# -- memory quantities -----------------------------------------------------------------------

HOSTILE_QUANTITIES = [
    "1e400Gi",
    "99999999999999999999999Ti",
    "9" * 400 + "Ti",
    "-1",
    "-1Gi",
    "NaN",
    "nan",
    "inf",
    "Infinity",
    "١٢٣Gi",
    "１２Gi",
    "²Gi",
    "0x10Gi",
    "1_000Gi",
    "",
    " ",
    "Gi",
    "1.Gi",
    ".5Gi",
    "1Pi",
    "1Ei",
    "1\x00Gi",
    "1 Gi Gi",
    "1" * 65,
    "0",
    "0.0000000001Ki",
]


@pytest.mark.parametrize("text", HOSTILE_QUANTITIES)
def test_hostile_quantities_are_value_errors(text):
    with pytest.raises(ValueError) as err:
        parse_memory(text)
    assert len(str(err.value)) < 120  # the input is never echoed unbounded


@pytest.mark.parametrize("text", ["1e400Gi", "99999999999999999999999Ti", "-1", "NaN", "١٢٣"])
def test_hostile_memory_in_a_spec_is_config_validation_error(tmp_path, text):
    (tmp_path / "meta.json").write_text(json.dumps({"scorer": "x", "resources": {"memory": text}}))
    with pytest.raises(AutoscorerError) as err:
        load_spec(tmp_path / "meta.json")
    assert err.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
    assert len(json.dumps(err.value.details)) < 400  # bounded: no input echoed beyond 40 chars


QUANTITY = st.from_regex(
    r"\A\s?[-+]?[0-9٠-٩]{0,30}(\.[0-9]{0,12})?([eE][-+]?[0-9]{1,4})?\s?"
    r"(Ki|Mi|Gi|Ti|Pi|Ei|k|m|g|t|K|M|G|T|b|B|KiB|GB|gb|)\s?\Z",
    fullmatch=False,
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        QUANTITY,
        st.text(max_size=80),
        st.integers(),
        st.floats(),
        st.booleans(),
        st.none(),
        st.binary(max_size=20),
    )
)
def test_parse_memory_only_raises_value_error_and_accepts_only_bounded_amounts(value):
    try:
        amount = parse_memory(value)
    except ValueError:
        return
    assert isinstance(amount, int) and 0 < amount <= MAX_MEMORY_BYTES


# -- spec resources: schema, caps, and what a run would get ----------------------------------

ANY_NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.text(max_size=12),
    st.none(),
)
RESOURCES = st.fixed_dictionaries(
    {},
    optional={
        "cpu": ANY_NUMBER,
        "memory": st.one_of(QUANTITY, ANY_NUMBER),
        "gpus": ANY_NUMBER,
        "gpu": ANY_NUMBER,
    },
)
SPECS = st.fixed_dictionaries(
    {"scorer": st.just("x")},
    optional={
        "resources": RESOURCES,
        "time_limit": ANY_NUMBER,
        "timeout": ANY_NUMBER,
        "container": st.fixed_dictionaries(
            {"image": st.just("busybox")},
            optional={"shm_size": st.one_of(QUANTITY, ANY_NUMBER), "gpus": ANY_NUMBER},
        ),
    },
)


def assert_within_caps(spec: JobSpec, caps: SandboxLimits) -> None:
    assert 0.01 <= spec.resources.cpu <= caps.max_cpu
    assert spec.resources.memory_bytes <= caps.max_memory_bytes
    if spec.container and spec.container.shm_size:
        assert parse_memory(spec.container.shm_size) <= caps.max_shm_bytes
    assert 0 < spec.time_limit <= caps.max_time_limit_s
    assert 0 <= requested_gpus(spec) <= caps.max_gpus


@settings(max_examples=500, deadline=None)
@given(SPECS)
def test_any_spec_is_refused_cleanly_or_runs_within_the_caps(body: dict[str, Any]):
    try:
        spec = JobSpec.model_validate(body)
    except ValidationError:
        return
    try:
        check_within_caps(spec, CAPS)
    except AutoscorerError as exc:
        assert exc.code is ErrorCode.RESOURCE_LIMIT_EXCEEDED
        assert exc.details["exceeded"]
        return
    assert_within_caps(spec, CAPS)
    # what the engines would be told stays within the caps and never means "unlimited"
    paths = SandboxPaths(Path("/in"), Path("/meta.json"), Path("/out"))
    host = host_config(spec, DockerConfig(allow_gpus=True), paths)
    assert 10**7 <= host["NanoCpus"] <= CAPS.max_cpu * 10**9
    assert 0 < host["Memory"] == host["MemorySwap"] <= CAPS.max_memory_bytes
    assert 0 < host["ShmSize"] <= CAPS.max_shm_bytes
    limits = k8s_resources(spec, KubernetesConfig())["limits"]
    assert 0 < int(limits["memory"]) <= CAPS.max_memory_bytes
    assert 10 <= int(limits["cpu"].removesuffix("m")) <= CAPS.max_cpu * 1000


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPECS)
def test_any_meta_json_loads_or_is_a_standard_error(body: dict[str, Any]):
    with tempfile.TemporaryDirectory() as where:
        meta = Path(where) / "meta.json"
        meta.write_text(json.dumps(body, allow_nan=True))
        try:
            load_spec(meta)
        except AutoscorerError as exc:
            assert exc.code is ErrorCode.CONFIG_VALIDATION_ERROR


# -- container fields an engine or exec would choke on -----------------------------------------

HOSTILE_CONTAINERS = [
    {"cmd": ["python", "-c", "0\x00"]},
    {"cmd": ["\ud800"]},
    {"cmd": ["x" * 200_000]},
    {"env": {"A\x00": "1"}},
    {"env": {"A": "\x00"}},
    {"env": {"A=B": "1"}},
    {"env": {"": "1"}},
    {"image": "busybox\x00"},
    {"image": "busy box"},
    {"image": "i" * 513},
    {"workdir": "relative"},
    {"workdir": "/w\x00"},
]


@pytest.mark.parametrize("fields", HOSTILE_CONTAINERS)
def test_container_fields_no_engine_could_take_are_refused_by_the_schema(fields):
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"scorer": "x", "container": {"image": "busybox", **fields}})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.text(max_size=20), max_size=4),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
)
def test_local_backend_runs_or_refuses_any_command_line_cleanly(args, env):
    """Any args and env after a harmless program: a RunOutcome or a standard error."""
    try:
        spec = JobSpec.model_validate(
            {
                "job_id": "job-argv",
                "scorer": "x",
                "time_limit": 10,
                "container": {
                    "image": "unused",
                    "cmd": [sys.executable, "-c", "0", *args],
                    "env": env,
                },
            }
        )
    except ValidationError:
        return
    with tempfile.TemporaryDirectory() as where:
        (Path(where) / "input").mkdir()
        outcome = asyncio.run(LocalExecutor(LocalConfig()).run(spec, Workspace.at(where)))
    assert outcome.status == "succeeded", outcome.error


# -- deep and large meta.json / params -------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    """``depth`` levels of dicts (``{}`` is one level)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "text",
    [
        '{"scorer": "x", "params": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}",
        "[" * 10_000 + "]" * 10_000,
        '{"scorer": "x", "params": {"a": ' + "[" * 100_000 + "}}",  # deep and broken
    ],
)
def test_deeply_nested_meta_json_is_config_validation_error(tmp_path, text):
    (tmp_path / "meta.json").write_text(text)
    with pytest.raises(AutoscorerError) as err:
        load_spec(tmp_path / "meta.json")
    assert err.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
    assert "nests deeper" in err.value.message


def test_params_deeper_than_the_bound_are_refused_shallower_accepted(tmp_path):
    deep = {"scorer": "x", "params": nested(MAX_PARAMS_DEPTH + 1)}  # params itself is level 1
    (tmp_path / "meta.json").write_text(json.dumps(deep))
    with pytest.raises(AutoscorerError) as err:
        load_spec(tmp_path / "meta.json")
    assert err.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
    ok = JobSpec.model_validate({"scorer": "x", "params": nested(MAX_PARAMS_DEPTH)})
    assert JobSpec.model_validate_json(ok.model_dump_json()) == ok


def test_ten_thousand_levels_of_params_in_memory_or_in_json_are_validation_errors():
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"scorer": "x", "params": nested(10_000)})
    text = '{"scorer": "x", "params": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}"
    with pytest.raises(ValidationError):
        JobSpec.model_validate_json(text)  # how a spec arrives on the bus


def test_oversized_meta_json_is_refused_without_echoing_it(tmp_path):
    filler = "A" * (MAX_META_BYTES + 10)
    (tmp_path / "meta.json").write_text(json.dumps({"scorer": "x", "params": {"f": filler}}))
    with pytest.raises(AutoscorerError) as err:
        load_spec(tmp_path / "meta.json")
    assert err.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
    assert "AAAA" not in err.value.message + json.dumps(err.value.details)


def test_meta_json_that_is_not_a_file_is_missing_file(tmp_path):
    (tmp_path / "meta.json").mkdir()
    with pytest.raises(AutoscorerError) as err:
        load_spec(tmp_path / "meta.json")
    assert err.value.code is ErrorCode.MISSING_FILE


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='[]{}"\\ a:1,', max_size=200), st.integers(min_value=0, max_value=20))
def test_bounded_loads_raises_only_too_deep_or_decode_errors(text, limit):
    try:
        loads_bounded(text, max_depth=limit)
    except (JsonTooDeep, json.JSONDecodeError):
        return
    assert not depth_exceeds(text, limit)


# -- workspace paths -------------------------------------------------------------------------

BAD_PATHS = [
    "ws\x00evil",
    "/tmp/\x00",
    "a" * 5000,
    "/tmp/" + "b" * 300,
    "x/" * 2100,
    "",
    "/tmp/\udc80\ud800",
]


@pytest.mark.parametrize(
    "path",
    BAD_PATHS,
    ids=["nul", "nul-end", "long", "long-name", "many-parts", "empty", "surrogate"],
)
def test_bad_workspace_paths_are_workspace_invalid(path):
    with pytest.raises(AutoscorerError) as err:
        Workspace.at(path)
    assert err.value.code is ErrorCode.WORKSPACE_INVALID
    assert len(err.value.message) < 300 and len(json.dumps(err.value.details)) < 300


def test_a_path_just_within_the_limits_is_judged_by_what_is_there(tmp_path):
    name = tmp_path / ("c" * 255)
    name.mkdir()
    assert Workspace.at(name).root == name
    with pytest.raises(AutoscorerError) as err:
        Workspace.at(str(name / "missing"))
    assert err.value.code is ErrorCode.WORKSPACE_INVALID


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.text(alphabet="/a.\x00", max_size=5000))
def test_any_workspace_path_is_a_workspace_or_workspace_invalid(path):
    try:
        Workspace.at(path)
    except AutoscorerError as exc:
        assert exc.code is ErrorCode.WORKSPACE_INVALID


def test_cli_reports_an_over_long_workspace_path_as_workspace_invalid(capsys):
    code = cli_main(["validate", "/tmp/" + "d" * 300, "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    assert json.loads(out)["error"]["code"] == "WORKSPACE_INVALID"


def test_cli_reports_a_deep_meta_json_as_config_validation_error(tmp_path, capsys):
    (tmp_path / "meta.json").write_text("[" * 50_000 + "]" * 50_000)
    code = cli_main(["validate", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    assert json.loads(out)["error"]["code"] == "CONFIG_VALIDATION_ERROR"


@pytest.mark.parametrize(
    ("key", "value"),
    [("MAX_MEMORY", "1e400Gi"), ("MAX_CPU", "NaN"), ("FSIZE", "-1"), ("NOFILE", "9" * 50)],
)
def test_hostile_operator_limits_are_config_validation_errors(monkeypatch, key, value):
    monkeypatch.setenv(f"AUTOSCORER__LIMITS__{key}", value)
    with pytest.raises(AutoscorerError) as err:
        load_settings()
    assert err.value.code is ErrorCode.CONFIG_VALIDATION_ERROR
