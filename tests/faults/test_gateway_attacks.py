"""Attacks on the gateway's HTTP edge (issue 7, classes 5, 7, 8 and 10): every one is a 4xx with the
standard envelope, quotes nothing unbounded, and leaves nothing on disk.

The gateway runs in the embedded mode (SQLite store, in-memory bus: the real parts of that mode).
Hostile requests that a client library would refuse to build are written on a raw socket.
Table tests name each known attack; hypothesis generates many more archives and bodies.
"""

from __future__ import annotations

import asyncio
import base64
import bz2
import contextlib
import gzip
import io
import json
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, example, given, settings

from services.gateway.app import create_app
from services.gateway.bodies import parse_json
from services.gateway.context import GATEWAY
from services.gateway.jobs_api import _unpack
from services.gateway.uploads import Limits, extract_workspace
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from services.scorer.main import create_scorer_service
from services.scorer.registry import ScorerRegistry
from shared.bus import Subscription
from shared.bus_memory import MemoryBus
from shared.config import ApiKey, GatewaySettings, Settings
from shared.errors import AutoscorerError, ErrorCode
from shared.jobs import JobStatus
from shared.store_sqlite import SqliteJobStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ADMIN, ALICE, BOB = "admin-key", "alice-key", "bob-key"
MAX_UPLOAD, MAX_FILES, MAX_UNPACKED = 200_000, 50, 400_000
LIMITS = Limits(MAX_FILES, MAX_UNPACKED)
ENVELOPE_LIMIT = 16 * 1024  # an error body never grows with what was sent


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Gw:
    def __init__(self, client: TestClient, store: SqliteJobStore, root: Path) -> None:
        self.client, self.store, self.root = client, store, root

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def leftovers(self) -> set[str]:
        """Everything under uploads/ (the receiving temp folders included)."""
        return {p.name for p in self.uploads.iterdir()} if self.uploads.exists() else set()

    async def post_json(self, path: str, body: Any, key: str = ALICE, **kw: Any) -> Any:
        resp = await self.client.post(path, json=body, headers={**auth(key), **kw})
        return resp.status, await resp.json()

    async def upload(
        self, archive: bytes, key: str = ALICE, headers: dict[str, str] | None = None, **fields: str
    ) -> tuple[int, dict[str, Any]]:
        form = FormData()
        form.add_field("archive", archive, filename="ws.bin")
        for name, value in fields.items():
            form.add_field(name, value)
        resp = await self.client.post(
            "/v1/jobs", data=form, headers={**auth(key), **(headers or {})}
        )
        return resp.status, await resp.json()

    async def raw(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send bytes as they are; the status, headers and body of the answer."""
        server = self.client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(request)
        await writer.drain()
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), headers, body


@contextlib.asynccontextmanager
async def running_gateway(tmp_path: Path) -> AsyncIterator[Gw]:
    root = tmp_path / "data"
    for owner, example_name in (("alice", "classification"), ("bob", "regression")):
        shutil.copytree(EXAMPLES / example_name, root / owner / example_name)
    settings = GatewaySettings(
        data_root=root,
        api_keys=[
            ApiKey(key=ADMIN, subject="ops", role="admin"),
            ApiKey(key=ALICE, subject="alice"),
            ApiKey(key=BOB, subject="bob"),
        ],
        max_upload_bytes=MAX_UPLOAD,
        max_upload_files=MAX_FILES,
        max_unpacked_bytes=MAX_UNPACKED,
        max_json_body_bytes=64 * 1024,
    )
    bus, store = MemoryBus(), SqliteJobStore(tmp_path / "jobs.sqlite3")
    hooks = SqliteWebhookStore(tmp_path / "hooks.sqlite3")

    async def drop(event: object) -> None:
        return None

    # the memory bus refuses unroutable events: a sink for what the gateway publishes, except the
    # requests to the scorer service (none here unless a test starts one: answered 503 at once)
    keys = ["job.#", "cancel.#", "rescore.#", "scorers.#"]
    await bus.subscribe(Subscription("test.sink", keys, drop))
    await bus.start()
    await store.init()
    await hooks.init()
    app = create_app(settings, store, bus, ScorerRegistry.with_builtins().infos(), hooks)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Gw(client, store, root)
    await bus.close()
    await store.close()


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gw]:
    async with running_gateway(tmp_path) as served:
        yield served


def assert_envelope(status: int, body: Any, code: str | None = None) -> None:
    assert 400 <= status < 500, (status, body)
    assert body["ok"] is False
    assert set(body["error"]) >= {"code", "stage", "message", "details"}
    assert len(json.dumps(body)) < ENVELOPE_LIMIT
    assert "Traceback" not in json.dumps(body)
    if code is not None:
        assert body["error"]["code"] == code, body


# --- archives -------------------------------------------------------------------------------


def workspace_members() -> list[tuple[str, bytes]]:
    base = EXAMPLES / "regression"
    return [
        (str(p.relative_to(base)), p.read_bytes())
        for p in sorted(base.rglob("*"))
        if p.is_file() and "output" not in p.parts and "logs" not in p.parts
    ]


def tar_bytes(
    members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz", **kw: Any
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode, **kw) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return buffer.getvalue()


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def zip_bytes(members: list[tuple[str, bytes]], attr: int | None = None) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # duplicate names are part of the attack
        for name, data in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if attr is not None:
                info.external_attr = attr << 16
            zf.writestr(info, data)
    return buffer.getvalue()


def zip_with_nul_name() -> bytes:
    return zip_bytes([("evilXname.txt", b"x")]).replace(b"evilXname", b"evil\x00name")


def corrupt_deflate() -> bytes:
    data = bytearray(zip_bytes([("meta.json", os.urandom(2000) + b"a" * 50_000)]))
    for offset in range(200, 400, 7):  # inside the compressed data of the one member
        data[offset] ^= 0xFF
    return bytes(data)


def gzip_bad_crc() -> bytes:
    data = bytearray(tar_bytes(workspace_members()))
    data[-8] ^= 0xFF  # the gzip trailer's CRC32: only reading to the end finds it
    return bytes(data)


def truncated_xz() -> bytes:
    data = tar_bytes(workspace_members(), "w:xz")
    return data[: len(data) * 2 // 3]


def corrupt_xz() -> bytes:
    data = bytearray(tar_bytes(workspace_members(), "w:xz"))
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


def trailing_garbage() -> bytes:
    return tar_bytes(workspace_members()) + b"not gzip at all"


def bomb(compress: Callable[[bytes], bytes]) -> bytes:
    return compress(tar_bytes([("meta.json", b"{}"), ("zeros", b"\0" * 5_000_000)], "w"))


def deep(depth: int) -> str:
    return "/".join(["d"] * depth) + "/f.txt"


def pax_huge() -> bytes:
    return tar_bytes(
        [("meta.json", b"{}")],
        "w:gz",
        pax_headers={"comment": "x" * 100_000},
        format=tarfile.PAX_FORMAT,
    )


def pax_nul_name() -> bytes:
    info = tarfile.TarInfo("placeholder")
    info.pax_headers = {"path": "evil\x00name"}
    info.size = 1
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"x"))
    return buffer.getvalue()


HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "zip bomb": (
        lambda: zip_bytes([("meta.json", b"{}"), ("zeros", b"\0" * 5_000_000)]),
        "unpacks to more than",
    ),
    "tar.gz bomb": (lambda: bomb(gzip.compress), "unpacks to more than"),
    "tar.xz bomb": (lambda: bomb(lzma.compress), "unpacks to more than"),
    "tar.bz2 bomb": (lambda: bomb(bz2.compress), "unpacks to more than"),
    "bomb after the end of the tar": (
        lambda: gzip.compress(tar_bytes([("meta.json", b"{}")], "w") + b"\0" * 5_000_000),
        "unpacks to more than",
    ),
    "corrupt deflate in a zip": (corrupt_deflate, "corrupt"),
    "gzip with a bad CRC": (gzip_bad_crc, "corrupt"),
    "gzip with trailing garbage": (trailing_garbage, "corrupt"),
    "truncated xz": (truncated_xz, "corrupt"),
    "corrupt xz": (corrupt_xz, "corrupt"),
    "NUL in a zip member name": (zip_with_nul_name, "NUL"),
    "NUL in a pax path": (pax_nul_name, "NUL"),
    "control character in a name": (lambda: tar_bytes([("a\x07b", b"x")]), "control"),
    "non-UTF-8 name": (lambda: tar_bytes([("caf\udce9", b"x")]), "not UTF-8"),
    "symlink": (
        lambda: tar_bytes([special("link", tarfile.SYMTYPE, "/etc/passwd")]),
        "not a regular file",
    ),
    "hardlink": (
        lambda: tar_bytes([("a", b"x"), special("b", tarfile.LNKTYPE, "a")]),
        "not a regular file",
    ),
    "fifo": (lambda: tar_bytes([special("p", tarfile.FIFOTYPE)]), "not a regular file"),
    "char device": (lambda: tar_bytes([special("tty", tarfile.CHRTYPE)]), "not a regular file"),
    "zip symlink": (
        lambda: zip_bytes([("link", b"/etc/passwd")], attr=stat.S_IFLNK | 0o777),
        "not a regular file",
    ),
    "absolute path": (lambda: tar_bytes([("/etc/cron.d/x", b"x")]), "escapes"),
    "dot-dot": (lambda: zip_bytes([("a/../../x", b"x")]), "escapes"),
    "deep directory chain": (lambda: tar_bytes([(deep(40), b"x")]), "deeper than"),
    "over-long name": (
        lambda: tar_bytes([("n" * 300, b"x")], format=tarfile.PAX_FORMAT),
        "longer than",
    ),
    "folders over the budget": (
        lambda: tar_bytes([special(f"dir{i}", tarfile.DIRTYPE) for i in range(60)]),
        "more than 50 files and folders",
    ),
    "implied folders over the budget": (
        lambda: tar_bytes([(f"{i}/" + deep(29), b"x") for i in range(2)]),
        "more than 50 files and folders",
    ),
    "files over the budget": (
        lambda: zip_bytes([(f"f{i}", b"x") for i in range(60)]),
        "more than 50 files",
    ),
    "oversized pax record": (pax_huge, "metadata record"),
    "not an archive": (lambda: b"just some text", "neither a tar"),
    "empty upload": (lambda: b"", "neither a tar"),
    "gzip of nothing useful": (lambda: gzip.compress(b"hello"), "neither a tar"),
    "no meta.json": (lambda: tar_bytes([("readme.txt", b"hi")]), "meta.json"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_archives_are_refused_and_leave_nothing(gw: Gw, name: str) -> None:
    make, fragment = HOSTILE[name]
    status, body = await gw.upload(make())
    assert_envelope(status, body)
    assert fragment in body["error"]["message"], body["error"]
    assert gw.leftovers() == set()
    assert str(gw.root) not in json.dumps(body)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_extraction_refuses_hostile_archives_in_place(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "upload"
    archive.write_bytes(HOSTILE[name][0]())
    dest = tmp_path / "dest"
    if name == "no meta.json":
        extract_workspace(archive, dest, LIMITS)  # unpacks fine; the submission refuses it
        return
    with pytest.raises(AutoscorerError) as caught:
        extract_workspace(archive, dest, LIMITS)
    assert caught.value.code is ErrorCode.UPLOAD_REJECTED
    assert not dest.exists()


def _mutations() -> st.SearchStrategy[bytes]:
    valid = [tar_bytes(workspace_members(), mode) for mode in ("w", "w:gz", "w:bz2", "w:xz")]
    valid.append(zip_bytes(workspace_members()))

    def flip(base: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
        data = bytearray(base)
        for offset, value in edits:
            data[offset % len(data)] = value
        return bytes(data[: max(1, len(data) - cut)])

    return st.builds(
        flip,
        st.sampled_from(valid),
        st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
        st.sampled_from([0, 0, 0, 1, 10, 100, 1000]),
    )


_names = st.one_of(
    st.text(min_size=1, max_size=40),
    st.lists(
        st.sampled_from(["a", "..", ".", "", "b\x00", "é", "/", "\\"]), min_size=1, max_size=40
    ).map("/".join),
)


def _member_archives() -> st.SearchStrategy[bytes]:
    members = st.lists(st.tuples(_names, st.binary(max_size=64)), min_size=1, max_size=8)

    def build(kind: str, items: list[tuple[str, bytes]]) -> bytes:
        try:
            return zip_bytes(items) if kind == "zip" else tar_bytes(items, kind)
        except (ValueError, UnicodeError, OSError, tarfile.TarError):
            return b""  # the library would not write it: an empty upload instead

    return st.builds(build, st.sampled_from(["zip", "w", "w:gz", "w:xz"]), members)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.one_of(_mutations(), _member_archives(), st.binary(max_size=4096)))
@example(data=b"\x1f\x8b" + b"\0" * 100)
@example(data=b"PK\x05\x06" + b"\0" * 18)
def test_any_archive_unpacks_within_bounds_or_is_refused_leaving_nothing(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive, dest = Path(tmp) / "upload", Path(tmp) / "dest"
        archive.write_bytes(data)
        refused: AutoscorerError | None = None
        try:
            extract_workspace(archive, dest, LIMITS)
        except AutoscorerError as exc:  # anything else fails the test
            refused = exc
        if refused is not None:
            assert refused.code is ErrorCode.UPLOAD_REJECTED
            assert not dest.exists()
            assert tmp not in refused.message
            return
        entries = list(dest.rglob("*"))
        assert len(entries) <= MAX_FILES
        assert sum(p.stat().st_size for p in entries if p.is_file()) <= MAX_UNPACKED
        assert all(p.resolve().is_relative_to(dest.resolve()) for p in entries)
        assert not any(p.is_symlink() for p in entries)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.one_of(_mutations(), _member_archives()))
async def test_any_upload_is_a_job_or_a_4xx_that_leaves_nothing(
    tmp_path: Path, data: bytes
) -> None:
    async with running_gateway(tmp_path / uuid.uuid4().hex) as gw:
        before = gw.leftovers()
        status, body = await gw.upload(data)
        if status == 202:
            assert len(gw.leftovers() - before) == 1
        else:
            assert_envelope(status, body)
            assert gw.leftovers() == before


async def test_a_cancelled_unpack_is_cleaned_up_when_its_thread_ends(tmp_path: Path) -> None:
    archive = tmp_path / "upload"
    archive.write_bytes(gzip.compress(tar_bytes([("zeros", b"\0" * 60_000_000)], "w")))
    target = tmp_path / "target"
    task = asyncio.create_task(_unpack(archive, target, Limits(10, 100_000_000)))
    await asyncio.sleep(0)  # the thread starts; unpacking 60 MB takes far longer than this
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if not target.exists():
            break
        await asyncio.sleep(0.05)
    assert not target.exists()


async def test_refused_after_unpacking_leaves_nothing(gw: Gw) -> None:
    """The archive unpacks fine but the submission is refused later (bad meta.json, a spec field
    that breaks the model, an idempotent replay): the unpacked folder goes too."""
    members = [(n, b"{nope" if n == "meta.json" else d) for n, d in workspace_members()]
    status, body = await gw.upload(tar_bytes(members))
    assert_envelope(status, body)
    status, body = await gw.upload(tar_bytes(workspace_members()), spec='{"time_limit": -1}')
    assert_envelope(status, body, "CONFIG_VALIDATION_ERROR")
    assert gw.leftovers() == set()


# --- multipart forms ------------------------------------------------------------------------


def multipart(parts: list[tuple[dict[str, str], bytes]], boundary: str = "XyZ") -> bytes:
    out = b""
    for headers, data in parts:
        out += f"--{boundary}\r\n".encode()
        for name, value in headers.items():
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def part(name: str, data: bytes, **headers: str) -> tuple[dict[str, str], bytes]:
    filename = '; filename="a.tgz"' if name == "archive" else ""
    return {"Content-Disposition": f'form-data; name="{name}"{filename}', **headers}, data


def http(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: x",
        "Connection: close",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines).encode("latin-1", "surrogateescape") + b"\r\n\r\n" + body


ARCHIVE = tar_bytes(workspace_members())
DEEP_SPEC = b"[" * 30_000 + b"]" * 30_000
FORMS: dict[str, tuple[str, bytes, str]] = {
    "no boundary": (
        "multipart/form-data",
        multipart([part("archive", ARCHIVE)]),
        "UPLOAD_REJECTED",
    ),
    "over-long boundary": (
        "multipart/form-data; boundary=" + "b" * 100,
        multipart([part("archive", ARCHIVE)], "b" * 100),
        "UPLOAD_REJECTED",
    ),
    "spec is not JSON": (
        "multipart/form-data; boundary=XyZ",
        multipart([part("archive", ARCHIVE), part("spec", b"{not json")]),
        "PARSE_ERROR",
    ),
    "spec is not UTF-8": (
        "multipart/form-data; boundary=XyZ",
        multipart([part("archive", ARCHIVE), part("spec", b'{"a": "\xff"}')]),
        "PARSE_ERROR",
    ),
    "spec nests deep": (
        "multipart/form-data; boundary=XyZ",
        multipart([part("archive", ARCHIVE), part("spec", DEEP_SPEC)]),
        "PARSE_ERROR",
    ),
    "base64 part": (
        "multipart/form-data; boundary=XyZ",
        multipart(
            [part("archive", base64.b64encode(ARCHIVE), **{"Content-Transfer-Encoding": "base64"})]
        ),
        "UPLOAD_REJECTED",
    ),
    "gzip-encoded part": (
        "multipart/form-data; boundary=XyZ",
        multipart([part("archive", gzip.compress(ARCHIVE), **{"Content-Encoding": "gzip"})]),
        "UPLOAD_REJECTED",
    ),
    "two archives": (
        "multipart/form-data; boundary=XyZ",
        multipart([part("archive", ARCHIVE), part("archive", ARCHIVE)]),
        "UPLOAD_REJECTED",
    ),
    "too many parts": (
        "multipart/form-data; boundary=XyZ",
        multipart([part("archive", ARCHIVE)] + [part("priority", b"1")] * 9),
        "UPLOAD_REJECTED",
    ),
    "unknown field with a huge name": (
        "multipart/form-data; boundary=XyZ",
        multipart([part("x" * 5000, b"1"), part("archive", ARCHIVE)]),
        "UPLOAD_REJECTED",
    ),
    "big priority field": (
        "multipart/form-data; boundary=XyZ",
        multipart([part("priority", b"1" * 100_000), part("archive", ARCHIVE)]),
        "UPLOAD_REJECTED",
    ),
    "no archive": (
        "multipart/form-data; boundary=XyZ",
        multipart([part("priority", b"1")]),
        "UPLOAD_REJECTED",
    ),
    "garbage body": ("multipart/form-data; boundary=XyZ", os.urandom(3000), "UPLOAD_REJECTED"),
    "charset nobody knows": (
        "multipart/form-data; boundary=XyZ; charset=klingon",
        multipart([part("priority", b"1"), part("archive", ARCHIVE)]),
        "",
    ),
}


@pytest.mark.parametrize("name", sorted(FORMS))
async def test_broken_forms_are_refused(gw: Gw, name: str) -> None:
    content_type, body, code = FORMS[name]
    resp = await gw.client.post(
        "/v1/jobs", data=body, headers={**auth(ALICE), "Content-Type": content_type}
    )
    if name == "charset nobody knows":  # parts are read as bytes: the charset does not matter
        assert resp.status == 202, await resp.text()
        return
    assert_envelope(resp.status, await resp.json(), code)
    assert gw.leftovers() == set()


# --- JSON bodies, headers, queries ----------------------------------------------------------

DEEP = b"[" * 30_000 + b"]" * 30_000  # within the 64 KiB body limit
JSON_BODIES: dict[str, tuple[str, bytes, int, str]] = {
    "invalid UTF-8": ("application/json", b'{"workspace": "\xff\xfe"}', 400, "PARSE_ERROR"),
    "unknown charset": ("application/json; charset=klingon", b"{}", 415, "PARSE_ERROR"),
    "latin-1 charset": ("application/json; charset=latin-1", b"{}", 415, "PARSE_ERROR"),
    "deep nesting": ("application/json", DEEP, 400, "PARSE_ERROR"),
    "nesting just past the limit": (
        "application/json",
        b'{"spec": ' + b"[" * 40 + b"]" * 40 + b"}",
        400,
        "PARSE_ERROR",
    ),
    "NaN": ("application/json", b'{"workspace": NaN}', 400, "PARSE_ERROR"),
    "lone surrogate": ("application/json", b'{"workspace": "\\ud800"}', 400, "PARSE_ERROR"),
    "huge integer": ("application/json", b'{"priority": ' + b"9" * 5000 + b"}", 400, "PARSE_ERROR"),
    "not JSON": ("application/json", b"{nope", 400, "PARSE_ERROR"),
    "text/plain": ("text/plain", b"{}", 415, "PARSE_ERROR"),
    "form-urlencoded": ("application/x-www-form-urlencoded", b"a=b", 415, "PARSE_ERROR"),
    "over the JSON limit": (
        "application/json",
        b'"' + b"x" * 70_000 + b'"',
        413,
        "UPLOAD_REJECTED",
    ),
    "unknown field with a huge name": (
        "application/json",
        json.dumps({"x" * 50_000: 1, "workspace": "a"}).encode(),
        400,
        "CONFIG_VALIDATION_ERROR",
    ),
    "a list": ("application/json", b"[1, 2]", 400, "CONFIG_VALIDATION_ERROR"),
    "NUL in the workspace": (
        "application/json",
        b'{"workspace": "alice/\\u0000x"}',
        400,
        "WORKSPACE_INVALID",
    ),
    "over-long workspace": (
        "application/json",
        json.dumps({"workspace": "a/" * 2000}).encode(),
        400,
        "CONFIG_VALIDATION_ERROR",
    ),
}


@pytest.mark.parametrize("name", sorted(JSON_BODIES))
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/webhooks", "/v1/scorers/test"])
async def test_bad_json_bodies_are_4xx_envelopes(gw: Gw, name: str, path: str) -> None:
    content_type, data, status, code = JSON_BODIES[name]
    resp = await gw.client.post(
        path, data=data, headers={**auth(ADMIN), "Content-Type": content_type}
    )
    body = await resp.json()
    if path != "/v1/jobs" and code not in ("PARSE_ERROR", "UPLOAD_REJECTED"):
        assert_envelope(resp.status, body)  # another route's model refuses it its own way
        return
    assert resp.status == status, body
    assert_envelope(resp.status, body, code)


async def test_corrupt_gzip_request_body_is_a_400_envelope(gw: Gw) -> None:
    data = bytearray(gzip.compress(b'{"workspace": "alice/classification"}' * 100))
    data[20] ^= 0xFF
    status, _, body = await gw.raw(
        http(
            "POST",
            "/v1/jobs",
            bytes(data),
            Authorization=f"Bearer {ALICE}",
            Content_Type="application/json",
            Content_Encoding="gzip",
        )
    )
    assert_envelope(status, json.loads(body))


@given(data=st.binary(max_size=512))
@settings(max_examples=500)
@example(data=DEEP)
@example(data=b'"\\udfff"')
@example(data=b"1" * 5000)
@example(data=b"-Infinity")
def test_parse_json_returns_a_value_or_a_parse_error(data: bytes) -> None:
    refused: AutoscorerError | None = None
    try:
        parse_json(data)
    except AutoscorerError as exc:  # anything else fails the test
        refused = exc
    if refused is not None:
        assert refused.code is ErrorCode.PARSE_ERROR
        assert len(refused.message) < 200


AUTH_HEADERS = {
    "non-UTF-8 bearer": b"Bearer \xff\xfe\xfd",
    "latin-1 bearer": "Bearer caf\xe9".encode("latin-1"),
    "over-long token": b"Bearer " + b"k" * 5000,
    "empty bearer": b"Bearer ",
    "another scheme": b"Basic dXNlcjpwYXNz",
}


@pytest.mark.parametrize("name", sorted(AUTH_HEADERS))
async def test_broken_authorization_headers_are_401(gw: Gw, name: str) -> None:
    request = b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
    status, _, body = await gw.raw(request + AUTH_HEADERS[name] + b"\r\n\r\n")
    assert_envelope(status, json.loads(body), "AUTH_REQUIRED")


async def test_control_characters_in_a_header_are_refused_by_the_http_parser(gw: Gw) -> None:
    """aiohttp's parser answers these itself (400, text/plain) before any middleware runs."""
    request = b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    status, _, _ = await gw.raw(request + b"Authorization: Bearer a\x01b\r\n\r\n")
    assert status == 400


async def test_non_utf8_api_key_header_is_401(gw: Gw) -> None:
    request = b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: \xff\r\n\r\n"
    status, _, body = await gw.raw(request)
    assert_envelope(status, json.loads(body), "AUTH_REQUIRED")


QUERIES = {
    "created_from=yesterday": "CONFIG_VALIDATION_ERROR",
    "created_to=2026-13-45": "CONFIG_VALIDATION_ERROR",
    "created_from=0001-01-01T00:00:00%2B14:00": "CONFIG_VALIDATION_ERROR",
    "created_from=" + "9" * 600: "CONFIG_VALIDATION_ERROR",
    "cursor=garbage": "CONFIG_VALIDATION_ERROR",
    "cursor=" + base64.urlsafe_b64encode(b"[" * 300 + b"]" * 300).decode(): "CONFIG_VALIDATION_"
    "ERROR",
    "cursor=" + base64.urlsafe_b64encode(b'["2026-01-01", 5]').decode(): "CONFIG_VALIDATION_ERROR",
    "cursor=" + base64.urlsafe_b64encode(b'{"a": 1}').decode(): "CONFIG_VALIDATION_ERROR",
    "cursor=" + base64.urlsafe_b64encode(b"\xff\xfe").decode(): "CONFIG_VALIDATION_ERROR",
    "cursor=" + "A" * 5000: "CONFIG_VALIDATION_ERROR",
    "limit=0": "CONFIG_VALIDATION_ERROR",
    "limit=" + "9" * 5000: "CONFIG_VALIDATION_ERROR",
    "status=exploded": "CONFIG_VALIDATION_ERROR",
    "scorer=" + "s" * 5000: "CONFIG_VALIDATION_ERROR",
}


@pytest.mark.parametrize("query", sorted(QUERIES))
async def test_bad_list_filters_are_400(gw: Gw, query: str) -> None:
    resp = await gw.client.get(f"/v1/jobs?{query}", headers=auth(ALICE))
    assert_envelope(resp.status, await resp.json(), QUERIES[query])


async def test_dates_without_a_zone_are_utc(gw: Gw) -> None:
    resp = await gw.client.get("/v1/jobs?created_from=2026-01-01", headers=auth(ALICE))
    assert resp.status == 200


async def _finished_job(gw: Gw) -> str:
    status, body = await gw.post_json("/v1/jobs", {"workspace": "alice/classification"})
    assert status == 202, body
    job_id = body["data"]["job_id"]
    for a, b in (
        (JobStatus.SUBMITTED, JobStatus.QUEUED),
        (JobStatus.QUEUED, JobStatus.RUNNING),
        (JobStatus.RUNNING, JobStatus.SCORING),
        (JobStatus.SCORING, JobStatus.FAILED),
    ):
        await gw.store.transition(job_id, a, b)
    return str(job_id)


@pytest.mark.parametrize("reason", ["r" * 1025, "r" * 20_000, "line\nbreak", "nul\x00"])
async def test_bad_rescore_reasons_are_400(gw: Gw, reason: str) -> None:
    job_id = await _finished_job(gw)
    resp = await gw.client.post(
        f"/v1/jobs/{job_id}/rescore", params={"reason": reason}, headers=auth(ALICE)
    )
    assert_envelope(resp.status, await resp.json(), "CONFIG_VALIDATION_ERROR")


async def test_a_long_but_allowed_reason_is_accepted(gw: Gw) -> None:
    job_id = await _finished_job(gw)
    resp = await gw.client.post(
        f"/v1/jobs/{job_id}/rescore", params={"reason": "é" * 1024}, headers=auth(ALICE)
    )
    assert resp.status == 202


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/jobs", {"GET", "POST"}),
        ("DELETE", "/v1/jobs/j1", {"GET"}),
        ("GET", "/v1/jobs/j1/cancel", {"POST"}),
        ("PATCH", "/v1/scorers/watch", {"GET", "POST", "DELETE"}),
        ("POST", "/healthz", {"GET"}),
    ],
)
async def test_405_answers_carry_allow(gw: Gw, method: str, path: str, allowed: set[str]) -> None:
    resp = await gw.client.request(method, path, headers=auth(ADMIN))
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) - {"HEAD"} == allowed
    assert (await resp.json())["ok"] is False


