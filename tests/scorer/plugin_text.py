"""Source text of small scorer plugins written to files by the registry and watch tests."""

TEMPLATE = """
from pydantic import BaseModel

from shared.models import Result
from shared.scoring import register


class Params(BaseModel):
    factor: float = 1.0


@register("{name}", version="{version}", task_type="demo", description="test scorer",
          expected_files=(), primary_metric="value", params=Params)
def scorer(ws, params):
    return Result(summary={{"value": {value} * params.factor}})
"""


def plugin(name: str = "demo", version: str = "1.0.0", value: float = 1.0) -> str:
    return TEMPLATE.format(name=name, version=version, value=value)
