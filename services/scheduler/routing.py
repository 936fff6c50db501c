"""Which executor backend a job runs on.

The first alias of ``backend_order`` that is also in ``enabled_backends`` wins (kubernetes when it
is enabled, else docker; ``local`` in the embedded mode). An enabled backend missing from the
order still counts, after the ordered ones. Checked once, when the scheduler is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.config import SchedulerSettings
from shared.errors import AutoscorerError, ErrorCode, Stage
from shared.models import JobSpec

_ALIAS = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Router:
    """Picks the backend alias a job's ``RunRequested`` is routed to."""

    backends: tuple[str, ...]  # enabled, most preferred first

    @classmethod
    def from_settings(cls, settings: SchedulerSettings) -> Router:
        enabled = set(settings.enabled_backends)
        ordered = [alias for alias in settings.backend_order if alias in enabled]
        rest = [alias for alias in settings.enabled_backends if alias not in ordered]
        backends = tuple(dict.fromkeys([*ordered, *rest]))
        bad = [alias for alias in backends if not _ALIAS.match(alias)]
        if not backends or bad:
            raise _config_error(backends, bad)
        return cls(backends)

    def route(self, spec: JobSpec) -> str:
        return self.backends[0]


def _config_error(backends: tuple[str, ...], bad: list[str]) -> AutoscorerError:
    message = (
        f"backend aliases {bad} are not valid (lower-case letters, digits, '-', '_')"
        if bad
        else "scheduler.enabled_backends names no backend"
    )
    return AutoscorerError(
        ErrorCode.CONFIG_VALIDATION_ERROR,
        message,
        stage=Stage.CONFIG,
        details={"backends": list(backends), "invalid": bad},
    )
