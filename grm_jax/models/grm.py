"""GRM = ViT backbone with adaptive token division + center head (official `lib/models/grm/grm.py`)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from einops import rearrange

from .division import DivisionSpec
from .head import CenterPredictor, cal_bbox, true_divide
from .vit import VisionTransformer


class GRM(nn.Module):
    """Built from keywords (grm_jax.specs.model_spec reads them from a config)."""
    embed_dim: int
    depth: int
    num_heads: int
    template_size: int
    search_size: int
    patch_size: int = 16
    head_channels: int = 256
    division: DivisionSpec = DivisionSpec()
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
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
            template_size=self.template_size, search_size=self.search_size, patch_size=self.patch_size,
            division=self.division, drop_path_rate=self.drop_path_rate, dtype=self.dtype,
            scan_blocks=self.scan_blocks, remat=self.remat, name="backbone")(
            template, search, template_mask, train=train, threshold=threshold, gumbel_noise=gumbel_noise)
        f = self.feat_size
        feat = rearrange(tokens[:, -f * f:], "b (h w) c -> b h w c", h=f, w=f)
        score, size, offset = CenterPredictor(channels=self.head_channels, dtype=self.dtype, name="box_head")(
            feat, train=train)
        boxes = cal_bbox(score, size, offset)
        return {
            "pred_boxes": boxes[:, None, :],
            "score_map": score,
            "size_map": size,
            "offset_map": offset,
            "backbone_tokens": tokens.astype(jnp.float32),
            "divide_logprob": logprob,
            "decisions": decisions,
            "interact_frac": true_divide(jnp.sum(decisions[..., 1], axis=-1), decisions.shape[-2]).T,
        }
