"""GRM = ViT backbone with adaptive token division + center head (official `lib/models/grm/grm.py`)."""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ..config import Config, backbone_dims, division_layers
from .head import CenterPredictor, cal_bbox
from .vit import VisionTransformer


class GRM(nn.Module):
    embed_dim: int
    depth: int
    num_heads: int
    template_size: int
    search_size: int
    patch_size: int = 16
    head_channels: int = 256
    division_layers: Sequence[int] = ()
    tgt_type: str = "allmax"
    early: bool = True
    ratio: float = 0.0
    other_layers: str = "full"
    drop_path_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    scan_blocks: bool = False       # see VisionTransformer.scan_blocks
    remat: str = "none"             # see vit.REMAT_POLICIES

    @property
    def feat_size(self) -> int:
        return self.search_size // self.patch_size

    @nn.compact
    def __call__(self, template, search, template_mask=None, *, train: bool = False, threshold=0.0,
                 gumbel_noise=None):
        """template (B, Hz, Wz, 3), search (B, Hx, Wx, 3): NHWC ImageNet-normalised float32.

        Returns pred_boxes (B, 1, 4) cx,cy,w,h; score_map (B, F, F, 1); size_map / offset_map (B, F, F, 2);
        backbone_tokens (B, N, C); divide_logprob and decisions (L_div, B, Nx, 2); interact_frac (B, L_div).
        """
        tokens, logprob, decisions = VisionTransformer(
            self.embed_dim, self.depth, self.num_heads, self.template_size, self.search_size, self.patch_size,
            tuple(self.division_layers), self.tgt_type, self.early, self.ratio, self.other_layers,
            self.drop_path_rate, self.dtype, self.scan_blocks, self.remat, name="backbone")(
            template, search, template_mask, train=train, threshold=threshold, gumbel_noise=gumbel_noise)
        b, f = tokens.shape[0], self.feat_size
        feat = tokens[:, -f * f:].reshape(b, f, f, self.embed_dim)
        score, size, offset = CenterPredictor(self.head_channels, self.dtype, name="box_head")(feat, train)
        boxes = cal_bbox(score, size, offset)
        return {
            "pred_boxes": boxes[:, None, :],
            "score_map": score,
            "size_map": size,
            "offset_map": offset,
            "backbone_tokens": tokens.astype(jnp.float32),
            "divide_logprob": logprob,
            "decisions": decisions,
            "interact_frac": jnp.mean(decisions[..., 1], axis=-1).T,
        }


def build_model(cfg: Config, dtype: Optional[str | jnp.dtype] = None) -> GRM:
    """The GRM described by `cfg` (MODEL.*, DATA.TEMPLATE/SEARCH.SIZE, TRAIN.DROP_PATH_RATE / SCAN_BLOCKS /
    REMAT)."""
    embed_dim, depth, num_heads = backbone_dims(cfg)
    m = cfg.MODEL
    return GRM(
        embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        template_size=cfg.DATA.TEMPLATE.SIZE, search_size=cfg.DATA.SEARCH.SIZE,
        patch_size=m.BACKBONE.STRIDE, head_channels=m.HEAD.NUM_CHANNELS,
        division_layers=division_layers(cfg), tgt_type=m.TGT_TYPE, early=bool(m.DIVISION.EARLY),
        ratio=float(m.DIVISION.RATIO), other_layers=m.DIVISION.OTHER_LAYERS,
        drop_path_rate=float(cfg.TRAIN.DROP_PATH_RATE), scan_blocks=bool(cfg.TRAIN.SCAN_BLOCKS),
        remat=str(cfg.TRAIN.REMAT),
        dtype=jnp.dtype(dtype if dtype is not None else m.DTYPE))

