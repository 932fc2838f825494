"""The run report: one self-contained HTML file (inline CSS, SVG and a little JS) about a run store.

It only reads the store, so it can be built while a run is still writing to it (WAL allows that);
episodes not judged yet show as "pending". All text from the store (model output included) is
untrusted and goes through `html.escape`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from statistics import fmean
from typing import Any

from pydantic import TypeAdapter, ValidationError

from trustee_rl.curriculum import ORDINAL_ASPECTS, AspectStats, Curriculum, CurriculumConfig
from trustee_rl.report_charts import PALETTE, Series, bar, format_number, line_chart, rate_color
from trustee_rl.schema import Episode, Message, SimCall, Task, ToolCall, Verdict
from trustee_rl.store import RunStore

REPORT_FILE = "report.html"
# The browser holds full conversations; beyond this many episodes the file would get unwieldy.
BROWSER_CAP = 500
PROGRESS_CHUNKS = 5
_CONFIG_KEYS = ("policy", "simulator", "seed", "episodes")

AspectTable = dict[str, dict[str, AspectStats]]
_ASPECT_TABLE = TypeAdapter(AspectTable)


@dataclass(frozen=True)
class RunData:
    """Everything the report shows, read from the store up front."""

    run_dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    tasks: dict[str, Task]
    episodes: list[Episode]
    verdicts: dict[str, Verdict]
    curriculum: list[tuple[int, dict[str, Any]]]
    metrics: list[tuple[int, str, float]]

    def scored(self) -> list[tuple[Episode, Verdict]]:
        """Scored episodes with their verdicts, in index order."""
        pairs = [(episode, self.verdicts.get(episode.id)) for episode in self.episodes]
        return [(e, v) for e, v in pairs if v is not None and v.scored and v.reward is not None]


def load_run(run_dir: Path) -> RunData:
    with RunStore.open(run_dir) as store:
        return RunData(
            run_dir=run_dir,
            config=store.config,
            summary=store.summary(),
            tasks={task.id: task for task in store.tasks()},
            episodes=store.episodes(),
            verdicts={verdict.episode_id: verdict for verdict in store.verdicts()},
            curriculum=store.curriculum_states(),
            metrics=store.metrics(),
        )


def build_report(run_dir: Path) -> str:
    data = load_run(run_dir)
    sections = [
        _overview(data),
        _curves(data),
        _aspects(data),
        _criteria(data),
        _unscored(data),
        _browser(data),
    ]
    return _PAGE.format(
        title=escape(f"trustee-rl report: {run_dir.name or run_dir}"),
        css=_CSS,
        body="".join(sections),
        script=_SCRIPT,
    )


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Build the report of the run in `run_dir` and write it to `out` (default: in the run dir)."""
    text = build_report(run_dir)
    path = out or run_dir / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- overview --------------------------------------------------------------------------------------


def _overview(data: RunData) -> str:
    summary = data.summary
    pending = summary["episodes"] - summary["scored"] - summary["unscored"]
    cards = [
        ("episodes", str(summary["episodes"])),
        ("scored", str(summary["scored"])),
        ("unscored", str(summary["unscored"])),
        ("mean reward", _reward_text(summary["mean_reward"])),
        ("tasks", str(summary["tasks"])),
    ]
    if pending:
        cards.append(("pending", str(pending)))
    config_rows = [(key, data.config[key]) for key in _CONFIG_KEYS if key in data.config]
    generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        '<header class="top"><h1>trustee-rl run report</h1>'
        f'<p class="muted"><code>{escape(str(data.run_dir.resolve()))}</code>'
        f" · generated {escape(generated)}</p></header>"
        + _nav()
        + '<section id="overview"><div class="cards">'
        + "".join(
            f'<div class="card"><div class="card-value">{escape(value)}</div>'
            f'<div class="card-label">{escape(label)}</div></div>'
            for label, value in cards
        )
        + '</div><table class="kv">'
        + "".join(
            f"<tr><th>{escape(key)}</th><td><code>{escape(_scalar_text(value))}</code></td></tr>"
            for key, value in config_rows
        )
        + "</table>"
        + _collapsible("full run config", _pre(_pretty_json(data.config)))
        + "</section>"
    )


