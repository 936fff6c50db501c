"""An HTTP-level fake of the few Kubernetes API endpoints the Kubernetes executor calls.

No Kubernetes API server can run on the development and CI machines. This aiohttp app serves
exactly what ``services/executor/k8s_api.py`` uses — create/read/delete/list Job (batch/v1),
list and watch Pods by label selector (``?watch=true`` streaming JSON lines), read a Pod log —
and the executor reaches it through the REAL kubernetes-asyncio client (token auth over plain
HTTP on 127.0.0.1). It is not Kubernetes: no scheduler, no kubelet, no admission or validation
of the manifest; a created Job gets one Pod whose status follows a scripted ``Scenario``.

Scenarios script the pod's life as ``Step``s. The pod stays Pending until a watch for it
connects, then takes one step every ``step_delay`` seconds. ``gone_after`` makes the first watch
send a ``410 Gone`` ERROR event after that many events (``gone_as_status``: answer the watch
request itself with HTTP 410) and marks every older resourceVersion as compacted, so only a
client that lists again (fresh resourceVersion) can go on.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

Json = dict[str, Any]
JOB_ID_ANNOTATION = "autoscorer/job-id"
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z"


@dataclass(frozen=True)
class Step:
    """One change of the pod (and optionally the Job) status."""

    state: Json | None = None  # the participant container's state
    phase: str = "Running"
    pod_reason: str | None = None
    job_conditions: list[Json] | None = None
    delete_pod: bool = False


@dataclass
class Scenario:
    steps: list[Step] = field(default_factory=list)
    log: bytes = b""
    gone_after: int | None = None
    gone_as_status: bool = False
    step_delay: float = 0.02
    on_finish: Callable[[], None] | None = None  # e.g. the program writing to output/ on the PVC


def running() -> Step:
    return Step({"running": {"startedAt": T0}})


def terminated(
    code: int, reason: str = "Error", message: str | None = None, finished: str = T1
) -> Step:
    state: Json = {"exitCode": code, "reason": reason, "startedAt": T0, "finishedAt": finished}
    if message is not None:
        state["message"] = message
    return Step({"terminated": state}, phase="Succeeded" if code == 0 else "Failed")


def deadline_condition() -> list[Json]:
    return [
        {
            "type": "Failed",
            "status": "True",
            "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline",
        }
    ]


def success(log: bytes = b"hello from the participant\n") -> Scenario:
    return Scenario([running(), terminated(0, "Completed")], log=log)


def image_pull_backoff(message: str) -> Scenario:
    return Scenario(
        [
            Step({"waiting": {"reason": "ErrImagePull", "message": message}}, "Pending"),
            Step({"waiting": {"reason": "ImagePullBackOff", "message": message}}, "Pending"),
        ]
    )


def oom_killed() -> Scenario:
    return Scenario([running(), terminated(137, "OOMKilled")], log=b"allocating...\n")


def exit_nonzero(
    code: int = 3,
    log: bytes = b"working\nTraceback: boom\n",
    message: str | None = "Traceback: boom\n",
) -> Scenario:
    return Scenario([running(), terminated(code, "Error", message)], log=log)


def deadline_killed() -> Scenario:
    """The Job controller kills the pod at its deadline: a SIGKILL exit, then the condition."""
    kill = terminated(137, "Error")
    return Scenario([running(), Step(kill.state, "Failed", job_conditions=deadline_condition())])


def deadline_deleted() -> Scenario:
    """Older controllers delete the pod outright when the Job's deadline passes."""
    return Scenario([running(), Step(delete_pod=True, job_conditions=deadline_condition())])


def gone_mid_watch(*, as_status: bool = False) -> Scenario:
    """The first watch is cut by a 410 (after one event, or at once as an HTTP status)."""
    scenario = success(b"survived a 410\n")
    scenario.gone_after = 0 if as_status else 1
    scenario.gone_as_status = as_status
    scenario.step_delay = 0.05
    return scenario


def never_finishes() -> Scenario:
    return Scenario([running()])


def never_scheduled() -> Scenario:
    return Scenario([])


def status_body(code: int, reason: str, message: str) -> Json:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def is_true(value: str | None) -> bool:
    """Go's strconv.ParseBool, as the API server reads ``?watch=``; the client sends ``True``."""
    return value in {"1", "t", "T", "TRUE", "true", "True"}


