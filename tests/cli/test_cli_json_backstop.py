"""The CLI never prints invalid JSON: data holding NaN or infinity becomes a standard error."""

from __future__ import annotations

import argparse
import json
import math
import time

from services.cli import main as cli_main
from services.cli.commands import Outcome


def test_nan_in_the_data_becomes_an_internal_error_envelope(capsys):
    args = argparse.Namespace(json=True)
    outcome = Outcome(data={"summary": {"score": math.nan}, "deep": [{"x": -math.inf}]})

    shown = cli_main._show(args, outcome, time.perf_counter())
    out, err = capsys.readouterr()

    envelope = json.loads(out, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(c)))
    assert envelope["status"] == "error" and envelope["error"]["code"] == "INTERNAL_ERROR"
    assert "Out of range float values are not JSON compliant" in envelope["error"]["message"]
    assert shown.error is not None and err == ""