def _nav() -> str:
    links = [
        ("overview", "Overview"),
        ("curves", "Curves"),
        ("aspects", "Aspects"),
        ("criteria", "Criteria"),
        ("unscored", "Unscored"),
        ("episodes", "Episodes"),
    ]
    return '<nav class="nav">' + "".join(f'<a href="#{a}">{t}</a>' for a, t in links) + "</nav>"


# -- curves ----------------------------------------------------------------------------------------


def _curves(data: RunData) -> str:
    metrics = _metric_series(data)
    charts = [_metric_chart(name, points, i) for i, (name, points) in enumerate(metrics)]
    charts.append(_curriculum_chart(data.curriculum))
    charts.append(_reward_chart(data.scored()))
    return _section("curves", "Curves", '<div class="charts">' + "".join(charts) + "</div>")


def _metric_series(data: RunData) -> list[tuple[str, list[tuple[float, float | None]]]]:
    series: dict[str, list[tuple[float, float | None]]] = {}
    for step, name, value in data.metrics:
        series.setdefault(name, []).append((step, value))
    return sorted(series.items())


def _metric_chart(name: str, points: list[tuple[float, float | None]], number: int) -> str:
    color = PALETTE[number % len(PALETTE)]
    chart = line_chart(name, [Series(name, points, color)], x_label="step", y_label=name)
    return f'<figure class="chart-box">{chart}</figure>'


def _curriculum_chart(states: list[tuple[int, dict[str, Any]]]) -> str:
    latest = states[-1][1] if states else {}
    history = latest.get("history") or []
    if history:
        points: list[tuple[float, float | None]] = [
            (number, level) for number, level in enumerate(history, start=1)
        ]
    else:
        points = [(step + 1, state.get("level")) for step, state in states]
    chart = line_chart(
        "curriculum level D",
        [Series("D", points, PALETTE[1])],
        x_label="curriculum update",
        y_label="D",
    )
    return f'<figure class="chart-box">{chart}</figure>'