@pytest.mark.parametrize("job_id", ["j" * 5000, "%00", "..%2F..%2Fetc", "%FF%FE"])
async def test_crafted_job_ids_are_404_without_echo(gw: Gw, job_id: str) -> None:
    resp = await gw.client.get(f"/v1/jobs/{job_id}", headers=auth(ALICE))
    assert_envelope(resp.status, await resp.json(), "NOT_FOUND")


@pytest.mark.parametrize("key", ["k" * 201, "caf\u00e9", "a\tb", ""])
async def test_bad_idempotency_keys_are_400(gw: Gw, key: str) -> None:
    resp = await gw.client.post(
        "/v1/jobs",
        json={"workspace": "alice/classification"},
        headers={**auth(ALICE), "Idempotency-Key": key.encode().decode("latin-1")},
    )
    assert_envelope(resp.status, await resp.json(), "CONFIG_VALIDATION_ERROR")
    assert (
        await gw.store.find_active_by_workspace(
            str((gw.root / "alice" / "classification").resolve())
        )
        is None
    )


# --- tenancy --------------------------------------------------------------------------------


async def test_a_submitter_cannot_submit_another_submitters_folder(gw: Gw) -> None:
    status, body = await gw.post_json("/v1/jobs", {"workspace": "alice/classification"}, BOB)
    assert_envelope(status, body, "FORBIDDEN")
    status, body = await gw.post_json("/v1/jobs", {"workspace": "alice/nothing-here"}, BOB)
    assert_envelope(status, body, "FORBIDDEN")  # the same answer: existence is not revealed