def matches(labels: Json, selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeCluster:
    """The fake's state, and what it recorded for tests to assert on."""

    def __init__(self, token: str = "test-token", namespace: str = "autoscorer") -> None:
        self.token = token
        self.namespace = namespace
        self.default = success()
        self.reject_create = False  # answer POST jobs with 422 Invalid
        self.break_logs = False  # answer log reads with 500
        self.scenarios: dict[str, Scenario] = {}
        self.jobs: dict[str, Json] = {}
        self.pods: dict[str, Json] = {}
        self.created: list[Json] = []  # every Job manifest exactly as POSTed
        self.deleted: list[tuple[str, str | None]] = []  # (job name, propagationPolicy)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.history: list[tuple[int, str, Json]] = []  # (resourceVersion, type, pod)
        self.version = 100
        self.compacted_below = 0
        self.changed = asyncio.Condition()
        self.watched: dict[str, asyncio.Event] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    # -- queries tests use
    def calls(self, method: str, suffix: str) -> list[dict[str, str]]:
        return [q for m, p, q in self.requests if m == method and p.endswith(suffix)]

    def watches(self) -> list[dict[str, str]]:
        return [q for m, p, q in self.requests if p.endswith("/pods") and is_true(q.get("watch"))]

    def pod_lists(self) -> list[dict[str, str]]:
        return [
            q for m, p, q in self.requests if p.endswith("/pods") and not is_true(q.get("watch"))
        ]

    # -- state changes
    def bump(self) -> str:
        self.version += 1
        return str(self.version)

    def compact(self) -> None:
        """Forget history: every resourceVersion before now is too old to watch from."""
        self.compacted_below = int(self.bump())

    async def record(self, kind: str, pod: Json) -> None:
        pod["metadata"]["resourceVersion"] = self.bump()
        async with self.changed:
            self.history.append((self.version, kind, copy.deepcopy(pod)))
            self.changed.notify_all()

    def scenario_for(self, job: Json) -> Scenario:
        job_id = job["metadata"].get("annotations", {}).get(JOB_ID_ANNOTATION, "")
        return self.scenarios.get(job_id, self.default)

    def new_pod(self, job: Json) -> Json:
        template = job["spec"]["template"]
        container = template["spec"]["containers"][0]
        name = f"{job['metadata']['name']}-x7k2p"
        labels = {**template["metadata"]["labels"], "job-name": job["metadata"]["name"]}
        status = {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": labels,
                "uid": f"uid-{name}",
            },
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending", "containerStatuses": [status]},
        }

    async def apply(self, job_name: str, pod_name: str, step: Step) -> None:
        job, pod = self.jobs.get(job_name), self.pods.get(pod_name)
        if job is None or pod is None:
            return
        if step.job_conditions is not None:
            job["status"]["conditions"] = step.job_conditions
            job["metadata"]["resourceVersion"] = self.bump()
        if step.delete_pod:
            del self.pods[pod_name]
            await self.record("DELETED", pod)
            return
        status = pod["status"]
        status["phase"] = step.phase
        if step.pod_reason:
            status["reason"] = step.pod_reason
        if step.state is not None:
            container = status["containerStatuses"][0]
            container["state"] = step.state
            if "running" in step.state or "terminated" in step.state:
                container["imageID"] = f"docker-pullable://{container['image']}@sha256:{'ab' * 32}"
        await self.record("MODIFIED", pod)

    async def play(self, job_name: str, pod_name: str, scenario: Scenario) -> None:
        await self.watched[pod_name].wait()
        for index, step in enumerate(scenario.steps, start=1):
            await asyncio.sleep(scenario.step_delay)
            if index == len(scenario.steps) and scenario.on_finish is not None:
                scenario.on_finish()
            await self.apply(job_name, pod_name, step)

    async def create_job(self, body: Json) -> Json:
        job = copy.deepcopy(body)
        meta = job["metadata"]
        meta.update(
            uid=f"uid-{meta['name']}",
            resourceVersion=self.bump(),
            creationTimestamp=T0,
            namespace=self.namespace,
        )
        job["status"] = {"active": 1, "startTime": T0}
        self.jobs[meta["name"]] = job
        pod = self.new_pod(job)
        self.pods[pod["metadata"]["name"]] = pod
        self.watched[pod["metadata"]["name"]] = asyncio.Event()
        await self.record("ADDED", pod)
        task = asyncio.create_task(
            self.play(meta["name"], pod["metadata"]["name"], self.scenario_for(job))
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

    async def delete_job(self, name: str) -> None:
        job = self.jobs.pop(name)
        for pod_name, pod in list(self.pods.items()):
            if pod["metadata"]["labels"].get("job-name") == job["metadata"]["name"]:
                del self.pods[pod_name]
                await self.record("DELETED", pod)

    def log_of(self, pod_name: str) -> bytes:
        for job in self.jobs.values():
            if pod_name.startswith(job["metadata"]["name"]):
                return self.scenario_for(job).log
        return b""

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with suppress(asyncio.CancelledError):
                await task


CLUSTER = web.AppKey("cluster", FakeCluster)


def cluster_of(request: web.Request) -> FakeCluster:
    return request.app[CLUSTER]


@web.middleware
async def auth_and_record(request: web.Request, handler: Any) -> web.StreamResponse:
    cluster = cluster_of(request)
    cluster.requests.append((request.method, request.path, dict(request.query)))
    if request.headers.get("Authorization") != f"Bearer {cluster.token}":
        return web.json_response(status_body(401, "Unauthorized", "bad token"), status=401)
    if request.match_info.get("ns", cluster.namespace) != cluster.namespace:
        return web.json_response(status_body(403, "Forbidden", "wrong namespace"), status=403)
    response: web.StreamResponse = await handler(request)
    return response


async def create_job(request: web.Request) -> web.Response:
    cluster, body = cluster_of(request), await request.json()
    cluster.created.append(copy.deepcopy(body))
    if cluster.reject_create:
        message = "Job.batch is invalid: spec.template.spec.containers[0].image: Required value"
        return web.json_response(status_body(422, "Invalid", message), status=422)
    if body["metadata"]["name"] in cluster.jobs:
        return web.json_response(status_body(409, "AlreadyExists", "job exists"), status=409)
    return web.json_response(await cluster.create_job(body), status=201)


async def list_jobs(request: web.Request) -> web.Response:
    cluster = cluster_of(request)
    items = [
        j
        for j in cluster.jobs.values()
        if matches(j["metadata"].get("labels", {}), request.query.get("labelSelector"))
    ]
    return web.json_response(
        {
            "kind": "JobList",
            "apiVersion": "batch/v1",
            "metadata": {"resourceVersion": str(cluster.version)},
            "items": items,
        }
    )


async def read_job(request: web.Request) -> web.Response:
    job = cluster_of(request).jobs.get(request.match_info["name"])
    if job is None:
        return web.json_response(status_body(404, "NotFound", "no such job"), status=404)
    return web.json_response(job)


async def delete_job(request: web.Request) -> web.Response:
    cluster, name = cluster_of(request), request.match_info["name"]
    policy = request.query.get("propagationPolicy")
    if request.can_read_body:
        policy = (await request.json()).get("propagationPolicy", policy)
    if name not in cluster.jobs:
        return web.json_response(status_body(404, "NotFound", "no such job"), status=404)
    cluster.deleted.append((name, policy))
    await cluster.delete_job(name)
    return web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": "jobs"},
        }
    )


