"""Hostile participant containers: each ends with the right code, the host unharmed.

After every test the ``make_executor`` fixture asserts that no labelled container is left.
"""

from __future__ import annotations

import os
import time

import pytest

from services.executor.docker.logs import TRUNCATION_MARKER
from shared.errors import ErrorCode
from tests.executor.conftest import PYTHON

pytestmark = pytest.mark.docker

EGRESS = """
import os, socket, sys
print("interfaces", sorted(os.listdir("/sys/class/net")))
for host, port in (("1.1.1.1", 53), ("8.8.8.8", 443), ("127.0.0.1", 2375)):
    try:
        socket.create_connection((host, port), timeout=2)
    except OSError as exc:
        print("blocked", host, exc)
    else:
        print("CONNECTED", host)
        sys.exit(0)
sys.exit(7)
"""


async def test_network_egress_is_impossible(make_executor, make_job):
    spec, ws = make_job(["python3", "-c", EGRESS], image=PYTHON)
    outcome = await make_executor().run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.CONTAINER_EXIT_NONZERO
    assert outcome.exit_code == 7
    log = (ws.logs_dir / "container.log").read_text()
    assert "interfaces ['lo']" in log and "CONNECTED" not in log
    assert log.count("blocked") == 3


GROUND_TRUTH_HUNT = """
for p in /workspace/input/gt.csv /workspace/../workspace/input/gt.csv \
         /workspace/input/../input/gt.csv \
         /workspace/input/./gt.csv; do
  if [ -e "$p" ]; then echo "FOUND $p"; exit 9; fi
done
hits=$(find / -path /proc -prune -o -path /sys -prune -o -name 'gt*' -print 2>/dev/null)
if [ -n "$hits" ]; then echo "FOUND $hits"; exit 9; fi
if grep -rs SECRET / --exclude-dir=proc --exclude-dir=sys; then echo FOUND-CONTENT; exit 9; fi
ls -la /workspace /workspace/input
cp /workspace/input/data.csv /workspace/output/pred.csv
"""


async def test_ground_truth_is_nowhere_in_the_container(make_executor, make_job):
    spec, ws = make_job(["sh", "-c", GROUND_TRUTH_HUNT], expected_outputs=["pred.csv"])
    outcome = await make_executor().run(spec, ws)
    log = (ws.logs_dir / "container.log").read_text()
    assert outcome.status == "succeeded", (outcome.error, log)
    assert "FOUND" not in log and "data.csv" in log
    assert (ws.output_dir / "pred.csv").read_text() == (ws.input_dir / "data.csv").read_text()


WRITE_OUTSIDE = """
for p in /evil /etc/evil /workspace/evil /workspace/input/evil /workspace/input/data.csv \
         /workspace/meta.json /workspace/../evil; do
  if echo pwned > "$p"; then echo "WROTE $p"; exit 0; fi
done
echo ok > /tmp/scratch && echo "tmp writable"
exit 5
"""


async def test_writing_outside_output_fails(make_executor, make_job):
    spec, ws = make_job(["sh", "-c", WRITE_OUTSIDE])
    before = {p: p.read_bytes() for p in [ws.meta_path, *ws.input_dir.iterdir()]}
    outcome = await make_executor().run(spec, ws)
    log = (ws.logs_dir / "container.log").read_text()
    assert outcome.error is not None and outcome.error.code is ErrorCode.CONTAINER_EXIT_NONZERO, log
    assert outcome.exit_code == 5 and "WROTE" not in log and "tmp writable" in log
    assert "Read-only file system" in log
    assert {p: p.read_bytes() for p in [ws.meta_path, *ws.input_dir.iterdir()]} == before


FORK_BOMB = """
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""


@pytest.mark.slow
async def test_fork_bomb_hits_the_pids_limit_and_ends_on_time(make_executor, make_job):
    spec, ws = make_job(["python3", "-c", FORK_BOMB], image=PYTHON, time_limit=4)
    start = time.monotonic()
    outcome = await make_executor(pids_limit=32).run(spec, ws)
    elapsed = time.monotonic() - start
    assert outcome.error is not None and outcome.error.code is ErrorCode.TIMEOUT_ERROR
    assert outcome.error.details["pids_limit_reached"] is True
    assert elapsed < 4 + 10


async def test_memory_hog_is_oom_killed(make_executor, make_job):
    hog = "b = b'x' * (400 * 1024 * 1024); print('survived', len(b))"
    spec, ws = make_job(
        ["python3", "-c", hog], image=PYTHON, resources={"cpu": 1, "memory": "96Mi"}
    )
    outcome = await make_executor().run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.CONTAINER_OOM
    assert outcome.oom_killed is True
    assert "survived" not in (ws.logs_dir / "container.log").read_text()


async def test_sleeping_past_the_limit_is_killed_on_time(make_executor, make_job):
    spec, ws = make_job(["sleep", "600"], time_limit=2)
    start = time.monotonic()
    outcome = await make_executor().run(spec, ws)
    elapsed = time.monotonic() - start
    assert outcome.error is not None and outcome.error.code is ErrorCode.TIMEOUT_ERROR
    assert outcome.timed_out and outcome.duration_s is not None
    assert 2 <= outcome.duration_s < 2 + 1.5
    assert elapsed < 2 + 5
    assert outcome.peak_memory_bytes and outcome.peak_memory_bytes > 0  # sampled while running


async def test_log_flood_is_capped_with_a_marker_and_the_run_ends(make_executor, make_job):
    flood = "head -c 40000000 /dev/zero | tr '\\0' 'a' | fold -w 4000; echo done >&2"
    spec, ws = make_job(["sh", "-c", flood])
    outcome = await make_executor(log_limit="256Ki").run(spec, ws)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.log_truncated is True
    log = (ws.logs_dir / "container.log").read_bytes()
    marker = TRUNCATION_MARKER.format(limit=256 * 1024).encode()
    assert log.endswith(marker + b"\n")
    assert len(log) <= 256 * 1024 + len(marker) + 2


async def test_huge_output_is_cut_at_the_cap(make_executor, make_job):
    big = "dd if=/dev/zero of=/workspace/output/big bs=1M count=500; echo dd-exit=$?"
    spec, ws = make_job(["sh", "-c", big])
    outcome = await make_executor(output_limit="8Mi").run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.OUTPUT_TOO_LARGE
    assert outcome.error.details["bytes_used"] <= 8 * 1024 * 1024
    assert "No space left on device" in (ws.logs_dir / "container.log").read_text()
    assert not (ws.output_dir / "big").exists()
    assert _tree_bytes(ws.root) < 1024 * 1024
    assert not os.path.ismount(ws.private_dir / "docker-output")


async def test_too_many_output_files_is_too_large(make_executor, make_job):
    many = "i=0; while [ $i -lt 200 ]; do touch output/f$i || exit 0; i=$((i+1)); done"
    spec, ws = make_job(["sh", "-c", many])
    outcome = await make_executor(output_max_files=50).run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.OUTPUT_TOO_LARGE
    assert list(ws.output_dir.iterdir()) == []


async def test_non_existent_image_with_policy_never(make_executor, make_job):
    spec, ws = make_job(["true"], image="autoscorer-test/does-not-exist")
    outcome = await make_executor(pull_policy="never").run(spec, ws)
    assert outcome.error is not None and outcome.error.code is ErrorCode.IMAGE_NOT_PRESENT
    assert outcome.error.details["image"] == "autoscorer-test/does-not-exist:latest"
    info = (ws.logs_dir / "run_info.json").read_text()
    assert "IMAGE_NOT_PRESENT" in info


def _tree_bytes(root) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
