"""Seed replicates of ``sdkd reproduce --seeds N``: where each lives, their mean ± std, and the "better" rule.

Seed replicate ``k`` (1-based) trains every stage, its teachers included, with seed ``base + k - 1``.
Replicate 1 lives in the run folder itself (the layout of a single-seed run, so finished runs are reused);
replicate ``k >= 2`` in ``<out>/seed<k>/``, a complete run folder of its own. Spreads are sample standard
deviations (divisor N - 1). A distilled row is *better* than the student alone only when the difference of
their mean test MSEs exceeds the larger of their two standard deviations over seeds (``is_better``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

Rows = Mapping[str, Mapping[str, float]]


def seed_dir(out: str | Path, k: int) -> Path:
    """Run folder of seed replicate ``k`` (1-based): ``out`` itself for k = 1, ``out/seed<k>`` after."""
    if k < 1:
        raise ValueError(f"seed replicates count from 1, got {k}")
    return Path(out) if k == 1 else Path(out) / f"seed{k}"


def replicate_seeds(base: int, n: int) -> list[int]:
    """The training seed of each replicate: ``base, base + 1, ..., base + n - 1``."""
    if n < 1:
        raise ValueError(f"--seeds must be at least 1, got {n}")
    return [base + k for k in range(n)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (divisor N - 1; NaN for one value). A NaN value gives NaN."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = math.fsum(values) / n
    if n == 1:
        return float(values[0]), math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def summarize(per_seed: Sequence[Rows]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """``(mean, std)`` per stage and metric over the replicates' rows ``[{stage: {metric: value}}, ...]``.

    Every replicate must hold the same stages; a metric missing from some replicate is left out."""
    if not per_seed:
        raise ValueError("no seed replicates to summarise")
    stages = list(per_seed[0])
    if any(list(rows) != stages for rows in per_seed):
        raise ValueError("seed replicates hold different stages")
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    for stage in stages:
        keys = [k for k in per_seed[0][stage] if all(k in rows[stage] for rows in per_seed)]
        mean[stage], std[stage] = {}, {}
        for key in keys:
            mean[stage][key], std[stage][key] = mean_std([float(rows[stage][key]) for rows in per_seed])
    return mean, std


def is_better(student: tuple[float, float], row: tuple[float, float]) -> bool | None:
    """Is a row with ``(mean, std)`` test MSE ``row`` better than the student alone's ``student``?

    True when the student's mean exceeds the row's by more than the larger of the two standard
    deviations over seeds, False otherwise; None (not judged) when a spread is unknown (one seed)."""
    (s_mean, s_std), (r_mean, r_std) = student, row
    if any(math.isnan(v) for v in (s_mean, s_std, r_mean, r_std)):
        return None
    return s_mean - r_mean > max(s_std, r_std)


def better_than_student(mean: Rows, std: Rows, roles: Mapping[str, str], metric: str = "mse") -> dict[str, bool | None]:
    """``is_better`` for every distilled stage (None for teachers, the student, or without a student row)."""
    out: dict[str, bool | None] = {}
    for stage in mean:
        if roles.get(stage) != "distill" or "student" not in mean:
            out[stage] = None
            continue
        out[stage] = is_better(
            (mean["student"][metric], std["student"][metric]), (mean[stage][metric], std[stage][metric])
        )
    return out
