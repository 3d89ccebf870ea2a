"""The chart's Grafana dashboard as data: its panels' PromQL with Grafana's variables filled in the way
Grafana fills them, and a picture of the panels drawn from a real Prometheus's answers.

``dashboard_from_rendered(rendered)``
    The dashboard JSON inside the rendered ConfigMap (what Grafana's sidecar would load).
``panel_queries(dashboard, rate_interval)``
    ``[PanelQuery(panel, ref, legend, expr)]`` for every target of every panel, variables expanded.
``render_png(api, dashboard, start, end, path, rate_interval=...)``
    One subplot per panel, titled like the panel, drawn from ``query_range`` answers (matplotlib); Grafana
    itself is not installable here, so this is how the README's picture is made.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref: str
    legend: str
    expr: str


def dashboard_from_rendered(rendered) -> dict:
    (config_map,) = [doc for doc in rendered.all("ConfigMap") if doc["metadata"]["name"].endswith("-dashboard")]
    (text,) = config_map["data"].values()
    return json.loads(text)


def variables(dashboard: dict, rate_interval: str) -> dict[str, str]:
    """Grafana's values: constants as the chart set them, ``$__rate_interval`` as given."""
    values = {"__rate_interval": rate_interval}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "constant":
            values[variable["name"]] = variable["query"]
    return values


def expand(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"dashboard query uses ${name}, which the dashboard does not define: {expr}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def panel_queries(dashboard: dict, rate_interval: str) -> list[PanelQuery]:
    values = variables(dashboard, rate_interval)
    return [
        PanelQuery(panel["title"], target["refId"], target.get("legendFormat", ""), expand(target["expr"], values))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def legend_text(legend: str, labels: dict) -> str:
    return _LEGEND_LABEL.sub(lambda match: labels.get(match.group(1), ""), legend) or json.dumps(labels)


def render_png(
    api, dashboard: dict, start: float, end: float, path: Path, *, rate_interval: str = "1m", step: float | None = None
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted(dashboard["panels"], key=lambda panel: (panel["gridPos"]["y"], panel["gridPos"]["x"]))
    values = variables(dashboard, rate_interval)
    step = step or max(1.0, (end - start) / 120)
    columns = 3
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(15, 3.1 * rows), dpi=72)
    for axis in axes.flat[len(panels) :]:
        axis.axis("off")
    for axis, panel in zip(axes.flat, panels, strict=False):  # more axes than panels
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        scale, suffix = (100.0, " %") if unit == "percentunit" else (1.0, " s" if unit == "s" else "")
        axis.set_title(panel["title"], fontsize=10, loc="left")
        if panel["type"] == "stat":
            lines = []
            for target in panel["targets"]:
                for item in api.query(expand(target["expr"], values), at=end):
                    shown = float(item["value"][1]) * scale
                    lines.append(f"{legend_text(target.get('legendFormat', ''), item['metric'])}: {shown:.2f}{suffix}")
            axis.axis("off")
            axis.text(0.02, 0.5, "\n".join(lines) or "no data", fontsize=14, va="center", transform=axis.transAxes)
            continue
        plotted = 0
        for target in panel["targets"]:
            for series in api.query_range(expand(target["expr"], values), start, end, step):
                points = [
                    (float(t) - start, float(v) * scale)
                    for t, v in series["values"]
                    if v not in ("NaN", "+Inf", "-Inf")
                ]
                if points:
                    xs, ys = zip(*points, strict=True)
                    axis.plot(
                        xs, ys, linewidth=1.4, label=legend_text(target.get("legendFormat", ""), series["metric"])
                    )
                    plotted += 1
        axis.tick_params(labelsize=8)
        axis.set_xlabel("seconds into the run", fontsize=8)
        if suffix:
            axis.set_ylabel(suffix.strip(), fontsize=8)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        if plotted:
            axis.legend(fontsize=7, loc="upper left")
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
    figure.suptitle(dashboard["title"], fontsize=12)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    # A palette of 64 colours keeps the picture small enough to commit (a few lines and text).
    from PIL import Image

    Image.open(buffer).convert("RGB").quantize(colors=64).save(path, optimize=True)
    return path
