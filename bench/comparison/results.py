"""Typed results of a comparison run, the figures derived from them, and their JSON form.

The JSON written to ``bench/results/compare-*.json`` is :meth:`Report.to_json`: designs and
concurrency levels as keys (levels as strings), every figure a number or null.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

from bench import loadgen
from bench.comparison.config import DESIGNS, GOAL_P50_RATIO, GOAL_THROUGHPUT_RATIO


@dataclass
class Summary:
    """One design at one concurrency level (``loadgen.summarise`` of its samples)."""

    requests: int
    ok: int
    statuses: dict[str, int]
    p50_s: float
    p99_s: float
    mean_s: float
    max_s: float
    throughput_rps: float
    mean_bytes: float
    service_generation_p50_ms: float | None
    mean_batch_size: float | None

    @classmethod
    def of(cls, run: loadgen.RunResult) -> Summary:
        return cls(**loadgen.summarise(run))


@dataclass
class Batching:
    batch_size_in_use: int
    probe_batch: int
    images_per_s_batch1: float
    images_per_s_batch: float
    efficiency: float
    batch_call_p50_s: float


@dataclass
class Bare:
    """The pipeline alone in this process: the floor the services' latency is compared with."""

    threads: int
    call: dict
    bare_p50_s: float
    bare_min_s: float
    batching: Batching
    bare_samples: int = 0
    #: "rotation": timed between the concurrency-1 requests; "pre-run": the figure measured before the
    #: services started, because no concurrency-1 level ran (the report says so next to the number).
    bare_source: str = "pre-run"


@dataclass
class EncodeRow:
    image: str
    encoding: str
    ms: float
    bytes: int


@dataclass
class Overhead:
    p50_c1_s: float
    overhead_s: float
    overhead_pct: float


@dataclass
class Goals:
    p50_ratio_c1: float
    p50_ratio_c1_median: float
    p50_met: bool
    throughput_ratio_c16: float
    throughput_ratio_c16_median: float
    throughput_met: bool


@dataclass
class Report:
    mode: str
    utc: str
    command: str
    machine: dict
    load_average: dict
    our_config_source: str
    our_application: dict
    levels: list[int]
    rounds: int
    workload: dict
    bare: Bare
    encoding: list[EncodeRow]
    deploy_s: float = math.nan
    #: design -> level (as a string) -> one Summary per round.
    per_round: dict[str, dict[str, list[Summary]]] = field(default_factory=dict)
    #: design -> level (as a string) -> all rounds' requests together.
    results: dict[str, dict[str, Summary]] = field(default_factory=dict)
    replica_rss_mib: dict[str, list[float]] = field(default_factory=dict)
    overhead: dict[str, Overhead] = field(default_factory=dict)
    nowait_vs_seed: dict[str, float] = field(default_factory=dict)
    round_ratios: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    goals: Goals | None = None

    def to_json(self) -> dict:
        return asdict(self)

    def _ratio(self, design: str, level: int, key: str) -> float:
        if level not in self.levels:
            return math.nan
        ours, seed = getattr(self.results[design][str(level)], key), getattr(self.results["seed"][str(level)], key)
        return ours / seed

    def _round_ratios(self, design: str, level: str, key: str) -> list[float]:
        ours_rounds, seed_rounds = self.per_round[design].get(level, []), self.per_round["seed"].get(level, [])
        return [
            round(getattr(o, key) / getattr(s, key), 3)
            for o, s in zip(ours_rounds, seed_rounds, strict=True)
            if getattr(s, key)
        ]

    def derive(self) -> None:
        """Overheads, design ratios and the goals, from ``results`` and ``per_round``."""
        bare = self.bare.bare_p50_s
        for design in DESIGNS:
            p50 = self.results[design]["1"].p50_s if 1 in self.levels else math.nan
            self.overhead[design] = Overhead(p50, p50 - bare, 100 * (p50 - bare) / bare)
        self.nowait_vs_seed = {
            "p50_ratio_c1": self._ratio("ours-nowait", 1, "p50_s"),
            "throughput_ratio_c16": self._ratio("ours-nowait", 16, "throughput_rps"),
        }
        self.round_ratios = {
            design: {
                "p50_c1": self._round_ratios(design, "1", "p50_s"),
                "throughput_c16": self._round_ratios(design, "16", "throughput_rps"),
            }
            for design in DESIGNS[1:]
        }
        p50_ratio, tp_ratio = self._ratio("ours", 1, "p50_s"), self._ratio("ours", 16, "throughput_rps")
        p50_rounds, tp_rounds = self.round_ratios["ours"]["p50_c1"], self.round_ratios["ours"]["throughput_c16"]
        p50_median = statistics.median(p50_rounds) if p50_rounds else math.nan
        tp_median = statistics.median(tp_rounds) if tp_rounds else math.nan
        self.goals = Goals(
            p50_ratio_c1=p50_ratio,
            p50_ratio_c1_median=p50_median,
            p50_met=bool(max(p50_ratio, p50_median) <= GOAL_P50_RATIO),
            throughput_ratio_c16=tp_ratio,
            throughput_ratio_c16_median=tp_median,
            throughput_met=bool(min(tp_ratio, tp_median) >= GOAL_THROUGHPUT_RATIO),
        )
