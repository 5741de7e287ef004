"""Per-stage wall-clock timings (monotonic clock), summed over a run."""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

STAGES = ("decode", "pre", "infer", "post", "merge")


class StageTimes:
    """Seconds spent per stage; ``with times("pre"): ...`` adds to a stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start
            self.counts[stage] += 1

    def add(self, other: "StageTimes") -> None:
        for stage, value in other.seconds.items():
            self.seconds[stage] += value
            self.counts[stage] += other.counts[stage]

    def as_ms(self) -> dict[str, float]:
        """Milliseconds per stage, in pipeline order."""
        order = [s for s in STAGES if s in self.seconds] + [s for s in self.seconds if s not in STAGES]
        return {stage: round(self.seconds[stage] * 1000.0, 3) for stage in order}

    def summary(self) -> str:
        return ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in self.as_ms().items())
