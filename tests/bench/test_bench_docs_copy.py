"""Every benchmark figure the docs show comes from a committed run: docs/bench/<name>.{json,md}, shown
unchanged in docs/performance.md, and the README's benchmark figures read from the same JSON."""

from __future__ import annotations

import json
import re

import pytest

from bench import docs_copy
from bench.comparison.cli import PAGE, PAGE_HEADING_LEVEL, parse_cli
from bench.comparison.report import render_markdown
from bench.metrics_overhead import report as metrics_report

README = docs_copy.REPO / "README.md"
#: Each committed run: the page that shows it and the heading level of its title there.
PUBLISHED = {"compare": (PAGE, PAGE_HEADING_LEVEL), "metrics_overhead": (PAGE, 4)}


def committed(name: str) -> tuple[dict, str]:
    return (
        json.loads((docs_copy.DOCS_BENCH / f"{name}.json").read_text()),
        (docs_copy.DOCS_BENCH / f"{name}.md").read_text(),
    )


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_page_shows_the_committed_markdown_unchanged(name):
    page, level = PUBLISHED[name]
    _, markdown = committed(name)
    assert docs_copy.block(page, name) == docs_copy.at_heading_level(markdown.strip(), level)


def test_the_committed_comparison_markdown_is_what_its_json_renders_to():
    data, markdown = committed("compare")
    assert render_markdown(data) == markdown


def test_the_committed_metrics_overhead_markdown_is_what_its_json_renders_to():
    data, markdown = committed("metrics_overhead")
    meta = data.pop("meta")
    assert metrics_report(data, meta) + "\n" == markdown


def test_the_committed_comparison_is_a_full_run_of_the_charts_local_scenario():
    data, _ = committed("compare")
    assert data["mode"] == "full" and data["rounds"] == 3 and data["levels"] == [1, 4, 16]
    assert "--quick" not in data["command"] and "--values" not in data["command"]
    assert "chart/ci/cpu-local-values.yaml" in data["our_config_source"]
    assert data["bare"]["bare_source"] == "rotation", "the bare-call figure must be the one measured in rotation"


def test_the_readme_benchmark_figures_are_the_committed_runs():
    data, _ = committed("compare")
    goals = data["goals"]
    text = README.read_text()
    start = text.index("**Benchmark**")
    paragraph = text[start : text.index("**Reliability**", start)]
    ours_c16 = data["results"]["ours"]["16"]
    expected = [
        f"throughput at 16 clients **{goals['throughput_ratio_c16']:.2f}× the seed's**",
        f"{min(data['round_ratios']['ours']['throughput_c16']):.2f}-"
        f"{max(data['round_ratios']['ours']['throughput_c16']):.2f}× round by round",
        f"of {ours_c16['mean_batch_size']:.1f} images on average",
        f"p50 at 1 client **{goals['p50_ratio_c1']:.2f}× the seed's**",
        f"{min(data['round_ratios']['ours']['p50_c1']):.2f}-{max(data['round_ratios']['ours']['p50_c1']):.2f}×"
        " round by round",
        "docs/bench/compare.md",
    ]
    flat = " ".join(paragraph.split())
    for figure in expected:
        assert figure in flat, f"README's benchmark paragraph should say {figure!r} (docs/bench/compare.json)"
    met = "is **met**" if goals["p50_met"] else "is **not met**"
    assert met in flat


@pytest.mark.parametrize("path", [README, PAGE], ids=lambda path: path.name)
def test_no_page_cites_a_run_that_was_not_committed(path):
    text = path.read_text()
    assert "across the day" not in text
    assert not re.search(r"[Pp]asted verbatim.*bench/results", text)


def test_update_docs_publishes_only_the_full_run_of_the_local_scenario(capsys):
    for argv in (["--update-docs", "--quick"], ["--update-docs", "--rounds", "1"], ["--update-docs", "--values", "x"]):
        with pytest.raises(SystemExit):
            parse_cli(argv)
        assert "publishes only the full run" in capsys.readouterr().err
    assert parse_cli(["--update-docs"]).update_docs


def test_publishing_replaces_only_the_block_between_the_markers(tmp_path, monkeypatch):
    monkeypatch.setattr(docs_copy, "DOCS_BENCH", tmp_path / "bench")
    monkeypatch.setattr(docs_copy, "REPO", tmp_path)
    begin, end = docs_copy.markers("demo")
    page = tmp_path / "page.md"
    page.write_text(f"# Page\n\nbefore\n\n{begin}\nold table\n{end}\n\nafter\n")
    docs_copy.publish("demo", {"x": 1}, "# Run\n\n## Table\n\n| a |\n", page, top=3)
    assert page.read_text() == f"# Page\n\nbefore\n\n{begin}\n\n### Run\n\n#### Table\n\n| a |\n\n{end}\n\nafter\n"
    assert json.loads((tmp_path / "bench" / "demo.json").read_text()) == {"x": 1}
    assert (tmp_path / "bench" / "demo.md").read_text() == "# Run\n\n## Table\n\n| a |\n"


def test_a_page_without_markers_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(docs_copy, "DOCS_BENCH", tmp_path / "bench")
    monkeypatch.setattr(docs_copy, "REPO", tmp_path)
    page = tmp_path / "page.md"
    page.write_text("# Page\n")
    with pytest.raises(SystemExit, match="has no markers for demo"):
        docs_copy.publish("demo", {}, "# Run\n", page, top=2)
    assert not (tmp_path / "bench").exists() and page.read_text() == "# Page\n"


def test_the_pages_reading_of_the_comparison_quotes_the_committed_run():
    data, _ = committed("compare")
    text = PAGE.read_text()
    start = text.index("### Reading these numbers")
    reading = " ".join(text[start : text.index("### What the metrics cost", start)].split())
    goals, ratios, overhead = data["goals"], data["round_ratios"]["ours"], data["overhead"]
    encoded = {(row["image"], row["encoding"]): row for row in data["encoding"]}
    level6 = encoded[("photo-like", "png (seed: Pillow default level 6)")]
    level1 = encoded[("photo-like", "png (ours: level 1)")]
    expected = [
        f"{goals['throughput_ratio_c16']:.2f}× the seed's pooled",
        f"{min(ratios['throughput_c16']):.2f}-{max(ratios['throughput_c16']):.2f}× round by round",
        f"{goals['p50_ratio_c1']:.2f}× the seed's pooled",
        f"{min(ratios['p50_c1']):.2f}-{max(ratios['p50_c1']):.2f}× round by round",
        f"the bare call's p50 is {data['bare']['bare_p50_s']:.3f} s",
        f"{overhead['ours']['overhead_s']:.3f} s over the bare call for ours",
        f"{overhead['seed']['overhead_s']:.3f} s for the seed",
        f"reaches {data['nowait_vs_seed']['throughput_ratio_c16']:.2f}× the seed",
        f"gives {data['bare']['batching']['efficiency']:.2f}× the images/s",
        f"PNG level 1 (ours, {level1['ms']:.0f} ms)",
        f"level 6 (the seed's, {level6['ms']:.0f} ms)",
        f"for {round(100 * (level1['bytes'] / level6['bytes'] - 1))} % more bytes",
    ]
    missing = [figure for figure in expected if figure not in reading]
    assert not missing, f"'Reading these numbers' should quote docs/bench/compare.json: {missing}"
    assert ("The throughput goal is met" in reading) == goals["throughput_met"]
    assert ("the latency goal is not" in reading) == (not goals["p50_met"])