async def pods(request: web.Request) -> web.StreamResponse:
    if is_true(request.query.get("watch")):
        return await watch_pods(request)
    cluster = cluster_of(request)
    selector = request.query.get("labelSelector")
    items = [p for p in cluster.pods.values() if matches(p["metadata"]["labels"], selector)]
    return web.json_response(
        {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(cluster.version)},
            "items": items,
        }
    )


def gone_event() -> bytes:
    body = status_body(410, "Expired", "too old resource version")
    return (json.dumps({"type": "ERROR", "object": body}) + "\n").encode()


def scenario_of_selector(cluster: FakeCluster, selector: str | None) -> Scenario | None:
    for job in cluster.jobs.values():
        if matches(job["spec"]["template"]["metadata"]["labels"], selector):
            return cluster.scenario_for(job)
    return None


async def watch_pods(request: web.Request) -> web.StreamResponse:
    cluster = cluster_of(request)
    selector = request.query.get("labelSelector")
    since = int(request.query.get("resourceVersion") or 0)
    scenario = scenario_of_selector(cluster, selector)
    if since < cluster.compacted_below:
        return web.json_response(
            status_body(410, "Expired", "too old resource version"), status=410
        )
    gone_after = scenario.gone_after if scenario else None
    if scenario is not None:
        scenario.gone_after = None  # only the first watch is cut
    if gone_after is not None and scenario is not None and scenario.gone_as_status:
        cluster.compact()
        return web.json_response(
            status_body(410, "Expired", "too old resource version"), status=410
        )
    for pod in cluster.pods.values():
        if matches(pod["metadata"]["labels"], selector):
            cluster.watched[pod["metadata"]["name"]].set()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    timeout = float(request.query.get("timeoutSeconds") or 5)
    with suppress(TimeoutError, ConnectionResetError):
        async with asyncio.timeout(timeout):
            await stream_events(cluster, response, selector, since, gone_after)
    return response


