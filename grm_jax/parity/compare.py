"""Comparison helpers shared by the parity checks (every figure in float64)."""
from __future__ import annotations

import numpy as np

from .registry import CheckResult


def max_abs_err(ours, ref) -> float:
    """Max |ours - ref|; inf when the shapes differ, 0 for empty arrays."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return float("inf")
    return float(np.max(np.abs(ours - ref))) if ref.size else 0.0


def max_rel_err(ours, ref) -> float:
    """Max |ours - ref| / |ref| (|ref| floored at 1e-30); inf when the shapes differ, 0 for empty arrays."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return float("inf")
    return float(np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-30))) if ref.size else 0.0


def elementwise_result(name: str, ours, ref, tol: float, detail="") -> CheckResult:
    """A result that fails on any element with |ours - ref| > tol (or on a shape mismatch)."""
    ours_a, ref_a = np.asarray(ours), np.asarray(ref)
    if ours_a.shape != ref_a.shape:
        return CheckResult(name, float("inf"), int(ref_a.size), int(ref_a.size), False,
                           f"shape {ours_a.shape} != reference {ref_a.shape}")
    diff = np.abs(ours_a.astype(np.float64) - ref_a.astype(np.float64))
    bad = int(np.sum(diff > tol))
    return CheckResult(name, max_abs_err(ours_a, ref_a), bad, int(ref_a.size), bad == 0, detail)