def _reward_chart(scored: list[tuple[Episode, Verdict]]) -> str:
    points = [(episode.index, verdict.reward or 0.0) for episode, verdict in scored]
    window = max(3, min(100, len(points) // 20))
    rewards = [reward for _, reward in points]
    average: list[tuple[float, float | None]] = [
        (index, fmean(rewards[max(0, i - window + 1) : i + 1]))
        for i, (index, _) in enumerate(points)
    ]
    chart = line_chart(
        "reward per episode",
        [
            Series("reward", points, PALETTE[0], line=False),
            Series(f"moving avg ({window})", average, PALETTE[4], markers=False),
        ],
        x_label="episode index",
        y_label="reward",
    )
    return f'<figure class="chart-box">{chart}</figure>'


# -- per-aspect success ----------------------------------------------------------------------------


def _aspects(data: RunData) -> str:
    table, origin = _aspect_table(data)
    if not table:
        return _section("aspects", "Per-aspect success", _empty("no scored episodes yet"))
    note = f'<p class="muted">{escape(origin)}; success means a reward above 0.</p>'
    blocks = [_aspect_block(aspect, values) for aspect, values in table.items()]
    return _section(
        "aspects", "Per-aspect success", note + '<div class="aspects">' + "".join(blocks) + "</div>"
    )


def _aspect_table(data: RunData) -> tuple[AspectTable, str]:
    """Per-aspect stats from the latest curriculum state, else recomputed from tasks + verdicts."""
    if data.curriculum:
        step, state = data.curriculum[-1]
        try:
            table = _ASPECT_TABLE.validate_python(state.get("aspect_stats") or {})
        except ValidationError:
            table = {}
        if table:
            return table, f"from the curriculum state after update {step + 1}"
    curriculum = Curriculum(CurriculumConfig())
    for episode, verdict in data.scored():
        task = data.tasks.get(episode.task_id)
        if task is not None and verdict.reward is not None:
            curriculum.record(task.difficulty, verdict.reward, verdict.reward > 0)
    return curriculum.state.aspect_stats, "computed from the tasks' difficulty and the verdicts"


def _aspect_block(aspect: str, values: dict[str, AspectStats]) -> str:
    rows = []
    for value in sorted(values, key=lambda value: _aspect_order(aspect, value)):
        stats = values[value]
        rate = stats.successes / stats.episodes if stats.episodes else 0.0
        rows.append(
            f"<tr><td>{escape(value)}</td><td class='num'>{stats.episodes}</td>"
            f"<td class='rate'>{bar(rate, PALETTE[2])} {_percent(rate)}</td>"
            f"<td class='num'>{_reward_html(stats.mean_reward)}</td></tr>"
        )
    return (
        f'<div class="card-table"><h3>{escape(aspect)}</h3><table class="grid">'
        "<tr><th>value</th><th class='num'>n</th><th>success</th>"
        "<th class='num'>mean reward</th></tr>" + "".join(rows) + "</table></div>"
    )


def _aspect_order(aspect: str, value: str) -> tuple[float, str]:
    ordered = ORDINAL_ASPECTS.get(aspect, ())
    if value in ordered:
        return float(ordered.index(value)), value
    try:
        return float(value), value
    except ValueError:
        return float("inf"), value


# -- judge criteria --------------------------------------------------------------------------------


@dataclass
class _Tally:
    sources: set[str]
    passed: list[int]
    seen: list[int]

    def rate(self, chunk: int | None = None) -> float | None:
        seen = sum(self.seen) if chunk is None else self.seen[chunk]
        passed = sum(self.passed) if chunk is None else self.passed[chunk]
        return passed / seen if seen else None


def _criteria(data: RunData) -> str:
    scored = data.scored()
    if not scored:
        return _section("criteria", "Judge criteria", _empty("no scored episodes yet"))
    chunks = _chunks(len(scored), PROGRESS_CHUNKS)
    tallies = _tally_criteria(scored, chunks)
    head = "".join(
        f"<th class='num'>#{scored[start][0].index}–{scored[end - 1][0].index}</th>"
        for start, end in chunks
    )
    rows = []
    for name, tally in tallies.items():
        cells = "".join(_heat_cell(tally.rate(i), tally.seen[i]) for i in range(len(chunks)))
        overall = tally.rate() or 0.0
        rows.append(
            f"<tr><th>{escape(name)}</th><td>{escape(', '.join(sorted(tally.sources)))}</td>"
            f"<td class='num'>{sum(tally.seen)}</td>"
            f"<td class='rate'>{bar(overall, PALETTE[2])} {_percent(overall, 1)}</td>{cells}</tr>"
        )
    note = (
        f'<p class="muted">Pass rate over {len(scored)} scored episodes, then per chunk of'
        " episodes in index order (training progress).</p>"
    )
    table = (
        '<div class="scroll"><table class="grid criteria"><tr><th>criterion</th><th>source</th>'
        f"<th>n</th><th>pass rate</th>{head}</tr>" + "".join(rows) + "</table></div>"
    )
    return _section("criteria", "Judge criteria", note + table)


def _chunks(count: int, most: int) -> list[tuple[int, int]]:
    """Split range(count) into up to `most` contiguous, nearly equal (start, end) chunks."""
    parts = min(count, most)
    bounds = [round(i * count / parts) for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def _tally_criteria(
    scored: list[tuple[Episode, Verdict]], chunks: list[tuple[int, int]]
) -> dict[str, _Tally]:
    tallies: dict[str, _Tally] = {}
    for number, (start, end) in enumerate(chunks):
        for _, verdict in scored[start:end]:
            for result in verdict.criteria:
                tally = tallies.setdefault(
                    result.name, _Tally(set(), [0] * len(chunks), [0] * len(chunks))
                )
                tally.sources.add(result.source)
                tally.seen[number] += 1
                tally.passed[number] += int(result.passed)
    return tallies


def _heat_cell(rate: float | None, seen: int) -> str:
    if rate is None:
        return "<td class='heat empty'>–</td>"
    return (
        f"<td class='heat' style='background:{rate_color(rate)}' title='{seen} episodes'>"
        f"{_percent(rate)}</td>"
    )


# -- unscored --------------------------------------------------------------------------------------


def _unscored(data: RunData) -> str:
    by_reason: dict[str, list[int]] = {}
    for episode in data.episodes:
        verdict = data.verdicts.get(episode.id)
        if verdict is not None and not verdict.scored:
            by_reason.setdefault(verdict.unscored_reason or "(no reason given)", []).append(
                episode.index
            )
    if not by_reason:
        return _section("unscored", "Unscored episodes", _empty("every judged episode was scored"))
    rows = "".join(
        f"<tr><td class='num'>{len(indices)}</td><td class='reason'>{escape(reason)}</td>"
        f"<td>{_episode_links(indices)}</td></tr>"
        for reason, indices in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0]))
    )
    table = (
        '<table class="grid"><tr><th>count</th><th>reason</th><th>episodes</th></tr>'
        + rows
        + "</table>"
    )
    return _section("unscored", "Unscored episodes", table)