async def stream_events(
    cluster: FakeCluster,
    response: web.StreamResponse,
    selector: str | None,
    since: int,
    gone_after: int | None,
) -> None:
    sent = 0
    while True:
        async with cluster.changed:
            pending = [
                (v, k, p)
                for v, k, p in cluster.history
                if v > since and matches(p["metadata"]["labels"], selector)
            ]
            if not pending:
                await cluster.changed.wait()
                continue
        for version, kind, pod in pending:
            await response.write((json.dumps({"type": kind, "object": pod}) + "\n").encode())
            since, sent = version, sent + 1
            if gone_after is not None and sent >= gone_after:
                cluster.compact()
                await response.write(gone_event())
                return


async def pod_log(request: web.Request) -> web.Response:
    cluster, name = cluster_of(request), request.match_info["name"]
    if cluster.break_logs:
        return web.json_response(status_body(500, "InternalError", "etcd timeout"), status=500)
    if name not in cluster.pods:
        return web.json_response(status_body(404, "NotFound", "no such pod"), status=404)
    state = cluster.pods[name]["status"]["containerStatuses"][0]["state"]
    if "waiting" in state:  # as the real API answers for a container that never started
        message = f'container "participant" in pod "{name}" is waiting to start'
        return web.json_response(status_body(400, "BadRequest", message), status=400)
    data = cluster.log_of(name)
    if "limitBytes" in request.query:
        data = data[: int(request.query["limitBytes"])]
    return web.Response(body=data, content_type="text/plain")


def make_app(cluster: FakeCluster) -> web.Application:
    app = web.Application(middlewares=[auth_and_record])
    app[CLUSTER] = cluster
    jobs = "/apis/batch/v1/namespaces/{ns}/jobs"
    app.router.add_post(jobs, create_job)
    app.router.add_get(jobs, list_jobs)
    app.router.add_get(jobs + "/{name}", read_job)
    app.router.add_delete(jobs + "/{name}", delete_job)
    app.router.add_get("/api/v1/namespaces/{ns}/pods", pods)
    app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/log", pod_log)
    return app


def executor_settings(url: str, workspace_root: str, **overrides: Any) -> Json:
    """``{"type": "kubernetes", ...}`` pointing the executor at the fake with token auth."""
    return {
        "type": "kubernetes",
        "namespace": "autoscorer",
        "auth": {"mode": "token", "host": url, "token": "test-token", "insecure": True},
        "pvc_name": "autoscorer-workspaces",
        "workspace_root": workspace_root,
        "pvc_sub_path": "ws",
        "image_pull_secrets": ["registry-secret"],
        "ttl_seconds_after_finished": 300,
        "watch_timeout_s": 5,
        "request_timeout_s": 5,
        "deadline_grace_s": 10,
        **overrides,
    }


@asynccontextmanager
async def serve(cluster: FakeCluster) -> AsyncIterator[str]:
    """Run the fake on 127.0.0.1 with an ephemeral port; yields its base URL."""
    server = TestServer(make_app(cluster), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await cluster.close()
        await server.close()