async def test_a_link_in_ones_own_folder_does_not_reach_another(gw: Gw) -> None:
    (gw.root / "bob" / "sneaky").symlink_to(gw.root / "alice" / "classification")
    status, body = await gw.post_json("/v1/jobs", {"workspace": "bob/sneaky"}, BOB)
    assert_envelope(status, body, "FORBIDDEN")


async def test_upload_folders_are_never_submittable_by_path(gw: Gw) -> None:
    status, body = await gw.upload(tar_bytes(workspace_members()))
    assert status == 202, body
    job = await gw.store.get(body["data"]["job_id"])
    assert job is not None
    relative = str(Path(job.workspace).relative_to(gw.root.resolve()))
    for key in (BOB, ALICE, ADMIN):
        status, answer = await gw.post_json("/v1/jobs", {"workspace": relative}, key)
        assert_envelope(status, answer, "FORBIDDEN")


async def test_one_active_job_per_workspace_whoever_asks(gw: Gw) -> None:
    status, body = await gw.post_json("/v1/jobs", {"workspace": "alice/classification"}, ADMIN)
    assert status == 202
    first = body["data"]["job_id"]
    status, body = await gw.post_json("/v1/jobs", {"workspace": "alice/classification"}, ALICE)
    assert_envelope(status, body, "INVALID_STATE")
    assert status == 409 and first not in json.dumps(body)  # not the admin's job id
    status, body = await gw.post_json("/v1/jobs", {"workspace": "alice/classification"}, ADMIN)
    assert status == 200 and body["data"]["running"] is True and body["data"]["job_id"] == first


