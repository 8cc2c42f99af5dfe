"""Flax GRM model: backbone with token division, center head, box decoding."""
from .grm import GRM
from .head import cal_bbox, hann2d

__all__ = ["GRM", "cal_bbox", "hann2d"]
