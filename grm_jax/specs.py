"""Plain specs from a Config: the one place where configuration becomes the plain values that the models, the
conversion and the optimizer take."""
from __future__ import annotations

from .config import Config, backbone_dims
from .convert.layout import ModelArchitecture

# ------------------------------------------------------------------------------------------------- conversion

# ModelArchitecture field -> the config key it is read from
_ARCHITECTURE_KEYS = {
    "template_size": "DATA.TEMPLATE.SIZE",
    "search_size": "DATA.SEARCH.SIZE",
    "head_channels": "MODEL.HEAD.NUM_CHANNELS",
    "patch_size": "MODEL.BACKBONE.STRIDE",
    "embed_dim": "MODEL.BACKBONE.EMBED_DIM",
    "depth": "MODEL.BACKBONE.DEPTH",
}


def conversion_architecture(cfg: Config) -> ModelArchitecture:
    """The architecture ``build_model(cfg)`` builds, as a checkpoint must match it; each field names the config
    setting it comes from, for the report of a disagreement."""
    embed_dim, depth, num_heads = backbone_dims(cfg)
    backbone = cfg.MODEL.BACKBONE
    layers = cfg.MODEL.DIVISION.LAYERS
    settings = {name: f"{key}={cfg.get_path(key)}" for name, key in _ARCHITECTURE_KEYS.items()}
    if backbone.EMBED_DIM is None:
        settings["embed_dim"] = f"MODEL.BACKBONE.TYPE={backbone.TYPE} (no EMBED_DIM set) means embed_dim {embed_dim}"
    if backbone.DEPTH is None:
        settings["depth"] = f"MODEL.BACKBONE.TYPE={backbone.TYPE} (no DEPTH set) means depth {depth}"
    settings["division_layers"] = (f"MODEL.DIVISION.LAYERS={list(layers)}" if layers is not None else
                                   "MODEL.DIVISION.LAYERS=null (every block but the first)")
    return ModelArchitecture(
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=int(backbone.STRIDE),
        template_size=int(cfg.DATA.TEMPLATE.SIZE), search_size=int(cfg.DATA.SEARCH.SIZE),
        head_channels=int(cfg.MODEL.HEAD.NUM_CHANNELS),
        division_layers=tuple(int(i) for i in layers) if layers is not None else None,
        settings=settings)