async def test_concurrent_submissions_of_one_workspace_make_one_job(gw: Gw) -> None:
    answers = await asyncio.gather(
        *(gw.post_json("/v1/jobs", {"workspace": "alice/classification"}) for _ in range(12))
    )
    assert sorted(status for status, _ in answers) == [200] * 11 + [202]
    assert len({body["data"]["job_id"] for _, body in answers}) == 1


# --- Idempotency-Key replays ----------------------------------------------------------------


async def test_same_key_same_body_is_the_same_job(gw: Gw) -> None:
    headers = {"Idempotency-Key": "k1"}
    body = {"workspace": "alice/classification", "priority": 3}
    status, first = await gw.post_json("/v1/jobs", body, **headers)
    assert status == 202
    job_id = first["data"]["job_id"]
    status, again = await gw.post_json("/v1/jobs", body, **headers)  # still active
    assert status == 200 and again["data"]["job_id"] == job_id
    await gw.store.transition(job_id, JobStatus.SUBMITTED, JobStatus.CANCELLED)
    status, again = await gw.post_json("/v1/jobs", body, **headers)  # finished since
    assert status == 200 and again["data"] == {**again["data"], "existing": True, "job_id": job_id}


@pytest.mark.parametrize(
    "changed",
    [
        {"priority": 4},
        {"workspace": "alice/other"},
        {"callback_url": "https://example.com/h"},
        {"spec": {"scorer": "classification_f1"}},
    ],
)
async def test_same_key_different_body_is_422(gw: Gw, changed: dict[str, Any]) -> None:
    shutil.copytree(EXAMPLES / "classification", gw.root / "alice" / "other")
    headers = {"Idempotency-Key": "k2"}
    body = {"workspace": "alice/classification", "priority": 3}
    status, first = await gw.post_json("/v1/jobs", body, **headers)
    assert status == 202
    await gw.store.transition(first["data"]["job_id"], JobStatus.SUBMITTED, JobStatus.CANCELLED)
    status, answer = await gw.post_json("/v1/jobs", {**body, **changed}, **headers)
    assert status == 422
    assert_envelope(status, answer, "IDEMPOTENCY_KEY_REUSED")


