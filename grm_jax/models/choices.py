"""The architecture choices an experiment config may name, apart from the modules that build them: the config
validates against these without loading flax or jax (the command-line programs parse and check their arguments
before jax starts)."""

# (embed_dim, depth, num_heads) of the backbones MODEL.BACKBONE.TYPE names (timm's ViT-B/16 and ViT-L/16)
BACKBONE_DIMS = {"vit_base": (768, 12, 12), "vit_large": (1024, 24, 16)}
# How the division predictor pools the template (official `lib/models/grm/vit.py: VisionTransformer`, tgt_type)
TGT_TYPES = ("allmax", "allavg", "roimax", "roiavg")
ROI_TGT_TYPES = ("roimax", "roiavg")   # pool only the template tokens inside the init box (template mask)
# How the blocks without a division predictor attend: jointly (official) or template and search apart
OTHER_LAYERS = ("full", "separate")
# What the backward pass keeps of each backbone block in training (models/vit.py: REMAT_POLICIES)
REMAT_SETTINGS = ("none", "dots", "blocks")
