"""Ablation grids: parse a grid file, expand it into (variant, seed) runs, aggregate results into tables.

A grid file is YAML:

    base_config: demo_tiny          # config name in configs/ or a YAML path
    seeds: [0, 1]
    train: {max_steps: 300, set: {TRAIN.LR: 0.001}}   # applied to every variant
    eval: {dataset: lasot, root: results/data/lasot_test, set: {}}
    variants:                        # named variants ...
      - name: grm
      - name: one_stream
        set: {MODEL.DIVISION.LAYERS: []}
      - name: grm_thr0.4
        eval_set: {TEST.HYPER.DEFAULT: 0.4}   # inference-only: reuses grm's trained model
    axes:                            # ... and/or a cartesian product of values
      MODEL.TGT_TYPE: [allmax, allavg]

Training is keyed by everything that changes the trained weights (config, train overrides, seed, steps), so
variants that differ only in `eval_set` share one training run; evaluation is keyed by the variant name and seed.
Both keys name directories, which is what makes a rerun skip finished work.

Is a difference real? Each run's result carries its per-sequence metrics; `aggregate(results, reference=NAME)`
gives every other variant the bootstrap interval of its mean difference to the reference variant
(`grm_jax.evaluation.metrics.bootstrap_mean_difference`: sequences resampled paired, the seeds of each variant
resampled within it, so the interval covers both the sequence sample and the training-seed spread; with one seed
it is the plain paired bootstrap over sequences). An interval containing 0 is marked "n.s." in the tables.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from .errors import UserError
from grm_jax.evaluation.metrics import bootstrap_mean_difference

GRID_KEYS = {"base_config", "seeds", "train", "eval", "variants", "axes"}
TRAIN_KEYS = {"max_steps", "set"}
EVAL_KEYS = {"dataset", "root", "set", "sequences"}
VARIANT_KEYS = {"name", "set", "eval_set"}

# Columns reported per variant, in table order. `interact_frac` (one value per division layer) is added after.
METRIC_COLUMNS = ("auc", "precision", "norm_precision")


class GridError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int
    base_config: str
    train_overrides: tuple[tuple[str, Any], ...]
    eval_overrides: tuple[tuple[str, Any], ...]
    max_steps: int | None
    eval_dataset: str
    eval_root: str
    eval_sequences: tuple[str, ...] | None = None

    @property
    def train_key(self) -> str:
        payload = json.dumps(
            [self.base_config, list(self.train_overrides), self.seed, self.max_steps], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def eval_key(self) -> str:
        return f"{_safe_name(self.variant)}_seed{self.seed}"

    def train_set_args(self) -> list[str]:
        return [f"{k}={_yaml_scalar(v)}" for k, v in self.train_overrides]

    def eval_set_args(self) -> list[str]:
        return [f"{k}={_yaml_scalar(v)}" for k, v in self.eval_overrides]


@dataclass
class Grid:
    base_config: str
    seeds: list[int]
    max_steps: int | None
    train_set: dict[str, Any]
    eval_dataset: str
    eval_root: str
    eval_set: dict[str, Any]
    eval_sequences: list[str] | None
    variants: list[dict[str, Any]] = field(default_factory=list)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)


def _yaml_scalar(value: Any) -> str:
    """Render a value so that `--set KEY=VALUE` parses it back (flow-style YAML)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _check_keys(where: str, mapping: Mapping[str, Any], allowed: set[str], path: Path) -> None:
    if not isinstance(mapping, Mapping):
        raise GridError(f"{path}: '{where}' must be a mapping, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise GridError(f"{path}: unknown key(s) {unknown} in '{where}' (allowed: {sorted(allowed)})")


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise GridError(f"grid file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise GridError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    _check_keys("<top level>", raw, GRID_KEYS, path)
    if "base_config" not in raw:
        raise GridError(f"{path}: missing 'base_config'")
    train = raw.get("train") or {}
    evaluation = raw.get("eval") or {}
    _check_keys("train", train, TRAIN_KEYS, path)
    _check_keys("eval", evaluation, EVAL_KEYS, path)
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise GridError(f"{path}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if "dataset" not in evaluation or "root" not in evaluation:
        raise GridError(f"{path}: 'eval' needs 'dataset' and 'root'")

    variants: list[dict[str, Any]] = []
    for i, variant in enumerate(raw.get("variants") or []):
        _check_keys(f"variants[{i}]", variant, VARIANT_KEYS, path)
        if "name" not in variant:
            raise GridError(f"{path}: variants[{i}] has no 'name'")
        variants.append({"name": str(variant["name"]), "set": dict(variant.get("set") or {}),
                         "eval_set": dict(variant.get("eval_set") or {})})
    axes = raw.get("axes") or {}
    if not isinstance(axes, Mapping):
        raise GridError(f"{path}: 'axes' must map a config key to a list of values")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{path}: axes['{key}'] must be a non-empty list, got {values!r}")
    if axes:
        keys = list(axes)
        for combo in itertools.product(*(axes[k] for k in keys)):
            name = ",".join(f"{k.split('.')[-1]}={_yaml_scalar(v)}" for k, v in zip(keys, combo))
            variants.append({"name": name, "set": dict(zip(keys, combo)), "eval_set": {}})
    if not variants:
        raise GridError(f"{path}: no 'variants' and no 'axes': nothing to run")
    names = [v["name"] for v in variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GridError(f"{path}: duplicate variant name(s) {duplicates}")

    max_steps = train.get("max_steps")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise GridError(f"{path}: train.max_steps must be a positive integer, got {max_steps!r}")
    sequences = evaluation.get("sequences")
    return Grid(
        base_config=str(raw["base_config"]), seeds=list(seeds), max_steps=max_steps,
        train_set=dict(train.get("set") or {}), eval_dataset=str(evaluation["dataset"]),
        eval_root=str(evaluation["root"]), eval_set=dict(evaluation.get("set") or {}),
        eval_sequences=list(sequences) if sequences else None, variants=variants)


def expand(grid: Grid) -> list[Run]:
    runs = []
    for variant in grid.variants:
        train_overrides = {**grid.train_set, **variant["set"]}
        eval_overrides = {**train_overrides, **grid.eval_set, **variant["eval_set"]}
        for seed in grid.seeds:
            runs.append(Run(
                variant=variant["name"], seed=seed, base_config=grid.base_config,
                train_overrides=tuple(sorted(train_overrides.items())),
                eval_overrides=tuple(sorted(eval_overrides.items())),
                max_steps=grid.max_steps, eval_dataset=grid.eval_dataset, eval_root=grid.eval_root,
                eval_sequences=tuple(grid.eval_sequences) if grid.eval_sequences else None))
    return runs


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    # Sample standard deviation across seeds; a single seed has no spread to report.
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return mean, std


def aggregate(results: Sequence[Mapping[str, Any]], reference: str | None = None, *, resamples: int = 10000,
              seed: int = 0) -> list[dict[str, Any]]:
    """Group per-run results by variant (keeping grid order) and reduce each metric to mean and spread.

    Each result has `variant`, `seed`, the METRIC_COLUMNS and optionally `interact_frac` (list per division layer)
    and `per_sequence` ({sequence: {metric: value}}). With `reference` (a variant name, or None for the first
    variant) and per-sequence results on every run, each other row gets `intervals` {metric: {difference, low,
    high, significant, resamples, level, seed, sequences}} of its mean difference to the reference.
    """
    order: list[str] = []
    by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for result in results:
        name = result["variant"]
        if name not in by_variant:
            order.append(name)
            by_variant[name] = []
        by_variant[name].append(result)
    rows = []
    for name in order:
        group = by_variant[name]
        row: dict[str, Any] = {"variant": name, "seeds": sorted(int(r["seed"]) for r in group)}
        for column in METRIC_COLUMNS:
            row[column], row[f"{column}_std"] = _mean_std([r[column] for r in group])
        fracs = [r.get("interact_frac") for r in group if r.get("interact_frac") is not None]
        if fracs:
            if len({len(f) for f in fracs}) != 1:
                raise ValueError(f"variant {name}: runs report different numbers of division layers")
            row["interact_frac"] = [_mean_std(layer)[0] for layer in zip(*fracs)]
        else:
            row["interact_frac"] = []
        rows.append(row)
    _add_intervals(rows, by_variant, reference if reference is not None else (order[0] if order else None),
                   resamples, seed)
    return rows


def _per_sequence_matrix(group: Sequence[Mapping[str, Any]], column: str, names: list[str]):
    return np.array([[float(r["per_sequence"][n][column]) for n in names]
                     for r in sorted(group, key=lambda r: int(r["seed"]))])


def _add_intervals(rows: list[dict[str, Any]], by_variant: Mapping[str, list], reference: str | None,
                   resamples: int, seed: int) -> None:
    if reference is None:
        return
    if reference not in by_variant:
        raise GridError(f"reference variant {reference!r} is not in the results ({', '.join(by_variant)})")
    if not all(r.get("per_sequence") for group in by_variant.values() for r in group):
        return   # results from before per-sequence metrics were recorded: no intervals
    names = sorted(by_variant[reference][0]["per_sequence"])
    for variant, group in by_variant.items():
        for r in group:
            if sorted(r["per_sequence"]) != names:
                raise GridError(f"variant {variant} seed {r['seed']} was evaluated on other sequences than the "
                                f"reference {reference} ({len(r['per_sequence'])} vs {len(names)})")
    for row in rows:
        row["reference"] = reference
        if row["variant"] == reference:
            continue
        row["intervals"] = {
            column: bootstrap_mean_difference(_per_sequence_matrix(by_variant[row["variant"]], column, names),
                                              _per_sequence_matrix(by_variant[reference], column, names),
                                              resamples=resamples, seed=seed)
            for column in METRIC_COLUMNS}


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _fmt_interval(interval: Mapping[str, Any] | None) -> str:
    if not interval:
        return "ref." if interval is None else "-"
    text = f"{interval['difference']:+.2f} [{interval['low']:+.2f}, {interval['high']:+.2f}]"
    return text if interval["significant"] else text + " n.s."


def write_tables(rows: Sequence[Mapping[str, Any]], out_dir: str | Path, title: str = "Ablation") -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "results.csv", "md": out_dir / "results.md"}
    paths["json"].write_text(json.dumps(list(rows), indent=2, allow_nan=True))

    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        interval_columns = [f"{col}_{part}" for col in METRIC_COLUMNS
                            for part in ("diff", "ci_low", "ci_high", "significant")]
        writer.writerow(["variant", "seeds", *[c for col in METRIC_COLUMNS for c in (col, f"{col}_std")],
                         "interact_frac_per_layer", *interval_columns])
        for row in rows:
            intervals = row.get("intervals") or {}
            cells = []
            for col in METRIC_COLUMNS:
                iv = intervals.get(col)
                cells += ([f"{iv['difference']:.6g}", f"{iv['low']:.6g}", f"{iv['high']:.6g}",
                           "yes" if iv["significant"] else "n.s."] if iv else ["", "", "", ""])
            writer.writerow([row["variant"], " ".join(map(str, row["seeds"])),
                             *[f"{row[c]:.6g}" for col in METRIC_COLUMNS for c in (col, f"{col}_std")],
                             " ".join(f"{x:.4f}" for x in row["interact_frac"]), *cells])

    reference = next((r.get("reference") for r in rows if r.get("intervals")), None)
    header = "| variant | seeds | AUC | Precision | Norm. precision | interacting fraction per division layer |"
    rule = "|---|---|---|---|---|---|"
    if reference is not None:
        header += f" ΔAUC vs {reference} [95 % CI] | ΔPrecision | ΔNorm. precision |"
        rule += "---|---|---|"
    lines = [f"# {title}", "", header, rule]
    for row in rows:
        fracs = " / ".join(f"{x:.2f}" for x in row["interact_frac"]) or "-"
        line = (f"| {row['variant']} | {len(row['seeds'])} | {_fmt(row['auc'], row['auc_std'])} | "
                f"{_fmt(row['precision'], row['precision_std'])} | "
                f"{_fmt(row['norm_precision'], row['norm_precision_std'])} | {fracs} |")
        if reference is not None:
            intervals = row.get("intervals")
            line += "".join(f" {_fmt_interval(intervals.get(c) if intervals else None)} |" for c in METRIC_COLUMNS)
        lines.append(line)
    lines += ["", "Mean ± sample standard deviation over seeds; metrics ×100 as in the official analysis."]
    if reference is not None:
        iv = next(iter(next(r["intervals"] for r in rows if r.get("intervals")).values()))
        lines += ["", f"Δ: mean difference to {reference} with its {iv['level'] * 100:.0f} % bootstrap interval "
                      f"({iv['resamples']} resamples, seed {iv['seed']}; the {iv['sequences']} sequences resampled "
                      "paired, each row's training seeds resampled within it). n.s.: the interval contains 0, the "
                      "difference is not shown to be real."]
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths
