"""Write the event contracts as JSON Schema and AsyncAPI 2.6 into docs/events/.

    .venv/bin/python scripts/gen_event_docs.py           # regenerate
    .venv/bin/python scripts/gen_event_docs.py --check   # exit 1 if docs/events is stale

tests/shared/test_events_docs.py runs the same check, so a contract change that is not
regenerated and committed (and so reviewed) fails the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from shared.events import EVENT_ADAPTER, EVENT_TYPES, SCHEMA_VERSION, BaseEvent

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "events"
EXCHANGE = "autoscorer.events"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Events a platform backend may publish itself (docs/EVENTS.md); the rest only AutoScorer emits.
EXTERNAL_PUBLISHERS = frozenset({"job.submitted", "run.completed", "cancel.requested"})
AMQP_BINDING = {
    "is": "routingKey",
    "exchange": {
        "name": EXCHANGE,
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    },
    "bindingVersion": "0.2.0",
}


def event_type(cls: type[BaseEvent]) -> str:
    return str(cls.model_fields["type"].default)


PARAMETERS: dict[str, tuple[str, str, str]] = {
    "run.requested": ("backend", "executor backend alias", "^[a-z0-9][a-z0-9_-]{0,62}$"),
    "scorer.test.completed": ("reply_to", "the asker's reply word", "^[A-Za-z0-9_-]{1,128}$"),
    "scorer.load.completed": ("reply_to", "the asker's reply word", "^[A-Za-z0-9_-]{1,128}$"),
}
"""Events whose routing key ends in one more word: (parameter, what it is, its pattern)."""


def channel_name(cls: type[BaseEvent]) -> str:
    name = event_type(cls)
    return f"{name}.{{{PARAMETERS[name][0]}}}" if name in PARAMETERS else name


def render() -> dict[str, str]:
    """Every generated file, relative path under docs/events -> content."""
    files = {f"schemas/{event_type(cls)}.json": _dump(_event_schema(cls)) for cls in EVENT_TYPES}
    files["schemas/event.json"] = _dump(_union_schema())
    files["asyncapi.json"] = _dump(asyncapi())
    return files


def _event_schema(cls: type[BaseEvent]) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, **cls.model_json_schema()}


def _union_schema() -> dict[str, Any]:
    schema = EVENT_ADAPTER.json_schema()
    return {"$schema": JSON_SCHEMA_DIALECT, "title": "Event", **schema}


def asyncapi() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(cls, "validation") for cls in EVENT_TYPES], ref_template="#/components/schemas/{model}"
    )
    return {
        "asyncapi": "2.6.0",
        "id": "urn:autoscorer:events",
        "info": {
            "title": "AutoScorer events",
            "version": str(SCHEMA_VERSION),
            "description": "Events exchanged by AutoScorer services over RabbitMQ. "
            "See docs/EVENTS.md for headers, retries and dead letters.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {"url": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1"}
        },
        "channels": {channel_name(cls): _channel(cls) for cls in EVENT_TYPES},
        "components": {
            "messages": {cls.__name__: _message(cls) for cls in EVENT_TYPES},
            "messageTraits": {"AutoscorerMessage": _message_trait()},
            "schemas": defs["$defs"],
        },
    }


def _channel(cls: type[BaseEvent]) -> dict[str, Any]:
    message = {"$ref": f"#/components/messages/{cls.__name__}"}
    name = event_type(cls)
    channel: dict[str, Any] = {
        "description": (cls.__doc__ or "").strip().splitlines()[0],
        "bindings": {"amqp": AMQP_BINDING},
        "subscribe": {"operationId": f"on{cls.__name__}", "message": message},
    }
    if name in EXTERNAL_PUBLISHERS:
        channel["publish"] = {"operationId": f"send{cls.__name__}", "message": message}
    if name in PARAMETERS:
        parameter, description, pattern = PARAMETERS[name]
        schema = {"type": "string", "pattern": pattern}
        channel["parameters"] = {parameter: {"description": description, "schema": schema}}
    return channel


def _message(cls: type[BaseEvent]) -> dict[str, Any]:
    return {
        "name": event_type(cls),
        "title": cls.__name__,
        "summary": (cls.__doc__ or "").strip().splitlines()[0],
        "contentType": "application/json",
        "traits": [{"$ref": "#/components/messageTraits/AutoscorerMessage"}],
        "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
        "bindings": {
            "amqp": {"deliveryMode": 2, "messageType": event_type(cls), "bindingVersion": "0.2.0"}
        },
    }


def _message_trait() -> dict[str, Any]:
    return {
        "correlationId": {
            "description": "AMQP correlation_id property = job_id",
            "location": "$message.payload#/job_id",
        },
        "headers": {
            "type": "object",
            "properties": {
                "traceparent": {"type": "string", "description": "W3C trace context"},
                "tracestate": {"type": "string", "description": "W3C trace context"},
                "x-autoscorer-attempt": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "delivery attempt; set by the bus on retries",
                },
            },
        },
    }


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def stale(out: Path = OUT) -> list[str]:
    """Generated files that differ from (or are missing in, or extra in) ``out``."""
    wanted = render()
    present = (
        {p.relative_to(out).as_posix() for p in out.rglob("*.json")} if out.exists() else set()
    )
    differ = [name for name, text in wanted.items() if _read(out / name) != text]
    return sorted(set(differ) | (present - set(wanted)))


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


def write(out: Path = OUT) -> None:
    wanted = render()
    for old in out.rglob("*.json") if out.exists() else []:
        if old.relative_to(out).as_posix() not in wanted:
            old.unlink()
    for name, text in wanted.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if docs/events is stale")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for name in outdated:
            print(f"stale: docs/events/{name}", file=sys.stderr)
        return 1 if outdated else 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