def _episode_links(indices: Sequence[int]) -> str:
    return " ".join(
        f'<a href="#ep-{index}">#{index}</a>' if index < BROWSER_CAP else f"#{index}"
        for index in indices
    )


# -- episode browser -------------------------------------------------------------------------------


def _browser(data: RunData) -> str:
    shown = data.episodes[:BROWSER_CAP]
    if not shown:
        return _section("episodes", "Episodes", _empty("no episodes yet"))
    note = ""
    if len(data.episodes) > len(shown):
        note = (
            f'<p class="note">Showing the first {len(shown)} of {len(data.episodes)} episodes;'
            " the rest are in the run store (<code>trustee export</code>).</p>"
        )
    controls = (
        '<div class="controls"><input id="ep-search" type="search"'
        ' placeholder="search episodes (any text)">'
        '<select id="ep-state"><option value="all">all</option>'
        '<option value="scored">scored</option><option value="unscored">unscored</option>'
        '<option value="pending">pending</option></select>'
        '<span id="ep-count" class="muted"></span></div>'
    )
    rows = "".join(_episode_row(data, episode) for episode in shown)
    listing = (
        '<div class="ep-list"><table id="ep-table" class="grid compact"><thead><tr><th>#</th>'
        "<th>domain</th><th>D</th><th>reward</th><th>end</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )
    details = "".join(_episode_detail(data, episode) for episode in shown)
    body = (
        note
        + controls
        + f'<div class="browser">{listing}<div class="ep-details">{details}</div></div>'
    )
    return _section("episodes", "Episodes", body)


def _state(verdict: Verdict | None) -> str:
    if verdict is None:
        return "pending"
    return "scored" if verdict.scored else "unscored"


def _episode_row(data: RunData, episode: Episode) -> str:
    task = data.tasks.get(episode.task_id)
    verdict = data.verdicts.get(episode.id)
    end = episode.end_reason or episode.status
    domain = task.domain if task else "—"
    return (
        f'<tr data-state="{_state(verdict)}" data-target="ep-{episode.index}">'
        f'<td class="num"><a href="#ep-{episode.index}">{episode.index}</a></td>'
        f"<td title='{escape(domain)}'>{escape(domain)}</td>"
        f"<td class='num'>{format_number(task.difficulty.level, 0.1) if task else '—'}</td>"
        f"<td class='num'>{_verdict_badge(verdict)}</td>"
        f'<td class="end" title="{escape(end)}">{escape(end)}</td></tr>'
    )


def _verdict_badge(verdict: Verdict | None) -> str:
    if verdict is None:
        return '<span class="badge">pending</span>'
    if not verdict.scored:
        return '<span class="badge warn">unscored</span>'
    return _reward_html(verdict.reward)


def _episode_detail(data: RunData, episode: Episode) -> str:
    task = data.tasks.get(episode.task_id)
    verdict = data.verdicts.get(episode.id)
    usage = episode.usage
    facts = [
        ("episode", episode.id),
        ("task", episode.task_id),
        ("seed", str(episode.seed)),
        ("status", episode.status),
        ("end", episode.end_reason or "—"),
        ("policy", episode.policy_model),
        ("wall", f"{episode.wall_s:.2f} s"),
        ("tokens", f"{usage.prompt_tokens} prompt / {usage.completion_tokens} completion"),
    ]
    title = f"Episode {episode.index}" + (f" · {task.domain}" if task else "")
    return (
        f'<article class="episode" id="ep-{episode.index}">'
        f"<h3>{escape(title)} {_verdict_badge(verdict)}</h3>"
        + (f'<p class="goal"><b>Goal:</b> {escape(task.goal)}</p>' if task else "")
        + '<p class="facts">'
        + " ".join(f"<span><b>{escape(k)}</b> {escape(v or '—')}</span>" for k, v in facts)
        + "</p><h4>Conversation</h4>"
        + "".join(_message(message) for message in episode.messages)
        + "<h4>Verdict</h4>"
        + _verdict(verdict)
        + "<h4>Task</h4>"
        + (_task(task) if task else _empty("task not stored (its generation failed)"))
        + f"<h4>Simulator calls ({len(episode.sim_calls)})</h4>"
        + "".join(_sim_call(call) for call in episode.sim_calls)
        + "</article>"
    )


def _message(message: Message) -> str:
    label = message.role + (f" · {message.name}" if message.name else "")
    meta = ""
    if message.role == "assistant":
        meta = (
            f'<span class="muted">{message.latency_s:.2f} s · '
            f"{message.usage.completion_tokens} tokens</span>"
        )
    content = ""
    if message.content:
        text = _pretty_json_text(message.content) if message.role == "tool" else message.content
        content = f'<div class="content">{escape(text)}</div>'
    if message.role == "system":
        return f'<details class="msg system"><summary>{escape(label)}</summary>{content}</details>'
    calls = "".join(_tool_call(call) for call in message.tool_calls)
    return (
        f'<div class="msg {escape(message.role)}"><div class="role">{escape(label)} {meta}</div>'
        f"{content}{calls}</div>"
    )


def _tool_call(call: ToolCall) -> str:
    error = ""
    if call.parse_error:
        error = f'<div class="error">parse error: {escape(call.parse_error)}</div>'
    return (
        f'<div class="call"><span class="call-name">{escape(call.name)}</span>'
        f' <span class="muted">{escape(call.id)}</span>{_pre(_pretty_json(call.arguments))}{error}'
        "</div>"
    )


def _verdict(verdict: Verdict | None) -> str:
    if verdict is None:
        return _empty("not judged yet")
    head = (
        f'<p class="facts"><span><b>reward</b> {_reward_html(verdict.reward)}</span>'
        f"<span><b>judge</b> {escape(verdict.judge_model)}</span>"
        f"<span><b>prompt</b> {escape(verdict.prompt_version)}</span></p>"
    )
    if not verdict.scored:
        head += f'<p class="error">unscored: {escape(verdict.unscored_reason or "")}</p>'
    rows = "".join(
        f"<tr><td>{'<span class=pass>pass</span>' if r.passed else '<span class=fail>fail</span>'}"
        f"</td><th>{escape(r.name)}</th><td>{escape(r.source)}</td>"
        f"<td class='num'>{format_number(r.score, 0.01)}</td><td>{escape(r.reason)}</td></tr>"
        for r in verdict.criteria
    )
    if not rows:
        return head
    return (
        head + '<table class="grid compact"><tr><th></th><th>criterion</th><th>source</th>'
        f"<th>score</th><th>reason</th></tr>{rows}</table>"
    )


def _task(task: Task) -> str:
    aspects = task.difficulty.model_dump()
    facts = "".join(
        f"<tr><th>{escape(key)}</th><td>{escape(value)}</td></tr>"
        for key, value in task.private_facts.items()
    )
    expected = "".join(
        f'<div class="call"><span class="call-name">{escape(call.name)}</span>'
        f"{_pre(_pretty_json(call.arguments))}</div>"
        for call in task.expected_calls
    )
    tools = ", ".join(
        escape(tool.name)
        + (" <span class='muted'>(distractor)</span>" if tool.name in task.distractors else "")
        for tool in task.tools
    )
    return (
        '<div class="task">'
        + _kv_table(
            [
                ("goal", escape(task.goal)),
                ("persona", escape(task.persona)),
                ("difficulty", escape(", ".join(f"{k}={v}" for k, v in aspects.items()))),
                ("tools offered", tools),
                ("source", escape(f"{task.provenance.source} · {task.provenance.simulator_model}")),
            ]
        )
        + f"<h5>Private facts</h5>{_table_or_empty(facts)}"
        + f"<h5>Expected calls</h5>{expected or _empty('none')}"
        + "<h5>Forbidden</h5>"
        + _bullets(
            (f"<code>{escape(rule.tool)}</code>: " if rule.tool else "") + escape(rule.description)
            for rule in task.forbidden
        )
        + "<h5>Rubric</h5>"
        + _bullets(
            f"<code>{escape(item.id)}</code>: {escape(item.description)}" for item in task.rubric
        )
        + _collapsible(
            "tool schemas", _pre(_pretty_json([tool.model_dump() for tool in task.tools]))
        )
        + "</div>"
    )


def _sim_call(call: SimCall) -> str:
    status = '<span class="fail">error</span>' if call.error else '<span class="pass">ok</span>'
    summary = (
        f"{status} <b>{escape(call.role)}</b> · {escape(call.prompt_version)} · "
        f"{escape(call.model or '—')} · {call.attempts} attempt{'s' if call.attempts != 1 else ''}"
        f" · {call.latency_s:.2f} s"
    )
    prompt = "".join(
        f'<div class="simmsg"><div class="role">{escape(str(item.get("role", "?")))}</div>'
        f"{_pre(_text_or_json(item.get('content')))}</div>"
        for item in call.messages
    )
    parts = [prompt]
    if call.json_schema is not None:
        parts.append(_collapsible("response schema", _pre(_pretty_json(call.json_schema))))
    if call.error:
        parts.append(f'<div class="error">error: {escape(call.error)}</div>')
    output = _pretty_json_text(call.output) if call.output is not None else "(no output)"
    parts.append(f'<div class="role">output</div>{_pre(output)}')
    return f'<details class="sim"><summary>{summary}</summary>{"".join(parts)}</details>'


# -- small helpers ---------------------------------------------------------------------------------


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def _empty(text: str) -> str:
    return f'<p class="muted empty">{escape(text)}</p>'


def _collapsible(summary: str, body: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{body}</details>"


def _pre(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def _kv_table(rows: Iterable[tuple[str, str]]) -> str:
    """Rows of (label, value markup that is already escaped)."""
    body = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _table_or_empty(rows: str) -> str:
    return f'<table class="kv">{rows}</table>' if rows else _empty("none")


def _bullets(items: Iterable[str]) -> str:
    """A list of already-escaped items."""
    body = "".join(f"<li>{item}</li>" for item in items)
    return f"<ul>{body}</ul>" if body else _empty("none")


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _pretty_json_text(text: str) -> str:
    """`text` re-indented when it is a JSON object or array, else unchanged."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return _pretty_json(value) if isinstance(value, dict | list) else text


def _text_or_json(value: Any) -> str:
    return value if isinstance(value, str) else _pretty_json(value)


def _scalar_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _percent(rate: float, decimals: int = 0) -> str:
    return f"{100 * rate:.{decimals}f}%"


def _reward_text(reward: float | None) -> str:
    return "n/a" if reward is None else f"{reward:+.2f}"


def _reward_html(reward: float | None) -> str:
    if reward is None:
        return '<span class="muted">n/a</span>'
    tone = "pos" if reward > 0 else "neg" if reward < 0 else "zero"
    return f'<span class="{tone}">{_reward_text(reward)}</span>'


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body><main>{body}</main><script>{script}</script></body></html>
"""

_CSS = """
:root { --bg: #f6f7f9; --panel: #fff; --line: #e2e5ea; --text: #1f2328; --muted: #656d76;
  --accent: #2f6fde; --pass: #1a7f37; --fail: #cf222e; --warn: #9a6700;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--text); font: 14px/1.5 system-ui,
  -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 16px 20px 48px; }
h1 { font-size: 22px; margin: 8px 0 2px; }
h2 { font-size: 17px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 0 0 8px; }
h4 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
  margin: 18px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h5 { font-size: 13px; margin: 12px 0 4px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code, pre { font-family: var(--mono); font-size: 12px; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px;
  margin: 4px 0; white-space: pre-wrap; word-break: break-word; max-height: 420px; overflow: auto; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
  padding: 16px 18px; margin: 16px 0; scroll-margin-top: 52px; }
.muted { color: var(--muted); }
.empty { font-style: italic; }
.note { background: #fff8e5; border: 1px solid #f0dca8; border-radius: 6px; padding: 6px 10px; }
.nav { position: sticky; top: 0; z-index: 5; display: flex; gap: 4px; flex-wrap: wrap;
  background: rgba(246, 247, 249, .95); padding: 8px 0; border-bottom: 1px solid var(--line); }
.nav a { padding: 3px 10px; border-radius: 999px; color: var(--text); }
.nav a:hover { background: #e8ecf2; text-decoration: none; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(130px, 1fr)); gap: 10px;
  margin-bottom: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card-value { font-size: 22px; font-weight: 600; }
.card-label { color: var(--muted); font-size: 12px; text-transform: uppercase; }
table { border-collapse: collapse; }
table.kv th { text-align: left; color: var(--muted); font-weight: 500; padding: 2px 16px 2px 0;
  vertical-align: top; white-space: nowrap; }
table.kv td { padding: 2px 0; word-break: break-word; }
table.grid { width: 100%; font-size: 13px; }
table.grid th, table.grid td { border-bottom: 1px solid var(--line); padding: 5px 8px;
  text-align: left; vertical-align: top; }
table.grid tr > th { font-weight: 600; background: #fafbfc; white-space: nowrap; }
table.grid td th, table.grid tbody th { background: none; }
table.compact th, table.compact td { padding: 3px 6px; }
.num { text-align: right !important; font-variant-numeric: tabular-nums; white-space: nowrap; }
.rate { white-space: nowrap; font-variant-numeric: tabular-nums; }
.bar { display: inline-block; width: 70px; height: 8px; background: #eceff3; border-radius: 4px;
  vertical-align: middle; overflow: hidden; margin-right: 4px; }
.bar > span { display: block; height: 100%; border-radius: 4px; }
.heat { text-align: center !important; border: 2px solid #fff !important; min-width: 64px;
  font-variant-numeric: tabular-nums; }
.heat.empty { color: var(--muted); }
.scroll { overflow-x: auto; }
.reason { word-break: break-word; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 12px; }
.chart-box { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 6px; }
svg.chart { width: 100%; height: auto; display: block; font-family: inherit; }
svg.chart .chart-title { font-size: 13px; font-weight: 600; fill: var(--text); }
svg.chart .chart-empty { font-size: 13px; fill: var(--muted); text-anchor: middle; }
svg.chart .tick, svg.chart .legend { font-size: 10.5px; fill: var(--muted); }
svg.chart .axis-label { font-size: 11px; fill: var(--muted); }
svg.chart .grid { stroke: #edf0f3; }
svg.chart .axis { stroke: #9aa3ad; }
svg.chart .line { fill: none; stroke-width: 1.8; stroke-linejoin: round; }
svg.chart .dots { fill: none; stroke-width: 4.5; stroke-linecap: round; }
.aspects { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 12px; }
.card-table { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.pos { color: var(--pass); font-weight: 600; }
.neg { color: var(--fail); font-weight: 600; }
.zero { color: var(--muted); font-weight: 600; }
.pass, .fail { display: inline-block; font-size: 11px; font-weight: 600; padding: 0 6px;
  border-radius: 4px; }
.pass { color: var(--pass); background: #dafbe1; }
.fail { color: var(--fail); background: #ffebe9; }
.badge { display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 4px;
  background: #eceff3; color: var(--muted); font-weight: 600; }
.badge.warn { background: #fff1cc; color: var(--warn); }
.error { color: var(--fail); margin: 4px 0; word-break: break-word; }
.controls { display: flex; gap: 8px; align-items: center; margin-bottom: 10px; flex-wrap: wrap; }
.controls input, .controls select { font: inherit; padding: 5px 8px; border: 1px solid var(--line);
  border-radius: 6px; background: #fff; }
.controls input { flex: 1; min-width: 200px; max-width: 420px; }
.browser { display: grid; grid-template-columns: minmax(320px, 34%) 1fr; gap: 16px;
  align-items: start; }
.ep-list { position: sticky; top: 52px; max-height: calc(100vh - 70px); overflow: auto;
  border: 1px solid var(--line); border-radius: 8px; }
#ep-table { table-layout: fixed; }
#ep-table td { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#ep-table th:nth-child(1) { width: 42px; }
#ep-table th:nth-child(3) { width: 40px; }
#ep-table th:nth-child(4) { width: 80px; }
#ep-table th:nth-child(5) { width: 28%; }
.ep-list thead th { position: sticky; top: 0; z-index: 1; }
.ep-list tbody tr { cursor: pointer; }
.ep-list tbody tr:hover { background: #f3f6fb; }
.ep-list tbody tr.selected { background: #e7efff; }
.episode { display: none; scroll-margin-top: 52px; min-width: 0; }
.episode:target, .ep-details:not(:has(.episode:target)) .episode:first-child { display: block; }
.ep-details { min-width: 0; }
.goal { margin: 0 0 6px; }
.facts { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; color: var(--muted);
  margin: 0 0 6px; }
.facts b { color: var(--text); font-weight: 600; margin-right: 3px; }
.msg { border: 1px solid var(--line); border-radius: 8px; padding: 6px 10px; margin: 6px 0; }
.msg .role { font-size: 11px; font-weight: 600; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); }
.msg .content { white-space: pre-wrap; word-break: break-word; }
.msg.user { background: #eef4ff; border-color: #d5e3fb; margin-right: 12%; }
.msg.assistant { background: #fff; border-left: 3px solid var(--accent); margin-left: 6%; }
.msg.tool { background: #f6f8fa; margin-left: 6%; }
.msg.tool .content { font-family: var(--mono); font-size: 12px; }
.msg.system { background: #fafbfc; color: var(--muted); }
.msg.system summary { font-size: 11px; font-weight: 600; text-transform: uppercase; }
.call { border: 1px dashed #c9d3e0; border-radius: 6px; padding: 4px 8px; margin: 6px 0; }
.call-name { font-family: var(--mono); font-weight: 600; color: var(--accent); }
details { margin: 6px 0; }
details > summary { cursor: pointer; }
details.sim { border: 1px solid var(--line); border-radius: 6px; padding: 4px 8px; }
details.sim[open] { background: #fcfcfd; }
.simmsg .role, .sim .role { font-size: 11px; font-weight: 600; color: var(--muted);
  text-transform: uppercase; margin-top: 6px; }
.task ul { margin: 4px 0; padding-left: 20px; }
@media (max-width: 860px) {
  .browser { grid-template-columns: 1fr; }
  .ep-list { position: static; max-height: 320px; }
  .msg.user, .msg.assistant, .msg.tool { margin-left: 0; margin-right: 0; }
}
"""

# Filtering and row selection for the episode browser; without JS every link still works.
_SCRIPT = """
(function () {
  var search = document.getElementById("ep-search");
  var state = document.getElementById("ep-state");
  var count = document.getElementById("ep-count");
  if (!search) { return; }
  var rows = Array.prototype.slice.call(document.querySelectorAll("#ep-table tbody tr"));
  var texts = new Map();
  function text(row) {
    if (!texts.has(row)) {
      var detail = document.getElementById(row.dataset.target);
      texts.set(row, (row.textContent + " " + (detail ? detail.textContent : "")).toLowerCase());
    }
    return texts.get(row);
  }
  function filter() {
    var query = search.value.trim().toLowerCase();
    var shown = 0;
    rows.forEach(function (row) {
      var visible = (state.value === "all" || row.dataset.state === state.value) &&
        (!query || text(row).indexOf(query) >= 0);
      row.hidden = !visible;
      if (visible) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " shown";
  }
  function select() {
    var target = location.hash.slice(1);
    rows.forEach(function (row) {
      row.classList.toggle("selected", row.dataset.target === target);
    });
  }
  rows.forEach(function (row) {
    row.addEventListener("click", function () { location.hash = row.dataset.target; });
  });
  search.addEventListener("input", filter);
  state.addEventListener("change", filter);
  window.addEventListener("hashchange", select);
  filter();
  select();
})();
"""
