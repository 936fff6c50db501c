"""Benchmark the Docker executor against ``docker run --rm`` on a trivial container.

Run ``python -m bench.bench_executor`` (as root, with the engine and test images from
``scripts/provision/docker.sh``). Each round runs, interleaved:

* ``executor``: ``DockerExecutor.run`` of ``true`` in ``autoscorer-test/busybox:1``: the whole job
  (image check, participant view, output tmpfs mount/unmount, create, start, log follow, stats,
  wait, inspect, output copy, remove, run_info.json);
* ``docker run``: ``docker run --rm --network none autoscorer-test/busybox:1 true`` as a subprocess.

It prints the median wall time of each over ``--runs`` rounds (after two warm-up rounds), the
ratio of the medians executor / docker run (target <= 1.0), and the median of the per-round
ratios (each round's pair runs back to back, so it drifts less with the machine's load).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from services.executor.docker.backend import DockerExecutor
from services.executor.docker.config import DockerConfig
from shared.models import JobSpec
from shared.workspace import Workspace

IMAGE = "autoscorer-test/busybox:1"


async def time_executor(executor: DockerExecutor, root: Path) -> float:
    ws_root = root / uuid.uuid4().hex[:8]
    (ws_root / "input").mkdir(parents=True)
    spec = JobSpec(
        job_id=f"bench-{uuid.uuid4().hex[:12]}",
        scorer="none",
        container={"image": IMAGE, "cmd": ["true"]},
    )
    start = time.perf_counter()
    outcome = await executor.run(spec, Workspace(ws_root))
    elapsed = time.perf_counter() - start
    if outcome.status != "succeeded":
        raise RuntimeError(f"executor run failed: {outcome.error}")
    return elapsed


async def time_docker_run() -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "true",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"docker run failed: {err.decode()}")
    return elapsed


async def bench(runs: int, collect_stats: bool) -> None:
    executor = DockerExecutor(DockerConfig(pull_policy="never", collect_stats=collect_stats))
    ours: list[float] = []
    theirs: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp:
            for i in range(runs + 2):
                a = await time_executor(executor, Path(tmp))
                b = await time_docker_run()
                if i >= 2:
                    ours.append(a)
                    theirs.append(b)
    finally:
        await executor.close()
    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    print(f"runs={runs} collect_stats={collect_stats}")
    print(f"  executor   median {m_ours * 1000:7.1f} ms  (min {min(ours) * 1000:.1f})")
    print(f"  docker run median {m_theirs * 1000:7.1f} ms  (min {min(theirs) * 1000:.1f})")
    paired = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
    print(f"  ratio executor / docker run = {m_ours / m_theirs:.2f}  (target <= 1.0)")
    print(f"  median of per-round ratios  = {paired:.2f}  (less sensitive to load drift)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-stats", action="store_true", help="run with collect_stats=false")
    args = parser.parse_args()
    asyncio.run(bench(args.runs, not args.no_stats))


if __name__ == "__main__":
    main()