async def test_keys_are_per_submitter(gw: Gw) -> None:
    status, first = await gw.post_json(
        "/v1/jobs", {"workspace": "alice/classification"}, ALICE, **{"Idempotency-Key": "shared"}
    )
    status2, second = await gw.post_json(
        "/v1/jobs", {"workspace": "bob/regression"}, BOB, **{"Idempotency-Key": "shared"}
    )
    assert (status, status2) == (202, 202)
    assert first["data"]["job_id"] != second["data"]["job_id"]


async def test_upload_replays_leave_no_second_folder(gw: Gw) -> None:
    archive = tar_bytes(workspace_members())
    headers = {"Idempotency-Key": "up1"}
    status, first = await gw.upload(archive, headers=headers, priority="2")
    assert status == 202
    status, again = await gw.upload(archive, headers=headers, priority="2")
    assert status == 200 and again["data"]["job_id"] == first["data"]["job_id"]
    status, other = await gw.upload(archive, headers=headers, priority="3")
    assert_envelope(status, other, "IDEMPOTENCY_KEY_REUSED")
    other_archive = tar_bytes([*workspace_members(), ("extra.txt", b"x")])
    status, other = await gw.upload(other_archive, headers=headers, priority="2")
    assert_envelope(status, other, "IDEMPOTENCY_KEY_REUSED")
    assert len(gw.leftovers()) == 1  # the first job's folder only


