"""Flax GRM model: backbone with token division, center head, box decoding."""
from .grm import GRM, build_model
from .head import cal_bbox, hann2d

__all__ = ["GRM", "build_model", "cal_bbox", "hann2d"]
