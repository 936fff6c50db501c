"""Issue 7, class 11: the commands README.md and docs/API.md show do what the docs say.

Every fenced ``bash`` block of the two pages is classified in ``PLAN`` (a new block fails
``test_every_documented_command_is_planned`` until it is), then ``test_documented_commands_print_
what_the_docs_show`` runs them in the order a reader would: in a fresh directory holding a copy of
the repository's ``examples/`` and a link to its ``.venv``, the quick start first (embedded mode,
local backend), then ``autoscorer serve`` on a free port, then the API examples against it. What a
command prints is compared with the block that follows it in the docs:

* text: line by line, ``...`` alone on a line stands for any lines, inside a line for any text;
* JSON: ``"…"`` (or ``"..."``) stands for any value, a ``"…": "…"`` member for any further
  members, a ``"…"`` element for any further elements. Otherwise an object must have exactly the
  shown keys. Strings are compared where they name a state or a kind (``STABLE_KEYS``), numbers
  and other strings only by type (ids, times and scores change from run to run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/API.md")
ELLIPSES = ("…", "...")
STABLE_KEYS = {"status", "code", "stage", "fault", "type", "event_type", "outcome_code", "scorer"}

pytestmark = [pytest.mark.slow]


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    text: str
    following: Block | None = None


def fenced_blocks(doc: str) -> list[Block]:
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    found: list[tuple[int, str, str]] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang, start = lines[i][3:].strip(), i
            i += 1
            body = []
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            found.append((start + 1, lang, "\n".join(body) + "\n"))
        i += 1
    blocks: list[Block] = []
    for n, (line, lang, text) in enumerate(found):
        nxt = found[n + 1] if n + 1 < len(found) else None
        following = Block(doc, nxt[0], nxt[1], nxt[2]) if nxt else None
        blocks.append(Block(doc, line, lang, text, following))
    return blocks


def bash_blocks() -> list[Block]:
    return [b for doc in DOCS for b in fenced_blocks(doc) if b.lang == "bash"]


# How each documented bash block is treated, by a piece of its text:
#   ("run", None)            run every command, each must exit 0
#   ("text", None)/("json", None)   run, and compare the output of its (last) command with the
#                            next fenced block of the page
#   ("skip", why)            not run, and why
PLAN: dict[str, tuple[str, str | None]] = {
    "autoscorer pipeline examples/classification --backend local": ("text", None),
    "autoscorer validate WS": ("skip", "a synopsis: WS, NAME, PATH are placeholders"),
    "autoscorer serve --port 8080 &": ("run", None),
    "--scorer classification_f2": ("run", None),
    "Authorization: Bearer $AUTOSCORER_API_KEY": ("run", None),
    "comp1/sub42": ("json", None),
    "sub43.tar.gz": ("run", None),
    "status=succeeded,failed&limit=1": ("json", None),
}
SKIPPED_LINES = {
    "scripts/test.sh": "the whole test suite: scripts/test.sh runs it, not this test",
    "--watch": "watches until stopped",
}


def plan_of(block: Block) -> tuple[str, str | None]:
    matches = [plan for key, plan in PLAN.items() if key in block.text]
    assert len(matches) == 1, f"{block.doc}:{block.line}: {len(matches)} PLAN entries match"
    return matches[0]


def commands(block: Block) -> list[str]:
    """The block's commands: continuations joined, comments and the setup step dropped."""
    joined = block.text.replace("\\\n", " ")
    found = []
    for raw in joined.splitlines():
        line = re.sub(r"\s+#\s.*$", "", raw).strip()
        if not line or line.startswith("#") or any(k in line for k in SKIPPED_LINES):
            continue
        found.append(line.removeprefix("scripts/setup.sh && "))
    return found


# --- matching ---------------------------------------------------------------------------------


def text_matches(shown: str, printed: str) -> bool:
    parts = []
    for line in shown.splitlines():
        if line.strip() in ELLIPSES:
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            pieces = re.split(r"\.\.\.|…", line)
            parts.append(".*".join(re.escape(p) for p in pieces) + r"\n")
    return re.fullmatch("".join(parts), printed.rstrip("\n") + "\n") is not None


