#!/usr/bin/env python
"""Inference speed of the jitted GRM eval forward, against a PyTorch ViT-B/16 baseline on the same tokens.

    grm-bench-inference                        # ViT-B/256, random weights, CPU, batch 1 and 8
    grm-bench-inference --checkpoint DIR_OR_PTH --device gpu --json out.json

For each batch size: warm-up runs, then the median of --runs timed runs (seconds per forward and frames/s;
one frame = one template+search pair); ours and the baseline alternate run by run, so that both see the same
machine load, and the paired ratio's median is reported too. In the same run the baseline is a ViT-B/16 encoder (12 pre-norm
blocks, 768 wide, fused scaled-dot-product attention, the timm layout) in PyTorch eval/inference mode on the
same 64 + 256 = 320 tokens. timm itself is not used: every timm release imports torchvision, whose PyPI build
does not import beside the CPU torch wheel pinned here; the block stack below has the same size and ops.
The issue's reference figures for the official PyTorch GRM ViT-B/256 on a 2-core CPU (0.50 s at batch 1,
4.0 s at batch 8) are reported next to ours as well. The machine load is recorded, since other jobs skew CPU
timings.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from pathlib import Path

from grm_jax.benchmarking import finish_report, report_header
from grm_jax.cli import run_command
from grm_jax.validation import fraction, non_negative_int, positive_int
from grm_jax.models.vit import BACKBONE_DIMS


OFFICIAL_REFERENCE_S = {1: 0.50, 8: 4.0}  # official PyTorch GRM ViT-B/256 eval forward, 2-core CPU (issue)


def _measure(ours, baseline, warmup: int, runs: int, batch: int) -> tuple[dict, dict | None]:
    """Warm up both, then alternate them run by run, so that both see the same machine load."""
    from grm_jax.benchmarking import alternate_timed

    t0 = time.perf_counter()
    ours()
    first_call = time.perf_counter() - t0  # includes the jit compile
    for _ in range(warmup):
        ours()
        if baseline is not None:
            baseline()
    t_ours, t_base = alternate_timed(ours, baseline, runs, f"batch {batch}", leave=False)

    def summary(times):
        med = statistics.median(times)
        return {"median_s": med, "frames_per_s": batch / med, "runs_s": times}

    ours_summary = dict(summary(t_ours), first_call_s=first_call)
    if baseline is None:
        return ours_summary, None
    base_summary = summary(t_base)
    base_summary["paired_speedup_median"] = statistics.median(b / o for o, b in zip(t_ours, t_base))
    return ours_summary, base_summary


def bench_jax(cfg, batch_sizes, warmup, runs, device, checkpoint=None, threshold=0.0):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from grm_jax.models.grm import build_model
    from grm_jax.runtime import xla_compiler_options

    try:
        dev = jax.devices(device)[0]
    except RuntimeError as exc:
        raise SystemExit(f"bench_inference: no {device} visible to JAX ({exc}); a GPU run needs a CUDA build "
                         "of jaxlib (pip install 'jax[cuda12]')") from None
    model = build_model(cfg)
    zs, xs = int(cfg.DATA.TEMPLATE.SIZE), int(cfg.DATA.SEARCH.SIZE)
    if checkpoint:
        from grm_jax.checkpoint import load_for_inference

        variables = load_for_inference(checkpoint, cfg)
        source = str(checkpoint)
    else:
        variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, zs, zs, 3)), jnp.zeros((1, xs, xs, 3)))
        source = "random init"
    variables = jax.device_put(variables, dev)

    @functools.partial(jax.jit, compiler_options=xla_compiler_options(dev.platform))
    def forward(v, z, x):
        out = model.apply(v, z, x, train=False, threshold=threshold)
        return out["pred_boxes"], out["score_map"]

    runners = {}
    rng = np.random.default_rng(0)
    for b in batch_sizes:
        z = jax.device_put(jnp.asarray(rng.normal(size=(b, zs, zs, 3)), jnp.float32), dev)
        x = jax.device_put(jnp.asarray(rng.normal(size=(b, xs, xs, 3)), jnp.float32), dev)
        runners[b] = (lambda z=z, x=x: jax.block_until_ready(forward(variables, z, x)))
    return runners, source


class TorchViTB16:
    """ViT-B/16 encoder over template+search tokens, in the timm layout (built lazily; torch only here)."""

    @staticmethod
    def build(embed_dim, depth, num_heads, template, search):
        import torch
        from torch import nn
        import torch.nn.functional as F

        class Attention(nn.Module):
            def __init__(self):
                super().__init__()
                self.num_heads = num_heads
                self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
                self.proj = nn.Linear(embed_dim, embed_dim)

            def forward(self, x):
                b, n, c = x.shape
                qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
                x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
                return self.proj(x.transpose(1, 2).reshape(b, n, c))

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.norm1 = nn.LayerNorm(embed_dim, eps=1e-6)
                self.attn = Attention()
                self.norm2 = nn.LayerNorm(embed_dim, eps=1e-6)
                self.mlp = nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(),
                                         nn.Linear(4 * embed_dim, embed_dim))

            def forward(self, x):
                x = x + self.attn(self.norm1(x))
                return x + self.mlp(self.norm2(x))

        class ViT(nn.Module):
            def __init__(self):
                super().__init__()
                self.patch_embed = nn.Conv2d(3, embed_dim, 16, 16)
                self.pos_z = nn.Parameter(torch.zeros(1, (template // 16) ** 2, embed_dim))
                self.pos_x = nn.Parameter(torch.zeros(1, (search // 16) ** 2, embed_dim))
                self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
                self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

            def forward(self, z, x):
                z = self.patch_embed(z).flatten(2).transpose(1, 2) + self.pos_z
                x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_x
                return self.norm(self.blocks(torch.cat([z, x], dim=1)))

        return ViT().eval()


def bench_torch(batch_sizes, warmup, runs, device, threads, template, search, dims, dtype="float32"):
    """Runners per batch size of the pure-torch encoder of backbone `dims` (embed_dim, depth, num_heads)."""
    import contextlib

    import torch

    if device == "gpu":
        if not torch.cuda.is_available():
            return None, "no CUDA in this torch build"
        dev = torch.device("cuda")
    else:
        dev = torch.device("cpu")
        torch.set_num_threads(threads)
    embed_dim, depth, num_heads = dims
    model = TorchViTB16.build(embed_dim, depth, num_heads, template=template, search=search).to(dev)
    runners = {}
    gen = torch.Generator().manual_seed(0)
    for b in batch_sizes:
        z = torch.randn(b, 3, template, template, generator=gen).to(dev)
        x = torch.randn(b, 3, search, search, generator=gen).to(dev)

        def run(z=z, x=x):
            # bf16 baseline: torch autocast, the usual mixed precision (fp32 weights, bf16 matmuls)
            cast = (torch.autocast(dev.type, dtype=torch.bfloat16) if dtype == "bfloat16"
                    else contextlib.nullcontext())
            with torch.inference_mode(), cast:
                model(z, x)
            if dev.type == "cuda":
                torch.cuda.synchronize()

        runners[b] = run
    name = "ViT-B/16" if dims == BACKBONE_DIMS["vit_base"] else f"ViT {embed_dim}x{depth} ({num_heads} heads)/16"
    return runners, (f"pure-torch {name} (timm layout, SDPA, {dtype}), torch {torch.__version__}, "
                     f"{threads if device == 'cpu' else 'cuda'} threads")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="vitb_256_ep300")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--checkpoint", help="converted orbax dir, training workdir or official .pth.tar")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--warmup", type=non_negative_int, default=2)
    ap.add_argument("--runs", type=positive_int, default=7)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--threads", type=positive_int, default=os.cpu_count(), help="torch CPU threads (baseline)")
    ap.add_argument("--threshold", type=fraction, default=0.0)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                    help="compute dtype (MODEL.DTYPE; params stay fp32); the baseline then runs under autocast")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs must be >= 5 (median of at least five)")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    from grm_jax.config import backbone_dims, load_config

    cfg = load_config(args.config, args.overrides)
    if args.dtype:
        cfg.MODEL.DTYPE = args.dtype
    header = report_header()
    load_before = header["loadavg_before"]
    from grm_jax.runtime import report_user_error, user_errors
    try:   # an unreadable checkpoint is one error line, not a traceback
        our_runners, source = bench_jax(cfg, batch_sizes, args.warmup, args.runs, args.device, args.checkpoint,
                                        args.threshold)
    except user_errors() as err:
        return report_user_error(err, "bench_inference")
    base_runners, baseline_desc = (None, "skipped")
    if not args.no_baseline:
        base_runners, baseline_desc = bench_torch(
            batch_sizes, args.warmup, args.runs, args.device, args.threads, template=int(cfg.DATA.TEMPLATE.SIZE),
            search=int(cfg.DATA.SEARCH.SIZE), dims=tuple(backbone_dims(cfg)), dtype=str(cfg.MODEL.DTYPE))
    ours, baseline = {}, ({} if base_runners else None)
    for b in batch_sizes:
        ours[b], base_b = _measure(our_runners[b], base_runners[b] if base_runners else None, args.warmup,
                                   args.runs, b)
        if base_b is not None:
            baseline[b] = base_b
    load_after = os.getloadavg()

    report = {
        "config": args.config, "overrides": args.overrides, "weights": source, "device": args.device,
        "jax_device": str(jax.devices(args.device)[0]), "jax": jax.__version__,
        **header, "loadavg_after": load_after,
        "warmup": args.warmup, "runs": args.runs, "threshold": args.threshold,
        "dtype": str(cfg.MODEL.DTYPE),
        "baseline": baseline_desc, "results": {},
    }
    print(f"GRM {args.config} eval forward ({source}) on {report['jax_device']}; load {load_before[0]:.2f} -> "
          f"{load_after[0]:.2f}")
    print(f"{'batch':>5} {'ours s':>9} {'ours fps':>9} {'base s':>9} {'base fps':>9} {'ratio':>7} "
          f"{'vs official ref':>16}")
    for b in batch_sizes:
        row = {"ours": ours[b]}
        line = f"{b:>5} {ours[b]['median_s']:>9.4f} {ours[b]['frames_per_s']:>9.2f}"
        if baseline:
            row["baseline"] = baseline[b]
            row["speedup_vs_baseline"] = baseline[b]["median_s"] / ours[b]["median_s"]
            line += (f" {baseline[b]['median_s']:>9.4f} {baseline[b]['frames_per_s']:>9.2f}"
                     f" {row['speedup_vs_baseline']:>6.2f}x")
        else:
            line += f" {'-':>9} {'-':>9} {'-':>7}"
        if args.device == "cpu" and b in OFFICIAL_REFERENCE_S and args.config.startswith("vitb_256"):
            row["official_reference_s"] = OFFICIAL_REFERENCE_S[b]
            row["speedup_vs_official_reference"] = OFFICIAL_REFERENCE_S[b] / ours[b]["median_s"]
            line += f" {row['speedup_vs_official_reference']:>15.2f}x"
        report["results"][str(b)] = row
        print(line)
    print(json.dumps(report))
    finish_report(report, args.json)
    return 0


def cli() -> None:
    """Entry point of `grm-bench-inference` (pyproject.toml) and scripts/bench_inference.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()
