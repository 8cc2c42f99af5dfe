#!/usr/bin/env python
"""Training step of GRM (default ViT-B/256, vitb_256_ep300, batch 8): memory and time of ours (jitted sharded
step: forward, backward, clip, AdamW) against a PyTorch re-statement of the official step, in the same run.

    grm-bench-train [--config vitb_256_ep300] [--batch 8] [--runs 5] [--warmup 2] [--dtype float32]
                                  [--baseline time|official-memory|both|none] [--memory-only]
                                  [--set KEY=VALUE ...]

Memory: the compiled step's `memory_analysis` (arguments, temporaries, outputs, aliased, and the total
arguments + temporaries + outputs - aliased), from a compile on abstract shapes (nothing allocated), and the
peak RSS of this process after the timed steps. `--baseline official-memory` (or `both`) runs the PyTorch
re-statement in a fresh subprocess for one warm-up and one measured step and reports its peak RSS (and the RSS
before the step): the figure a user sees for the official step. A batch-40 ViT-B/256 baseline peaks at ~18 GB.
`--memory-only` stops after the memory figures (no timing).

Time: ours runs on one device (the default backend: CPU, or one GPU when JAX sees one; the baseline then runs on
CUDA too, under autocast for --dtype bfloat16). The PyTorch re-statement of the official step's compute:
ViT-B/16 pre-norm blocks over the template/search tokens with the GRM division predictor and masked-softmax
attention in the dividing blocks, the three-branch center head with BatchNorm, the focal/GIoU/L1-sized loss,
clip_grad_norm_ and AdamW (torch threads = cores on CPU). Warm-up (--warmup rounds of one step each, in the
same alternating order; a process's first steps grow its malloc heap to hold both programs' peaks, and the times
are reported as `warmup_s_runs`), then --runs timed steps each, alternating run by run and swapping the order
every other run (odd runs ours first, even runs the baseline first), so that both see the same machine load and
an effect of what ran just before is visible: the report gives the medians per order besides the overall
medians and the spread (max / min).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from grm_jax.benchmarking import alternate_timed, compiled_memory, finish_report, report_header
from grm_jax.cli import run_command
from grm_jax.config import add_config_args, backbone_dims, config_from_args, division_layers
from grm_jax.validation import non_negative_int, positive_int


def abstract_inputs(cfg, model, batch_size: int):
    """(optimizer, abstract train state, abstract batch) of the step: shapes only, nothing allocated."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax
    import jax.numpy as jnp

    from grm_jax.specs import optimizer_spec
    from grm_jax.train.optim import OptimizerSpec, make_optimizer
    from grm_jax.train.step import create_train_state, make_key

    t, s = cfg.DATA.TEMPLATE.SIZE, cfg.DATA.SEARCH.SIZE

    def init(key):
        return model.init(key, jnp.zeros((1, t, t, 3), jnp.float32), jnp.zeros((1, s, s, 3), jnp.float32))

    tx = make_optimizer(OptimizerSpec(**optimizer_spec(cfg, batch_size)),
                        jax.eval_shape(init, make_key(0))["params"])
    state = jax.eval_shape(lambda key: create_train_state(init(key), tx, make_key(0)), make_key(0))
    f = s // 16
    spec = jax.ShapeDtypeStruct
    batch = {"template": spec((batch_size, t, t, 3), jnp.float32),
             "search": spec((batch_size, s, s, 3), jnp.float32),
             "template_mask": spec((batch_size, (t // 16) ** 2), jnp.float32),
             "search_anno": spec((batch_size, 4), jnp.float32),
             "heatmap": spec((batch_size, f, f), jnp.float32)}
    return tx, state, batch


def compile_ours(cfg, batch_size: int):
    """(compiled step, model, optimizer, mesh, compile seconds) from abstract inputs."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax

    from grm_jax.specs import build_model
    from grm_jax.train.losses import loss_weights
    from grm_jax.train.step import make_mesh, make_train_step

    model = build_model(cfg)
    mesh = make_mesh(jax.devices()[:1])
    tx, state, batch = abstract_inputs(cfg, model, batch_size)
    step = make_train_step(model, tx, mesh, loss_weights(cfg))
    print("compiling the train step", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    print(f"compiled in {compile_s:.1f} s", file=sys.stderr, flush=True)
    return compiled, model, tx, mesh, compile_s


def ours_step(cfg, batch_size: int, compiled, model, tx, mesh):
    """A function running one step of the compiled program on random data (the state carried over)."""
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax

    from grm_jax.train.step import create_train_state, global_batch, make_key, replicate

    t, s = cfg.DATA.TEMPLATE.SIZE, cfg.DATA.SEARCH.SIZE
    variables = jax.jit(lambda r: model.init(r, np.zeros((1, t, t, 3), np.float32),
                                             np.zeros((1, s, s, 3), np.float32)))(make_key(0))
    state = replicate(create_train_state(variables, tx, make_key(0)), mesh)
    del variables
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
    holder = {"state": state}

    def run():
        new, metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics["total"])
        holder["state"] = new
    return run


def torch_step(cfg, batch_size: int, device: str = "cpu"):
    # optional dependency
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F

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


def _status_bytes(field: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM where there is /proc (ru_maxrss of a spawned child would include its
    parent's RSS at the fork)."""
    hwm = _status_bytes("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int | None:
    return _status_bytes("VmRSS")


def torch_memory(cfg, batch_size: int, device: str) -> dict:
    """Run in a fresh process: the PyTorch re-statement's RSS before its first step and its peak RSS over a
    warm-up and one measured step (plus the CUDA allocator's peak on a GPU)."""
    run = torch_step(cfg, batch_size, device)
    before = current_rss_bytes()
    run()
    t0 = time.perf_counter()
    run()
    report = {"rss_before_step": before, "peak_rss": peak_rss_bytes(), "step_s": round(time.perf_counter() - t0, 3)}
    # optional dependency
    import torch
    if torch.cuda.is_available() and device == "gpu":
        report["cuda_max_allocated"] = int(torch.cuda.max_memory_allocated())
    return report


def torch_memory_subprocess(argv: list[str], device: str) -> dict:
    """`torch_memory` in a fresh interpreter (this script with --torch-memory-child), so that its peak RSS is
    the baseline's own and nothing of ours (not even JAX) is in it."""
    cmd = [sys.executable, "-m", "grm_jax.cli.bench_train", *argv, "--torch-memory-child", device]
    print("baseline memory: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    # glibc's default malloc, as the official code runs: our tunables keep freed memory in the process
    # (grm_jax/runtime.py), which would count torch's freed temporaries into its peak
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["GRM_MALLOC_HUGEPAGES"] = "0"
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"the baseline memory run failed (exit {res.returncode}): {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def gb(x):
    return None if x is None else round(x / 1e9, 3)


def spread(times: list[float]) -> float | None:
    return round(max(times) / min(times), 3) if times else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, default="vitb_256_ep300")
    parser.add_argument("--batch", type=positive_int, default=8)
    parser.add_argument("--runs", type=positive_int, default=5)
    parser.add_argument("--warmup", type=non_negative_int, default=2,
                        help="untimed alternating rounds before the timed ones (reported as warmup_s_runs)")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16"), help="MODEL.DTYPE")
    parser.add_argument("--baseline", default="time", choices=("time", "official-memory", "both", "none"),
                        help="PyTorch re-statement: alternating step time in this process (time), peak RSS in a "
                             "fresh process (official-memory), both, or none")
    parser.add_argument("--no-baseline", action="store_true", help="same as --baseline none")
    parser.add_argument("--memory-only", action="store_true", help="stop after the memory figures")
    parser.add_argument("--precision", default="highest", choices=("highest", "default"),
                        help="jax_default_matmul_precision (default lets a GPU use TF32)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--torch-memory-child", default=None, choices=("cpu", "gpu"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    baseline = "none" if args.no_baseline else args.baseline
    cfg = config_from_args(args)
    if args.dtype:
        cfg.MODEL.DTYPE = args.dtype
    cfg.MODEL.PRETRAIN_FILE = ""
    if args.torch_memory_child:      # the baseline alone: no JAX in this process
        print(json.dumps(torch_memory(cfg, args.batch, args.torch_memory_child)))
        return 0

    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax
    # fp32 means fp32 here as in torch's default matmuls (JAX on a GPU would otherwise allow TF32)
    jax.config.update("jax_default_matmul_precision", args.precision)

    header = report_header()
    compiled, model, tx, mesh, compile_s = compile_ours(cfg, args.batch)
    memory = compiled_memory(compiled)
    report = {"config": args.config, "overrides": list(args.overrides), "dtype": cfg.MODEL.DTYPE,
              "remat": cfg.TRAIN.REMAT, "batch": args.batch, "device": str(jax.devices()[0]), **header,
              "compile_s": round(compile_s, 1), "memory_bytes": memory,
              "memory_gb": {k: gb(v) for k, v in (memory or {}).items()}}
    print("ours (compiled memory_analysis, GB): " + json.dumps(report["memory_gb"]), file=sys.stderr, flush=True)
    if baseline in ("official-memory", "both"):
        child_argv = [a for a in (argv if argv is not None else sys.argv[1:])
                      if a not in ("--memory-only", "--no-baseline")]
        base_mem = torch_memory_subprocess(child_argv, jax.devices()[0].platform)
        report["baseline_memory_bytes"] = base_mem
        report["baseline_memory_gb"] = {k: gb(v) if k != "step_s" else v for k, v in base_mem.items()}
        if memory is not None:
            report["ours_total_over_baseline_peak"] = round(memory["total"] / base_mem["peak_rss"], 3)
        print("baseline (fresh process, GB): " + json.dumps(report["baseline_memory_gb"]), file=sys.stderr,
              flush=True)
    if not args.memory_only:
        ours = ours_step(cfg, args.batch, compiled, model, tx, mesh)
        base = torch_step(cfg, args.batch, jax.devices()[0].platform) if baseline in ("time", "both") else None
        w_ours, w_base = alternate_timed(ours, base, max(1, args.warmup), "warm-up", leave=False)
        report.update(warmup_s_runs=[round(x, 3) for x in w_ours],
                      baseline_warmup_s_runs=[round(x, 3) for x in w_base])
        t_ours, t_base = alternate_timed(ours, base, args.runs, "bench", report_each=True, swap_order=True)
        med = statistics.median(t_ours)
        report.update(step_s_median=round(med, 3), steps_per_s=round(1 / med, 3),
                      pairs_per_s=round(args.batch / med, 2), step_s_runs=[round(x, 3) for x in t_ours],
                      step_s_spread=spread(t_ours), peak_rss_gb=gb(peak_rss_bytes()))
        stats = jax.devices()[0].memory_stats() or {}      # an accelerator's allocator (None on CPU)
        if "peak_bytes_in_use" in stats:
            report.update(device_peak_bytes_in_use=int(stats["peak_bytes_in_use"]),
                          device_peak_gb=gb(stats["peak_bytes_in_use"]))
        if t_base:
            bmed = statistics.median(t_base)
            first, after = t_ours[0::2], t_ours[1::2]
            report.update(
                baseline_step_s_median=round(bmed, 3), baseline_step_s_runs=[round(x, 3) for x in t_base],
                baseline_step_s_spread=spread(t_base), speedup=round(bmed / med, 2),
                paired_speedup_median=round(statistics.median(b / o for b, o in zip(t_base, t_ours)), 2),
                order="odd runs ours first, even runs baseline first",
                step_s_median_ours_first=round(statistics.median(first), 3),
                step_s_median_after_baseline=round(statistics.median(after), 3) if after else None)
    report["loadavg_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))
    finish_report(report, args.json)
    return 0


def cli() -> None:
    """Entry point of `grm-bench-train` (pyproject.toml) and scripts/bench_train.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()