def json_mismatches(shown: Any, got: Any, path: str = "$", key: str = "") -> list[str]:
    if isinstance(shown, str) and shown in ELLIPSES:
        return []
    if isinstance(shown, dict):
        if not isinstance(got, dict):
            return [f"{path}: shown an object, got {type(got).__name__}"]
        open_ended = any(k in ELLIPSES for k in shown)
        problems = [
            f"{path}.{k}: shown, missing" for k in shown if k not in ELLIPSES and k not in got
        ]
        if not open_ended:
            problems += [f"{path}.{k}: printed, not shown" for k in got if k not in shown]
        for k, value in shown.items():
            if k in got and k not in ELLIPSES:
                problems += json_mismatches(value, got[k], f"{path}.{k}", k)
        return problems
    if isinstance(shown, list):
        if not isinstance(got, list):
            return [f"{path}: shown a list, got {type(got).__name__}"]
        items = [s for s in shown if not (isinstance(s, str) and s in ELLIPSES)]
        if len(items) == len(shown) and len(got) != len(shown):
            return [f"{path}: shown {len(shown)} items, got {len(got)}"]
        if len(got) < len(items):
            return [f"{path}: shown at least {len(items)} items, got {len(got)}"]
        problems = []
        for n, value in enumerate(items):
            problems += json_mismatches(value, got[n], f"{path}[{n}]", key)
        return problems
    if shown is None or isinstance(shown, bool):
        return [] if got is shown else [f"{path}: shown {shown!r}, got {got!r}"]
    if isinstance(shown, int | float):
        ok = isinstance(got, int | float) and not isinstance(got, bool)
        return [] if ok else [f"{path}: shown a number, got {got!r}"]
    if not isinstance(got, str):
        return [f"{path}: shown a string, got {got!r}"]
    if key in STABLE_KEYS and shown != got:
        return [f"{path}: shown {shown!r}, got {got!r}"]
    return []


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Reader:
    """A reader's shell: a fresh directory with the examples, the embedded server once started."""

    home: Path
    env: dict[str, str]
    port: int
    server: subprocess.Popen[bytes] | None = None
    last_job: str | None = None

    def substitute(self, command: str) -> str:
        command = command.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")
        command = command.replace("--port 8080", f"--port {self.port}")
        if self.last_job:
            command = command.replace("JOB_ID", self.last_job)
        return command

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        command = self.substitute(command)
        if command.endswith("&"):
            self.start_server(command.removesuffix("&").strip())
            return subprocess.CompletedProcess(command, 0, "", "")
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if (found := re.search(r"\bjob-[0-9a-f]{8,}\b", done.stdout)) is not None:
            self.last_job = found.group(0)
        return done

    def start_server(self, command: str) -> None:
        with (self.home / "serve.log").open("wb") as log:
            self.server = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=self.home,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2):
                    break
            except OSError:
                assert self.server.poll() is None, (self.home / "serve.log").read_text()
                assert time.monotonic() < deadline, "serve not ready in 60 s"
                time.sleep(0.2)
        key = (self.home / ".autoscorer" / "api-key").read_text().strip()
        self.env.update(KEY=key, AUTOSCORER_API_KEY=key)

    def settle(self, timeout: float = 120) -> None:
        """Wait until no job is active (a listing's answer depends on it)."""
        if self.server is None:
            return
        url = f"http://127.0.0.1:{self.port}/v1/jobs?status=submitted,queued,running,scoring"
        request = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {self.env['KEY']}"}
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(request, timeout=10) as resp:
                if not json.load(resp)["data"]["jobs"]:
                    return
            time.sleep(0.3)
        raise AssertionError("jobs still active")

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(10)


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    shutil.copytree(
        ROOT / "examples",
        tmp_path / "examples",
        ignore=shutil.ignore_patterns("output", "logs", ".autoscorer", "__pycache__"),
    )
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCORER")}
    env["PYTHONPATH"] = str(ROOT)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env["AUTOSCORER_URL"] = f"http://127.0.0.1:{port}"
    shown = Reader(tmp_path, env, port)
    # docs/API.md names a workspace comp1/sub42 under the data root: the classification example
    shutil.copytree(
        ROOT / "examples" / "classification",
        tmp_path / "data" / "comp1" / "sub42",
        ignore=shutil.ignore_patterns("output", "logs"),
    )
    try:
        yield shown
    finally:
        shown.stop()


def test_every_documented_command_is_planned() -> None:
    for block in bash_blocks():
        kind, _ = plan_of(block)
        if kind in ("text", "json"):
            assert block.following is not None and block.following.lang == (
                "" if kind == "text" else "json"
            ), f"{block.doc}:{block.line}: no {kind} output block follows"


def test_documented_commands_print_what_the_docs_show(reader: Reader) -> None:
    problems: list[str] = []
    for block in bash_blocks():
        kind, _ = plan_of(block)
        if kind == "skip":
            continue
        if "limit=1" in block.text:
            reader.settle()
        for command in commands(block):
            done = reader.run(command)
            where = f"{block.doc}:{block.line} `{command}`"
            if done.returncode != 0:
                problems.append(f"{where}: exit {done.returncode}: {done.stderr[-800:]}")
                continue
            if kind == "text":
                assert block.following is not None
                if not text_matches(block.following.text, done.stdout):
                    problems.append(
                        f"{where} printed:\n{done.stdout}\nthe docs show:\n{block.following.text}"
                    )
            elif kind == "json":
                assert block.following is not None
                try:
                    got = json.loads(done.stdout)
                except ValueError:
                    problems.append(f"{where}: printed no JSON: {done.stdout[:500]}")
                    continue
                shown = json.loads(block.following.text)
                mismatch = json_mismatches(shown, got)
                if mismatch:
                    problems.append(f"{where}: {mismatch}")
            elif done.stdout.lstrip().startswith("{"):
                body = json.loads(done.stdout)
                if not body.get("ok"):
                    problems.append(f"{where}: answered {json.dumps(body)[:800]}")
    assert not problems, "\n\n".join(problems)


# --- the matchers themselves --------------------------------------------------------------------


def test_text_wildcards() -> None:
    shown = "a 1.0\n  f1   0.71...\n...\nresult: .../x.json\n"
    assert text_matches(shown, "a 1.0\n  f1   0.713623\nmore\nlines\nresult: /tmp/x.json\n")
    assert text_matches(shown, "a 1.0\n  f1   0.71\nresult: /x.json")
    assert not text_matches(shown, "a 1.0\n  f1   0.85\nresult: /tmp/x.json\n")


def test_json_wildcards() -> None:
    shown = {"ok": True, "data": {"status": "queued", "n": 1, "…": "…"}, "list": ["a", "…"]}
    assert (
        json_mismatches(
            shown, {"ok": True, "data": {"status": "queued", "n": 2.5, "x": 1}, "list": ["b", "c"]}
        )
        == []
    )
    assert json_mismatches(shown, {"ok": False, "data": {"status": "failed"}, "list": []}) == [
        "$.ok: shown True, got False",
        "$.data.n: shown, missing",
        "$.data.status: shown 'queued', got 'failed'",
        "$.list: shown at least 1 items, got 0",
    ]
    assert json_mismatches({"a": 1}, {"a": 1, "b": 2}) == ["$.b: printed, not shown"]
