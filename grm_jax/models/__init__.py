"""Flax GRM model: backbone with token division (`division.py`), center head (`head.py`), box decoding; built
from plain keywords, `grm.GRM(**grm_jax.specs.model_spec(cfg))`."""