# --- error bodies and logs ------------------------------------------------------------------


async def test_errors_never_echo_unbounded_input_or_internal_paths(
    gw: Gw, caplog: pytest.LogCaptureFixture
) -> None:
    huge = "w" * 100_000
    for key in (ALICE, ADMIN):
        status, body = await gw.post_json("/v1/jobs", {"workspace": huge}, key)
        assert_envelope(status, body)
        status, body = await gw.post_json("/v1/jobs", {"workspace": "alice/" + "x" * 3000}, key)
        assert_envelope(status, body)
        assert str(gw.root) not in json.dumps(body)
    resp = await gw.client.get("/v1/jobs/" + "j" * 3000, headers=auth(ALICE))
    assert_envelope(resp.status, await resp.json())
    assert all(len(record.getMessage()) < ENVELOPE_LIMIT for record in caplog.records)


async def test_the_access_log_quotes_little_of_a_long_request(
    gw: Gw, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="aiohttp.access")
    resp = await gw.client.get(
        "/v1/jobs?scorer=" + "s" * 20_000,
        headers={**auth(ALICE), "User-Agent": "u" * 8000},
    )
    assert resp.status == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert lines and all(len(line) < 400 for line in lines)


async def test_a_log_that_is_a_link_is_not_followed(gw: Gw) -> None:
    status, body = await gw.post_json("/v1/jobs", {"workspace": "alice/classification"})
    assert status == 202
    logs = gw.root / "alice" / "classification" / "logs"
    logs.mkdir(exist_ok=True)
    secret = gw.root / "secret.txt"
    secret.write_text("do not show")
    (logs / "container.log").symlink_to(secret)
    resp = await gw.client.get(f"/v1/jobs/{body['data']['job_id']}/logs", headers=auth(ALICE))
    assert_envelope(resp.status, await resp.json(), "NOT_FOUND")


