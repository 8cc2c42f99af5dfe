#!/usr/bin/env python
"""How fast could GRM possibly run on this machine in fp32? A matmul-only lower bound per benchmarked program.

    grm-bench-roofline                       # ViT-B/256: eval forward batch 1 and 8, train step batch 8
    grm-bench-roofline --json results/roofline.json

Every program the speed targets time (eval forward at batch 1 and 8, training step at batch 8) is dominated by
matrix products. This script lists them from the config (patch embedding, per block qkv / attention / proj / MLP,
the division predictor, the head's convolutions as im2col products; training adds, per product, the two backward
products dX = dY W^T and dW = X^T dY, except dX of the patch embedding), measures on this machine the rate that
XLA and NumPy's BLAS each reach on every exact product shape (warm-up, then the fastest of --runs), keeps the
faster of the two, and adds up the products' times. That sum is a lower bound for the program: it counts every
non-matmul op (softmax, LayerNorm, GELU, the optimizer, the loss) as free and every product at the best rate
measured for its shape. XLA's own FLOP count of the compiled program (cost analysis) is printed beside the
enumeration as a check on it.

Compared with the issues' targets: the official PyTorch time on a 2-core machine of this kind divided by 1.3.
If the bound is above the target, no fp32 implementation that performs the same products reaches the target
here; the report says by how much.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grm_jax.benchmarking import finish_report, report_header
from grm_jax.cli import run_command
from grm_jax.config import backbone_dims, division_layers, load_config
from grm_jax.runtime import xla_compiler_options
from grm_jax.validation import positive_int


# The issues' figures for the official PyTorch GRM ViT-B/256 on a 2-core CPU, and the asked-for speed-up.
OFFICIAL_S = {"eval_b1": 0.50, "eval_b8": 4.0, "train_b8": 10.9, "track_frame": 1 / 2.07}
TARGET_SPEEDUP = 1.3


@dataclass(frozen=True)
class Product:
    """count x [(batch) (m, k) @ (k, n)]"""
    name: str
    m: int
    k: int
    n: int
    batch: int = 1
    count: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.batch * self.count


def forward_products(cfg, batch: int) -> list[Product]:
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from grm_jax.models.division import DIVIDE_HIDDEN
    from grm_jax.models.vit import MLP_RATIO

    c, depth, heads = backbone_dims(cfg)
    patch = int(cfg.MODEL.BACKBONE.STRIDE)
    nz = (int(cfg.DATA.TEMPLATE.SIZE) // patch) ** 2
    nx = (int(cfg.DATA.SEARCH.SIZE) // patch) ** 2
    n, d, mlp = nz + nx, c // heads, MLP_RATIO * c
    t = batch * n
    ndiv = len(division_layers(cfg))
    out = [
        Product("patch_embed_template", batch * nz, 3 * patch * patch, c),
        Product("patch_embed_search", batch * nx, 3 * patch * patch, c),
        Product("qkv", t, c, 3 * c, count=depth),
        Product("attn_qk", n, d, n, batch=batch * heads, count=depth),
        Product("attn_av", n, n, d, batch=batch * heads, count=depth),
        Product("proj", t, c, c, count=depth),
        Product("mlp_fc1", t, c, mlp, count=depth),
        Product("mlp_fc2", t, mlp, c, count=depth),
    ]
    if ndiv:
        # [search ; target] @ W computed as search @ W[:C] + target @ W[C:] (models/division.py)
        h1, h2 = DIVIDE_HIDDEN
        out += [Product("divide_0_search", batch * nx, c, h1, count=ndiv),
                Product("divide_0_target", batch, c, h1, count=ndiv),
                Product("divide_2", batch * nx, h1, h2, count=ndiv),
                Product("divide_4", batch * nx, h2, 2, count=ndiv)]
    ch = int(cfg.MODEL.HEAD.NUM_CHANNELS)
    widths = [c] + [ch // 2 ** i for i in range(4)]
    fmap = batch * nx
    for i in range(4):
        out.append(Product(f"head_conv{i + 1}", fmap, 9 * widths[i], widths[i + 1], count=3))
    out += [Product("head_out_ctr", fmap, widths[-1], 1), Product("head_out_size_offset", fmap, widths[-1], 2,
                                                                  count=2)]
    return out


def training_products(cfg, batch: int) -> list[Product]:
    out = []
    for p in forward_products(cfg, batch):
        out.append(p)
        if not p.name.startswith("patch_embed"):  # no gradient w.r.t. the input image
            out.append(Product(p.name + "/dX", p.m, p.n, p.k, p.batch, p.count))
        out.append(Product(p.name + "/dW", p.k, p.m, p.n, p.batch, p.count) if p.batch == 1 else
                   Product(p.name + "/dB", p.k, p.m, p.n, p.batch, p.count))  # attention: both operands
    return out


def _fastest_time(fn, runs: int) -> float:
    """The fastest of `runs` timed calls after two warm-ups: for a lower bound, the most favourable figure."""
    fn()
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def product_seconds(p: Product, runs: int, cache: dict) -> dict:
    """Seconds for ONE instance of p (the count multiplies later), best of XLA and NumPy."""
    key = (p.batch, p.m, p.k, p.n)
    if key in cache:
        return cache[key]
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    shape_a = (p.batch, p.m, p.k) if p.batch > 1 else (p.m, p.k)
    shape_b = (p.batch, p.k, p.n) if p.batch > 1 else (p.k, p.n)
    a = rng.standard_normal(shape_a, dtype=np.float32)
    b = rng.standard_normal(shape_b, dtype=np.float32)
    t_numpy = _fastest_time(lambda: np.matmul(a, b), runs)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    mm = jax.jit(jnp.matmul, compiler_options=xla_compiler_options())
    t_xla = _fastest_time(lambda: mm(ja, jb).block_until_ready(), runs)
    flops = 2 * p.m * p.k * p.n * p.batch
    cache[key] = {"numpy_s": t_numpy, "xla_s": t_xla, "best_s": min(t_numpy, t_xla),
                  "numpy_gflops": flops / t_numpy / 1e9, "xla_gflops": flops / t_xla / 1e9}
    return cache[key]


def xla_program_flops(cfg, program: str, batch: int) -> float | None:
    """XLA's FLOP count of the compiled program (None where the backend gives none). The blocks are unrolled
    (the cost analysis counts a scan's body once) and nothing is recomputed in the backward (TRAIN.REMAT)."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax

    from grm_jax.specs import build_model

    cfg = copy.deepcopy(cfg)
    cfg.TRAIN.SCAN_BLOCKS = False
    cfg.TRAIN.REMAT = "none"        # the model's own products, without the backward's recomputation
    model = build_model(cfg)
    zs, xs = int(cfg.DATA.TEMPLATE.SIZE), int(cfg.DATA.SEARCH.SIZE)
    z = jax.ShapeDtypeStruct((batch, zs, zs, 3), np.float32)
    x = jax.ShapeDtypeStruct((batch, xs, xs, 3), np.float32)
    variables = jax.eval_shape(lambda r: model.init(r, np.zeros((1, zs, zs, 3), np.float32),
                                                    np.zeros((1, xs, xs, 3), np.float32)), jax.random.PRNGKey(0))
    if program == "eval":
        lowered = jax.jit(lambda v, z, x: model.apply(v, z, x, train=False)["pred_boxes"]).lower(variables, z, x)
    else:
        from grm_jax.train.losses import loss_weights
        from grm_jax.train.step import loss_and_grads

        f = xs // 16
        batch_spec = {"template": z, "search": x,
                      "template_mask": jax.ShapeDtypeStruct((batch, (zs // 16) ** 2), np.float32),
                      "search_anno": jax.ShapeDtypeStruct((batch, 4), np.float32),
                      "heatmap": jax.ShapeDtypeStruct((batch, f, f), np.float32)}
        rngs = {"dropout": jax.random.PRNGKey(1), "gumbel": jax.random.PRNGKey(2)}
        weights = loss_weights(cfg)
        lowered = jax.jit(lambda p, bs, b: loss_and_grads(model, weights, p, bs, b, rngs)[0]).lower(
            variables["params"], variables["batch_stats"], batch_spec)
    cost = lowered.compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


FMA_KERNEL = r"""
#include <stdio.h>
#include <omp.h>
typedef float v16 __attribute__((vector_size(64)));
int main(void) {
  long iters = 50000000L; double t0 = omp_get_wtime(); float sink = 0;
  #pragma omp parallel reduction(+:sink)
  { v16 b = {0}, c = {0}, a[12];
    for (int j = 0; j < 16; j++) { b[j] = 0.999999f; c[j] = 1e-7f; }
    for (int i = 0; i < 12; i++) for (int j = 0; j < 16; j++) a[i][j] = (float)(i + j);
    for (long it = 0; it < iters; it++) {
      a[0] = a[0] * b + c; a[1] = a[1] * b + c; a[2] = a[2] * b + c; a[3] = a[3] * b + c;
      a[4] = a[4] * b + c; a[5] = a[5] * b + c; a[6] = a[6] * b + c; a[7] = a[7] * b + c;
      a[8] = a[8] * b + c; a[9] = a[9] * b + c; a[10] = a[10] * b + c; a[11] = a[11] * b + c; }
    for (int i = 0; i < 12; i++) sink += a[i][0]; }
  double t = omp_get_wtime() - t0;
  printf("%f %d %f\n", 2.0 * 16 * 12 * iters * omp_get_max_threads() / t / 1e9, omp_get_max_threads(), sink);
  return 0;
}
"""


def fma_peak_gflops() -> float | None:
    """fp32 multiply-add peak of this CPU on all its cores (12 independent chains of 16-float vectors: one
    AVX-512 register each, or two AVX2 registers where -march=native has no AVX-512), from a 12-line C kernel built with the system compiler; None where no C compiler with OpenMP is found. The
    median of 3 runs."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "fma.c", Path(tmp) / "fma"
        src.write_text(FMA_KERNEL)
        built = subprocess.run([cc, "-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", str(src), "-o",
                                str(exe)], capture_output=True, text=True)
        if built.returncode != 0:
            return None
        rates = [float(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()[0])
                 for _ in range(3)]
    return statistics.median(rates)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="vitb_256_ep300")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--runs", type=positive_int, default=7)
    ap.add_argument("--no-xla-flops", action="store_true", help="skip compiling the programs for XLA's FLOP count")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs must be >= 5")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    cfg = load_config(args.config, args.overrides)
    programs = {"eval_b1": ("eval", 1), "eval_b8": ("eval", 8), "train_b8": ("train", 8)}
    cache: dict = {}
    report = {"config": args.config, "overrides": args.overrides, **report_header(),
              "processor": platform.processor(), "runs": args.runs, "programs": {}}
    official = args.config.startswith("vitb_256") and not args.overrides
    report["fma_peak_gflops"] = fma_peak_gflops()
    for name, (kind, batch) in programs.items():
        products = forward_products(cfg, batch) if kind == "eval" else training_products(cfg, batch)
        rows, total_s, total_flops = [], 0.0, 0
        for p in products:
            one = product_seconds(p, args.runs, cache)
            rows.append({"product": p.name, "batch": p.batch, "m": p.m, "k": p.k, "n": p.n, "count": p.count,
                         "gflop": p.flops / 1e9, "best_s": one["best_s"] * p.count,
                         "numpy_gflops": round(one["numpy_gflops"], 1), "xla_gflops": round(one["xla_gflops"], 1)})
            total_s += one["best_s"] * p.count
            total_flops += p.flops
        entry = {"products": rows, "matmul_gflop": total_flops / 1e9, "matmul_only_bound_s": total_s,
                 "matmul_rate_gflops": total_flops / total_s / 1e9}
        if not args.no_xla_flops:
            entry["xla_cost_analysis_gflop"] = (lambda f: f / 1e9 if f else None)(xla_program_flops(cfg, kind, batch))
        if official:
            entry["official_s"] = OFFICIAL_S[name]
            entry["target_s"] = OFFICIAL_S[name] / TARGET_SPEEDUP
            entry["official_implied_gflops"] = total_flops / OFFICIAL_S[name] / 1e9
            entry["needed_gflops"] = total_flops / entry["target_s"] / 1e9
            entry["bound_over_target"] = total_s / entry["target_s"]
            if report["fma_peak_gflops"]:
                entry["needed_fraction_of_fma_peak"] = entry["needed_gflops"] / report["fma_peak_gflops"]
        report["programs"][name] = entry
    if official:
        # a tracked frame = the batch-1 forward plus the crop, normalisation and box update on the host
        b1 = report["programs"]["eval_b1"]
        target = OFFICIAL_S["track_frame"] / TARGET_SPEEDUP
        frame = {"matmul_gflop": b1["matmul_gflop"], "matmul_only_bound_s": b1["matmul_only_bound_s"],
                 "matmul_rate_gflops": b1["matmul_rate_gflops"], "official_s": OFFICIAL_S["track_frame"],
                 "target_s": target, "bound_over_target": b1["matmul_only_bound_s"] / target,
                 "needed_gflops": b1["matmul_gflop"] / target}
        if report["fma_peak_gflops"]:
            frame["needed_fraction_of_fma_peak"] = frame["needed_gflops"] / report["fma_peak_gflops"]
        report["programs"]["track_frame"] = frame
    report["loadavg_after"] = os.getloadavg()

    print(f"matmul-only lower bounds, {args.config}, fp32, {os.cpu_count()} CPUs "
          f"(load {report['loadavg_before'][0]:.2f} -> {report['loadavg_after'][0]:.2f})")
    peak = report["fma_peak_gflops"]
    print(f"fp32 multiply-add peak of all cores (C kernel): {f'{peak:.0f} GFLOP/s' if peak else 'not measured'}")
    print(f"{'program':>12} {'GFLOP':>8} {'XLA GFLOP':>10} {'bound s':>8} {'GFLOP/s':>8} {'official s':>10} "
          f"{'target s':>9} {'bound/target':>12} {'needed GFLOP/s':>14}")
    for name, e in report["programs"].items():
        xla = e.get("xla_cost_analysis_gflop")
        print(f"{name:>12} {e.get('matmul_gflop', float('nan')):>8.1f} "
              f"{(f'{xla:.1f}' if xla else '-'):>10} {e['matmul_only_bound_s']:>8.3f} "
              f"{e.get('matmul_rate_gflops', float('nan')):>8.1f} {e.get('official_s', float('nan')):>10.3f} "
              f"{e.get('target_s', float('nan')):>9.3f} {e.get('bound_over_target', float('nan')):>12.2f} "
              f"{e.get('needed_gflops', float('nan')):>14.1f}")
    print("per shape (GFLOP/s, one instance): " + "; ".join(
        f"{k[0]}x{k[1]}x{k[2]}x{k[3]} numpy {v['numpy_gflops']:.0f} xla {v['xla_gflops']:.0f}"
        for k, v in cache.items()))
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "products"} for k, v in report["programs"].items()}))
    finish_report(report, args.json)
    return 0


def cli() -> None:
    """Entry point of `grm-bench-roofline` (pyproject.toml) and scripts/bench_roofline.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()
