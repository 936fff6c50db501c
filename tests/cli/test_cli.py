"""The autoscorer command line, end to end on the embedded default (local backend)."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error

from services.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
AUTOSCORER = Path(sys.executable).parent / "autoscorer"


def _copy(tmp_path, name):
    target = tmp_path / name
    shutil.copytree(
        EXAMPLES / name, target, ignore=shutil.ignore_patterns("output", "logs", ".autoscorer")
    )
    return target


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _read(path):
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    return dict(rows)


@pytest.mark.parametrize(
    ("example", "metric"),
    [
        ("classification", "f1_macro"),
        ("classification-acc", "accuracy"),
        ("regression", "rmse"),
        ("detection", "mAP"),
    ],
)
def test_every_example_runs_with_the_local_pipeline(tmp_path, capsys, example, metric):
    ws = _copy(tmp_path, example)
    code, out, _ = _cli(capsys, "pipeline", ws, "--backend", "local", "--json")
    envelope = json.loads(out)
    assert code == 0, envelope
    assert envelope["status"] == "success"
    summary = envelope["data"]["summary"]
    assert metric in summary
    written = json.loads((ws / "output" / "result.json").read_text())
    assert written["summary"] == summary
    assert written["timing"]["run_s"] > 0 and written["timing"]["score_s"] >= 0
    assert json.loads((ws / "logs" / "run_info.json").read_text())["status"] == "succeeded"
    if example.startswith("classification") or example == "regression":
        gt, pred = _read(ws / "input" / "gt.csv"), _read(ws / "output" / "pred.csv")
        ids = sorted(gt)
        y_true, y_pred = [gt[i] for i in ids], [pred[i] for i in ids]
        if example == "classification":
            assert summary["f1_macro"] == f1_score(y_true, y_pred, average="macro")
            assert 0.5 < summary["f1_macro"] < 1.0  # a real model: good, not a copy of the truth
        elif example == "classification-acc":
            assert summary["accuracy"] == accuracy_score(y_true, y_pred)
        else:
            t, p = np.array(y_true, float), np.array(y_pred, float)
            assert summary["rmse"] == pytest.approx(np.sqrt(mean_squared_error(t, p)), abs=1e-12)


def test_quickstart_command_prints_scores(tmp_path):
    ws = _copy(tmp_path, "classification")
    done = subprocess.run(
        [AUTOSCORER, "pipeline", ws, "--backend", "local"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "f1_macro" in done.stdout and "result:" in done.stdout
    assert "Traceback" not in done.stderr


def test_score_without_predictions_is_missing_file_with_result_json(tmp_path, capsys):
    ws = _copy(tmp_path, "classification")
    code, out, _ = _cli(capsys, "score", ws, "--json")
    assert code == 1
    envelope = json.loads(out)
    assert envelope["status"] == "error"
    assert envelope["error"]["code"] == "MISSING_FILE"
    assert envelope["error"]["stage"] in ("validation", "scoring")
    written = json.loads((ws / "output" / "result.json").read_text())
    assert written["error"]["code"] == "MISSING_FILE"


def test_readable_error_goes_to_stderr_without_traceback(tmp_path, capsys):
    ws = _copy(tmp_path, "classification")
    (ws / "output").mkdir()
    (ws / "output" / "pred.csv").write_text("id,label\ns0000,cat\n")
    code, _, err = _cli(capsys, "score", ws)
    assert code == 1
    assert "error MISMATCH" in err and "Traceback" not in err


def test_unknown_scorer_and_backend_have_codes(tmp_path, capsys):
    ws = _copy(tmp_path, "classification")
    code, out, _ = _cli(capsys, "score", ws, "--scorer", "nope", "--json")
    assert (code, json.loads(out)["error"]["code"]) == (1, "SCORER_NOT_FOUND")
    code, out, _ = _cli(capsys, "pipeline", ws, "--backend", "podman", "--json")
    assert (code, json.loads(out)["error"]["code"]) == (1, "BACKEND_NOT_FOUND")


def test_failed_run_leaves_its_error_in_result_json(tmp_path, capsys):
    ws = _copy(tmp_path, "classification")
    meta = json.loads((ws / "meta.json").read_text())
    meta["container"]["cmd"] = ["python3", "-c", "raise SystemExit(4)"]
    (ws / "meta.json").write_text(json.dumps(meta))
    code, out, _ = _cli(capsys, "pipeline", ws, "--json")
    assert code == 1
    error = json.loads(out)["error"]
    assert (error["code"], error["stage"], error["fault"]) == (
        "CONTAINER_EXIT_NONZERO",
        "execution",
        "participant",
    )
    assert (
        json.loads((ws / "output" / "result.json").read_text())["error"]["code"]
        == "CONTAINER_EXIT_NONZERO"
    )


def test_validate(tmp_path, capsys):
    ws = _copy(tmp_path, "detection")
    code, out, _ = _cli(capsys, "validate", ws, "--json")
    assert code == 0
    assert json.loads(out)["data"]["checks"]["scorer"].startswith("detection_map")
    (ws / "input" / "gt.json").unlink()
    code, out, _ = _cli(capsys, "validate", ws, "--json")
    assert (code, json.loads(out)["error"]["code"]) == (1, "MISSING_FILE")
    (ws / "meta.json").write_text('{"scorer": "detection_map", "params": {"no_such_param": 1}}')
    code, out, _ = _cli(capsys, "validate", ws, "--json")
    assert (code, json.loads(out)["error"]["code"]) == (1, "BAD_PARAMS")


def test_config_commands(tmp_path, capsys, monkeypatch):
    for key in list(os.environ):
        if key.startswith("AUTOSCORER"):
            monkeypatch.delenv(key)
    config = tmp_path / "c.yaml"
    config.write_text("bus:\n  url: amqp://u:topsecret@h/\n")
    code, out, _ = _cli(capsys, "config", "dump", "--config", config)
    assert code == 0 and "topsecret" not in out and "**********" in out
    code, out, _ = _cli(capsys, "config", "show", "--json", "--config", config)
    assert json.loads(out)["data"]["executor.default_backend"] == "local"
    code, _, _ = _cli(capsys, "config", "validate", "--config", config)
    assert code == 0
    config.write_text(
        "executor:\n  backends:\n    docker: {type: docker, pull_policy: sometimes}\n"
    )
    code, out, _ = _cli(capsys, "config", "validate", "--json", "--config", config)
    assert code == 1
    problems = json.loads(out)["error"]["details"]["problems"]
    assert problems[0]["backend"] == "docker"


def test_scorers_list_and_test(tmp_path, capsys):
    code, out, _ = _cli(capsys, "scorers", "list", "--json")
    names = [s["name"] for s in json.loads(out)["data"]["scorers"]]
    assert {
        "classification_f1",
        "classification_accuracy",
        "regression_rmse",
        "detection_map",
    } <= set(names)
    ws = _copy(tmp_path, "regression")
    (ws / "output").mkdir()
    shutil.copy(ws / "input" / "gt.csv", ws / "output" / "pred.csv")
    code, out, _ = _cli(capsys, "scorers", "test", "regression_rmse", ws, "--json")
    assert code == 0 and json.loads(out)["data"]["summary"]["rmse"] == 0.0
    assert not (ws / "output" / "result.json").exists()


def test_custom_scorer_plugin(tmp_path, capsys):
    ws = _copy(tmp_path, "classification")
    assert _cli(capsys, "run", ws, "--backend", "local")[0] == 0
    code, out, _ = _cli(
        capsys,
        "score",
        ws,
        "--plugin",
        EXAMPLES / "custom_scorers",
        "--scorer",
        "classification_f2",
        "--json",
    )
    assert code == 0, out
    gt, pred = _read(ws / "input" / "gt.csv"), _read(ws / "output" / "pred.csv")
    ids = sorted(gt)
    from sklearn.metrics import fbeta_score

    expected = fbeta_score([gt[i] for i in ids], [pred[i] for i in ids], beta=2, average="macro")
    assert json.loads(out)["data"]["summary"]["f2_macro"] == pytest.approx(expected, abs=1e-12)


def test_scorers_load_watch_reloads_in_a_running_process(tmp_path):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    source = (EXAMPLES / "custom_scorers" / "classification_f2.py").read_text()
    target = plugin_dir / "f2.py"
    target.write_text(source)
    proc = subprocess.Popen(
        [AUTOSCORER, "scorers", "load", target, "--watch", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "watching" in proc.stderr.readline()
        target.write_text(source + "\nthis line breaks the file\n")
        failed = json.loads(proc.stdout.readline())
        assert failed["change"] == "failed" and failed["error"]["code"] == "SCORER_LOAD_ERROR"
        target.write_text(source.replace('version="1.0.0"', 'version="1.1.0"'))
        loaded = json.loads(proc.stdout.readline())
        assert (loaded["change"], loaded["scorers"]) == ("loaded", ["classification_f2"])
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert json.loads(out)["data"]["loaded"] == ["classification_f2"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("NaN", "is nan"),
        ("Infinity", "is inf"),
        ("-9223372036854775809", "is an integer beyond 64 bits"),
        ('"\\ud800"', "holds a lone UTF-16 surrogate"),
    ],
)
def test_meta_json_params_must_be_plain_json(tmp_path, capsys, value, shown):
    """Python's json reads NaN, Infinity, any integer and a lone surrogate escape; a job's params
    travel as JSON and are stored, so meta.json holding one is a configuration error."""
    ws = _copy(tmp_path, "classification")
    meta = (ws / "meta.json").read_text()
    (ws / "meta.json").write_text(meta.replace('"params": {}', f'"params": {{"k.x": [{value}]}}'))
    for command in ("validate", "pipeline"):
        code, out, _ = _cli(capsys, command, ws, "--json")
        error = json.loads(out)["error"]
        assert (code, error["code"], error["stage"]) == (1, "CONFIG_VALIDATION_ERROR", "validation")
        assert error["details"]["path"] == "meta.json"
        assert f'params["k.x"][0] {shown}' in error["details"]["errors"][0]["msg"]