async def test_a_failed_scorer_load_names_the_file_not_where_it_lives(
    gw: Gw, tmp_path: Path
) -> None:
    scorer = create_scorer_service(  # it loads the file; the gateway runs no scorer code
        Settings(scorer={"pool_size": 1, "plugin_dir": tmp_path / "scorer-plugins"}),
        gw.client.app[GATEWAY].bus,
        ScorerRegistry.with_builtins(),
        instance="scorer-1",
    )
    await scorer.start()
    try:
        status, body = await gw.post_json(
            "/v1/scorers/load", {"filename": "bad.py", "source": "raise SystemExit(3)"}, ADMIN
        )
    finally:
        await scorer.close()
    assert_envelope(status, body, "SCORER_LOAD_ERROR")
    assert str(tmp_path) not in json.dumps(body) and "bad.py" in body["error"]["message"]


async def test_a_scorer_load_with_no_scorer_service_is_503(gw: Gw) -> None:
    status, body = await gw.post_json(
        "/v1/scorers/load", {"filename": "ok.py", "source": "x = 1\n"}, ADMIN
    )
    assert status == 503 and body["error"]["code"] == "BUS_ERROR", body
    assert not (gw.root / "scorers" / "ok.py").exists()  # the last good state stays


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_fields = st.sampled_from(
    [
        "workspace",
        "spec",
        "priority",
        "callback_url",
        "filename",
        "source",
        "scorer_name",
        "url",
        "event_types",
    ]
)
_bodies = st.one_of(_json_values, st.dictionaries(_fields, _json_values, max_size=5))
_POSTS = [
    "/v1/jobs",
    "/v1/scorers/load",
    "/v1/scorers/test",
    "/v1/scorers/watch",
    "/v1/webhooks",
    "/v1/jobs/j1/cancel",
    "/v1/jobs/j1/rescore",
]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(_POSTS), body=_bodies, key=st.sampled_from([ADMIN, ALICE]))
async def test_any_json_body_on_any_route_is_never_a_5xx(
    tmp_path: Path, path: str, body: Any, key: str
) -> None:
    async with running_gateway(tmp_path / uuid.uuid4().hex) as gw:
        resp = await gw.client.post(path, json=body, headers=auth(key))
        answer = await resp.json()
        assert resp.status < 500, answer
        if not answer["ok"]:
            assert_envelope(resp.status, answer)
