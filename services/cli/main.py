"""``autoscorer``: the command line, and the composition root for one-machine use.

Every command returns data or raises ``AutoscorerError``; ``main`` is the one boundary that turns
errors into the standard envelope (``--json``) or a readable message, and into the exit code:
0 success, 1 a reported error (see docs/ERRORS.md), 2 bad command-line usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.cli import commands
from services.cli.envelope import failure, print_json, show_details, success
from services.scorer.oneshot import quiet_logging
from shared.bounded_json import loads_bounded
from shared.errors import AutoscorerError, Stage, internal_error
from shared.workspace import MAX_META_DEPTH


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the JSON response envelope")
    common.add_argument(
        "--debug",
        action="store_true",
        help="log at DEBUG and print tracebacks of unexpected errors (AUTOSCORER_DEBUG=1)",
    )
    common.add_argument("--config", type=Path, help="YAML settings file (AUTOSCORER_CONFIG)")
    common.add_argument(
        "--plugin", type=Path, action="append", default=[], help="extra scorer file or folder"
    )
    return common


def _params(text: str) -> dict[str, Any]:
    """``--params``: a JSON object, bounded in depth (a usage error otherwise, exit 2)."""
    try:
        value = loads_bounded(text, max_depth=MAX_META_DEPTH)
    except ValueError as exc:  # JsonTooDeep and JSONDecodeError are ValueErrors
        raise argparse.ArgumentTypeError(f"not a JSON object: {str(exc)[:200]}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, not {type(value).__name__}")
    return value


def _workspace_command(sub: Any, common: argparse.ArgumentParser, name: str, help_: str) -> Any:
    parser = sub.add_parser(name, parents=[common], help=help_)
    parser.add_argument("workspace", type=Path)
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="autoscorer", description="Automatic ML scoring")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _workspace_command(sub, common, "validate", "check a workspace and its meta.json")
    p.set_defaults(handler=commands.validate)
    for name, handler, help_ in (
        ("run", commands.run, "run the participant program only"),
        ("pipeline", commands.pipeline, "run, then score"),
    ):
        p = _workspace_command(sub, common, name, help_)
        p.add_argument("--backend", help="executor backend alias (local, docker, kubernetes)")
        p.set_defaults(handler=handler)
    p = _workspace_command(sub, common, "score", "score output/ against the ground truth")
    p.add_argument("--scorer", help="scorer name (default: meta.json's scorer)")
    p.add_argument(
        "--params", type=_params, help="scorer params as a JSON object (default: meta.json)"
    )
    p.set_defaults(handler=commands.score)
    p = _workspace_command(sub, common, "report", "write output/report.html (one HTML file)")
    p.set_defaults(handler=commands.report)

    scorers = sub.add_parser("scorers", help="list, load, reload and test scorers")
    ssub = scorers.add_subparsers(dest="scorers_command", required=True)
    ssub.add_parser("list", parents=[common]).set_defaults(handler=commands.scorers_list)
    for name, handler in (("load", commands.scorers_load), ("reload", commands.scorers_reload)):
        p = ssub.add_parser(name, parents=[common], help=f"{name} a scorer file or folder")
        p.add_argument("path", type=Path, nargs="?")
        p.add_argument("--file-path", type=Path, dest="file_path")
        p.add_argument("--watch", action="store_true", help="keep watching and reload on change")
        p.set_defaults(handler=handler)
    p = ssub.add_parser("test", parents=[common], help="score a workspace without writing")
    p.add_argument("scorer_name", nargs="?")
    p.add_argument("workspace", type=Path, nargs="?")
    p.add_argument("--scorer-name", dest="scorer_flag")
    p.add_argument("--workspace", type=Path, dest="workspace_flag")
    p.set_defaults(handler=commands.scorers_test)

    p = sub.add_parser("serve", parents=[common], help="run all four services in one process")
    p.add_argument("--port", type=int, help="gateway port (default: gateway.port)")
    p.set_defaults(handler=commands.serve)
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--url", default=os.environ.get("AUTOSCORER_URL", "http://127.0.0.1:8080"))
    client.add_argument("--api-key", help="default: $AUTOSCORER_API_KEY or .autoscorer/api-key")
    p = sub.add_parser("submit", parents=[common, client], help="submit a workspace to a gateway")
    p.add_argument("workspace", type=Path, nargs="?", help="local workspace, uploaded as tar.gz")
    p.add_argument("--remote-workspace", help="a workspace path under the gateway's data root")
    p.add_argument("--priority", type=int, default=5)
    p.add_argument("--wait", action="store_true", help="wait for the job to finish")
    p.add_argument("--wait-timeout", type=float, default=3600.0)
    p.set_defaults(handler=commands.submit)
    p = sub.add_parser("status", parents=[common, client], help="show a job")
    p.add_argument("job_id")
    p.set_defaults(handler=commands.status)

    config = sub.add_parser("config", help="show, validate or dump the settings")
    csub = config.add_subparsers(dest="config_command", required=True)
    for name, handler in (
        ("show", commands.config_show),
        ("validate", commands.config_validate),
        ("dump", commands.config_dump),
    ):
        csub.add_parser(name, parents=[common]).set_defaults(handler=handler)
    return parser


def _show(args: argparse.Namespace, outcome: commands.Outcome, started: float) -> commands.Outcome:
    """Print the outcome; returns what was shown (an error if the data cannot be JSON)."""
    elapsed = time.perf_counter() - started
    if not args.json:
        outcome.show()
        return outcome
    if outcome.error is None:
        envelope = success(outcome.data, elapsed)
    else:
        envelope = failure(outcome.error, elapsed, outcome.data)
    try:
        print_json(envelope)
    except ValueError as exc:  # NaN or infinity left in the data: never print invalid JSON
        error = internal_error(exc, stage=Stage.PLATFORM).to_info()
        print_json(failure(error, elapsed))
        return commands.Outcome(error=error)
    return outcome


def _setup_logging(debug: bool) -> None:
    """stderr logging; without --debug no traceback reaches the terminal (errors are reported
    once, in the standard form, by ``main``)."""
    level = "DEBUG" if debug else os.environ.get("AUTOSCORER_LOG_LEVEL", "WARNING")
    quiet_logging(logging.getLevelNamesMapping().get(level.upper(), logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False) or os.environ.get("AUTOSCORER_DEBUG"))
    _setup_logging(debug)
    show_details(debug)
    started = time.perf_counter()
    try:
        outcome = args.handler(args)
    except AutoscorerError as exc:
        outcome = commands.Outcome(error=exc.to_info())
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's one boundary; no traceback unless asked
        if debug:
            traceback.print_exc()
        outcome = commands.Outcome(error=internal_error(exc, stage=Stage.PLATFORM).to_info())
    try:
        outcome = _show(args, outcome, started)
        sys.stdout.flush()
    except BrokenPipeError:  # `autoscorer ... | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if outcome.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
