#!/usr/bin/env python
"""Training-step throughput of GRM ViT-B/256 (vitb_256_ep300) at batch 8: ours (jitted sharded step: forward,
backward, clip, AdamW) against a PyTorch baseline of the same work, measured in the same run.

    grm-bench-train [--config vitb_256_ep300] [--batch 8] [--runs 5] [--dtype float32]
                                  [--no-baseline] [--set KEY=VALUE ...]

Ours runs on one device (the default backend: CPU, or one GPU when JAX sees one; the baseline then runs on
CUDA too, under autocast for --dtype bfloat16). The baseline is a PyTorch
re-statement of the official step's compute: ViT-B/16 pre-norm blocks over the 64+256 template/search tokens
with the GRM division predictor and masked-softmax attention in the dividing blocks, the three-branch center
head with BatchNorm, the focal/GIoU/L1-sized loss, clip_grad_norm_ and AdamW (torch threads = cores on CPU).
Warm-up, then the median of --runs timed steps each; ours and the baseline alternate run by run so they see
the same machine load. Prints steps/s, pairs/s, the ratio and the compiled step's memory footprint.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from grm_jax.cli import run_command

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def ours_step(cfg, batch_size: int):
    import jax
    import numpy as np

    from grm_jax.models import build_model
    from grm_jax.train.losses import loss_weights
    from grm_jax.train.optim import make_optimizer
    from grm_jax.train.step import (create_train_state, global_batch, make_key, make_mesh, make_train_step,
                                    replicate)

    model = build_model(cfg)
    t, s = cfg.DATA.TEMPLATE.SIZE, cfg.DATA.SEARCH.SIZE
    variables = jax.jit(lambda r: model.init(r, np.zeros((1, t, t, 3), np.float32),
                                             np.zeros((1, s, s, 3), np.float32)))(make_key(0))
    mesh = make_mesh(jax.devices()[:1])
    tx = make_optimizer(cfg, variables["params"], batch_size)
    state = replicate(create_train_state(variables, tx, 0), mesh)
    rng = np.random.default_rng(0)
    f = s // 16
    heat = rng.uniform(0, 0.5, (batch_size, f, f)).astype(np.float32)
    heat[:, f // 2, f // 2] = 1.0
    batch = global_batch({
        "template": rng.normal(size=(batch_size, t, t, 3)).astype(np.float32),
        "search": rng.normal(size=(batch_size, s, s, 3)).astype(np.float32),
        "template_mask": np.ones((batch_size, (t // 16) ** 2), np.float32),
        "search_anno": np.tile(np.array([[0.4, 0.4, 0.2, 0.2]], np.float32), (batch_size, 1)),
        "heatmap": heat}, mesh)
    step = make_train_step(model, tx, mesh, loss_weights(cfg))
    print("initialised; compiling the train step", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    print(f"compiled in {compile_s:.1f} s", file=sys.stderr, flush=True)
    mem = compiled.memory_analysis()
    memory = None
    if mem is not None:
        memory = {k: int(getattr(mem, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                                     "temp_size_in_bytes", "generated_code_size_in_bytes")
                  if hasattr(mem, k)}
    holder = {"state": state}

    def run():
        new, metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics["total"])
        holder["state"] = new
    return run, compile_s, memory, jax.devices()[0]


def torch_step(cfg, batch_size: int, device: str = "cpu"):
    import contextlib

    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

    from grm_jax.config import backbone_dims, division_layers

    dev = torch.device("cuda" if device == "gpu" and torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    C, depth, heads = backbone_dims(cfg)
    t, s = cfg.DATA.TEMPLATE.SIZE, cfg.DATA.SEARCH.SIZE
    nz, nx = (t // 16) ** 2, (s // 16) ** 2
    dividing = set(division_layers(cfg))
    ch = cfg.MODEL.HEAD.NUM_CHANNELS

    class Block(tnn.Module):
        def __init__(self, divide):
            super().__init__()
            self.norm1, self.norm2 = tnn.LayerNorm(C, eps=1e-6), tnn.LayerNorm(C, eps=1e-6)
            self.qkv, self.proj = tnn.Linear(C, 3 * C), tnn.Linear(C, C)
            self.fc1, self.fc2 = tnn.Linear(C, 4 * C), tnn.Linear(4 * C, C)
            self.divide = divide
            if divide:
                self.pred = tnn.Sequential(tnn.Linear(2 * C, 384), tnn.GELU(), tnn.Linear(384, 192), tnn.GELU(),
                                           tnn.Linear(192, 2), tnn.LogSoftmax(dim=-1))

        def forward(self, x):
            b, n, _ = x.shape
            u = self.norm1(x)
            q, k, v = self.qkv(u).reshape(b, n, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
            a = ((q @ k.transpose(-2, -1)) * (C // heads) ** -0.5).float()
            if self.divide:
                tgt = u[:, :nz].max(dim=1, keepdim=True)[0].expand(-1, nx, -1)
                dec = F.gumbel_softmax(self.pred(torch.cat([u[:, nz:], tgt], -1)), hard=True)
                pol = torch.cat([torch.tensor([1.0, 0, 0], device=x.device).expand(b, nz, 3),
                                 torch.cat([torch.zeros(b, nx, 1, device=x.device), dec], -1)], 1)
                T, S, A = pol[..., 0], pol[..., 1], pol[..., 2]
                m = (T[:, :, None] * T[:, None] + S[:, :, None] * S[:, None] + T[:, :, None] * A[:, None]
                     + S[:, :, None] * A[:, None] + A[:, :, None] * A[:, None] + A[:, :, None] * T[:, None]
                     + A[:, :, None] * S[:, None])
                eye = torch.eye(n, device=x.device)
                m = (m + (1 - m) * eye)[:, None]
                e = (a - a.max(-1, keepdim=True)[0]).exp() * m
                a = (e + 1e-6 / n) / (e.sum(-1, keepdim=True) + 1e-6)
            else:
                a = a.softmax(-1)
            x = x + self.proj((a.to(v.dtype) @ v).transpose(1, 2).reshape(b, n, C))
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    def branch(out):
        layers, cin = [], C
        for w in (ch, ch // 2, ch // 4, ch // 8):
            layers += [tnn.Conv2d(cin, w, 3, padding=1), tnn.BatchNorm2d(w), tnn.ReLU()]
            cin = w
        return tnn.Sequential(*layers, tnn.Conv2d(cin, out, 1))

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.patch = tnn.Conv2d(3, C, 16, 16)
            self.pz, self.px = tnn.Parameter(torch.zeros(1, nz, C)), tnn.Parameter(torch.zeros(1, nx, C))
            self.blocks = tnn.ModuleList([Block(i in dividing) for i in range(depth)])
            self.norm = tnn.LayerNorm(C, eps=1e-6)
            self.ctr, self.off, self.size = branch(1), branch(2), branch(2)

        def forward(self, z, x):
            z = self.patch(z).flatten(2).transpose(1, 2) + self.pz
            x = self.patch(x).flatten(2).transpose(1, 2) + self.px
            h = torch.cat([z, x], 1)
            for blk in self.blocks:
                h = blk(h)
            f = s // 16
            feat = self.norm(h)[:, nz:].transpose(1, 2).reshape(-1, C, f, f)
            return self.ctr(feat).sigmoid().clamp(1e-4, 1 - 1e-4), self.size(feat).sigmoid(), self.off(feat)

    net = Net().train().to(dev)
    opt = torch.optim.AdamW([{"params": net.parameters(), "lr": 4e-4}], weight_decay=1e-4)
    z = torch.randn(batch_size, 3, t, t, device=dev)
    x = torch.randn(batch_size, 3, s, s, device=dev)
    target = torch.rand(batch_size, 1, s // 16, s // 16, device=dev) * 0.5
    # bf16: torch autocast (fp32 weights and optimizer, bf16 matmuls), the usual mixed-precision recipe
    bf16 = str(cfg.MODEL.DTYPE) == "bfloat16"

    def run():
        opt.zero_grad()
        with (torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()):
            score, size, off = net(z, x)
        score, size, off = score.float(), size.float(), off.float()
        p = score.clamp(min=1e-12)
        focal = -(torch.log(1 - p) * p ** 2 * (1 - target) ** 4).sum()
        loss = focal + size.mean() + off.abs().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return run


def main(argv=None) -> int:
    from grm_jax.config import add_config_args, config_from_args

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, default="vitb_256_ep300")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16"), help="MODEL.DTYPE")
    parser.add_argument("--no-baseline", action="store_true", help="skip the PyTorch baseline")
    parser.add_argument("--precision", default="highest", choices=("highest", "default"),
                        help="jax_default_matmul_precision (default lets a GPU use TF32)")
    args = parser.parse_args(argv)
    import jax
    # fp32 means fp32 here as in torch's default matmuls (JAX on a GPU would otherwise allow TF32)
    jax.config.update("jax_default_matmul_precision", args.precision)
    cfg = config_from_args(args)
    if args.dtype:
        cfg.MODEL.DTYPE = args.dtype
    cfg.MODEL.PRETRAIN_FILE = ""

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ours, compile_s, memory, device = ours_step(cfg, args.batch)
    base = None if args.no_baseline else torch_step(cfg, args.batch, device.platform)
    ours()
    if base is not None:
        base()
    from grm_jax.benchmarking import alternate_timed
    t_ours, t_base = alternate_timed(ours, base, args.runs, "bench", report_each=True)
    med = statistics.median(t_ours)
    report = {"config": args.config, "dtype": cfg.MODEL.DTYPE, "batch": args.batch, "device": str(device),
              "compile_s": round(compile_s, 1), "step_s_median": round(med, 3), "steps_per_s": round(1 / med, 3),
              "pairs_per_s": round(args.batch / med, 2), "step_s_runs": [round(x, 3) for x in t_ours],
              "memory_bytes": memory, "loadavg_1min_at_start": load,
              "loadavg_1min_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if t_base:
        bmed = statistics.median(t_base)
        report.update(baseline_step_s_median=round(bmed, 3), baseline_step_s_runs=[round(x, 3) for x in t_base],
                      speedup=round(bmed / med, 2),
                      paired_speedup_median=round(statistics.median(b / o for b, o in zip(t_base, t_ours)), 2))
    print(json.dumps(report, indent=1))
    return 0


def cli() -> None:
    """Entry point of `grm-bench-train` (pyproject.toml) and scripts/bench_train.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()
