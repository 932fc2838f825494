"""The Jinja2 environment that turns a `views.Page` into one HTML page.

Autoescaping is on for every template and nothing is ever marked safe, so text from the store
(model output above all) can only appear as text. Undefined names fail loudly instead of
rendering as blanks.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import BaseModel

from trustee_rl.report.charts import format_number
from trustee_rl.report.views import Page
from trustee_rl.stats import McNemar, PairedBootstrap, format_p


def render(page: Page) -> str:
    return _environment().get_template("page.html.j2").render(page=page)


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("trustee_rl.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        percent=percent,
        signed=signed,
        tone=tone,
        number=format_number,
        pretty_json=pretty_json,
        json_text=json_text,
        scalar=scalar,
        p_value=format_p,
        test_detail=test_detail,
    )
    return environment


def percent(rate: float, decimals: int = 0) -> str:
    return f"{100 * rate:.{decimals}f}%"


def signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def tone(reward: float | None) -> str:
    """The CSS class that colours a reward."""
    if reward is None:
        return "muted"
    return "pos" if reward > 0 else "neg" if reward < 0 else "zero"


def test_detail(test: McNemar | PairedBootstrap, paired: int) -> str:
    """What a stage-to-stage test rests on, for a tooltip."""
    if isinstance(test, McNemar):
        return f"McNemar exact on {paired} tasks: {test.c} passed only now, {test.b} only before"
    low, high = test.interval
    return (
        f"paired bootstrap on {paired} tasks: change {100 * test.difference:+.1f} points"
        f" [{100 * low:+.1f}, {100 * high:+.1f}]"
    )


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=_jsonable)


def _jsonable(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else str(value)


def json_text(text: str) -> str:
    """`text` re-indented when it is a JSON object or array, else unchanged."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return pretty_json(value) if isinstance(value, dict | list) else text


def scalar(value: Any) -> str:
    """A config value on one line: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)
