"""Services meet only through ``shared/``: a module of one service never imports another service.

The command line (``services/cli``, including ``autoscorer serve``) is the composition root that
may import them all. ``KNOWN`` lists the imports that still cross a service boundary, each with the
reason it remains (docs/ARCHITECTURE.md, "Services meet through shared/"; empty now): a new
crossing fails this test, and so does a listed one that is gone.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"
COMPOSITION_ROOTS = {"cli"}

KNOWN: dict[tuple[str, str], str] = {}
"""Crossings that remain, each with its reason: none. The gateway learns its scorers from the
scorer service's announcements and asks it to test and install scorer files over the bus."""


def imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` (a module of ``package``) imports, relative imports resolved."""
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module is not None:
                found.add(node.module)
    return found


def service_of(module: str) -> str | None:
    """``services.<name>.…`` -> ``<name>``; anything else -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "services" else None


def crossings() -> set[tuple[str, str]]:
    """(file, imported module) for every import from one service into another."""
    found: set[tuple[str, str]] = set()
    for path in sorted(SERVICES.rglob("*.py")):
        relative = path.relative_to(ROOT)
        owner = relative.parts[1] if len(relative.parts) > 2 else None
        if owner is None or owner in COMPOSITION_ROOTS:
            continue
        package = ".".join(relative.with_suffix("").parts[:-1])
        for module in imported_modules(path.read_text(encoding="utf-8"), package):
            other = service_of(module)
            if other is not None and other != owner:
                found.add((relative.as_posix(), module))
    return found


def test_no_service_imports_another_service() -> None:
    new = sorted(crossings() - set(KNOWN))
    assert not new, (
        "a service imports another service; share it through shared/ (or compose it in "
        f"services/cli): {new}"
    )


def test_the_list_of_remaining_crossings_is_current() -> None:
    gone = sorted(set(KNOWN) - crossings())
    assert not gone, f"these crossings are gone: take them off KNOWN and the docs: {gone}"


def test_the_checker_sees_every_form_of_import() -> None:
    source = (
        "import services.scorer.pool\n"
        "from services.executor import registry\n"
        "from ..scheduler.intake import admit\n"
        "from . import forms\n"
        "def f():\n    from shared.bus import Subscription\n"
    )
    found = imported_modules(source, "services.gateway")
    assert found == {
        "services.scorer.pool",
        "services.executor",
        "services.scheduler.intake",
        "services.gateway",
        "shared.bus",
    }
    assert [service_of(m) for m in sorted(found)] == [
        "executor",
        "gateway",
        "scheduler",
        "scorer",
        None,
    ]
