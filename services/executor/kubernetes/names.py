"""Names, labels and paths a Kubernetes run is known by; pure functions, no API calls."""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath

from shared.errors import ErrorCode, validation_error

MANAGED_BY = "autoscorer"
COMPONENT = "participant-run"
JOB_ID_LABEL = "autoscorer.job_id"
JOB_ID_ANNOTATION = "autoscorer/job-id"
CONTAINER_NAME = "participant"

MANAGED_SELECTOR = (
    f"app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/component={COMPONENT}"
)

_LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def _digest(job_id: str) -> str:
    return hashlib.sha256(job_id.encode()).hexdigest()[:10]


def job_name(job_id: str) -> str:
    """A DNS-1123 label (≤ 63 chars) unique per job id: ``as-<readable part>-<hash>``."""
    readable = _NOT_DNS.sub("-", job_id.lower()).strip("-")[:40].rstrip("-")
    return f"as-{readable}-{_digest(job_id)}" if readable else f"as-{_digest(job_id)}"


def job_id_label(job_id: str) -> str:
    """The job id itself when it is a valid label value, else a stable hash of it."""
    return job_id if _LABEL_VALUE_RE.match(job_id) else f"h-{_digest(job_id)}"


def job_labels(job_id: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "autoscorer-job",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": COMPONENT,
        JOB_ID_LABEL: job_id_label(job_id),
    }


def job_selector(job_id: str) -> str:
    return f"{MANAGED_SELECTOR},{JOB_ID_LABEL}={job_id_label(job_id)}"


def workspace_sub_path(local_root: str, workspace_root: str, pvc_prefix: str) -> str:
    """The PVC subPath of a workspace the worker sees at ``local_root``.

    The worker mounts the PVC (at ``pvc_prefix`` inside it) on ``workspace_root``; a workspace
    outside that mount cannot be reached by the job pod.
    """
    local, root = PurePosixPath(local_root), PurePosixPath(workspace_root)
    try:
        relative = local.relative_to(root)
    except ValueError:
        relative = None
    if relative is None or relative == PurePosixPath(".") or ".." in relative.parts:
        raise validation_error(
            ErrorCode.WORKSPACE_INVALID,
            f"workspace {local_root} is not below the PVC mount {workspace_root}",
            workspace=local_root,
            workspace_root=workspace_root,
        )
    return (PurePosixPath(pvc_prefix) / relative).as_posix() if pvc_prefix else relative.as_posix()


def normalise_image(ref: str) -> str:
    """``repo`` → ``repo:latest``; a tag or digest is kept; a registry port is not a tag."""
    ref = ref.strip()
    if "@" in ref:
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"
