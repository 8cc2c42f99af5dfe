"""Digests of array trees: written with every checkpoint (converted and training) and checked on every read, so a
damaged file is an error, never different weights."""
from __future__ import annotations

import hashlib
from typing import Mapping

import jax
import numpy as np

DIGEST_ALGORITHM = "sha256(sorted path|dtype|shape + C-order bytes)"


def tree_digest(tree) -> str:
    """sha256 over every leaf of a tree: sorted '/'-joined path, dtype, shape, then the C-order bytes."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    items = sorted((("/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)), np.asarray(v))
                   for path, v in flat)
    h = hashlib.sha256()
    for name, arr in items:
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}\n".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def tree_digests(tree: Mapping) -> dict:
    """{top-level key: tree_digest} of a host tree (a training state, a converted checkpoint's items)."""
    return {str(k): tree_digest(v) for k, v in tree.items()}


def first_mismatch(tree: Mapping, stored: Mapping) -> str | None:
    """The first key of `stored` whose digest differs from that of `tree[key]`; None when all match."""
    for key, digest in stored.items():
        if key in tree and tree_digest(tree[key]) != digest:
            return key
    return None
