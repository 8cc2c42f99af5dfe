import pytest
import yaml

from grm_jax.config import (ConfigError, apply_overrides, backbone_dims, division_layers, load_config,
                            parse_override)

OFFICIAL_VITB_YAML = """\
DATA:
  MAX_SAMPLE_INTERVAL: 200
  MEAN: [0.485, 0.456, 0.406]
  SEARCH: {CENTER_JITTER: 3, FACTOR: 4.0, SCALE_JITTER: 0.25, SIZE: 256, NUMBER: 1}
  STD: [0.229, 0.224, 0.225]
  TEMPLATE: {CENTER_JITTER: 0, FACTOR: 2.0, SCALE_JITTER: 0, SIZE: 128}
  TRAIN:
    DATASETS_NAME: [LASOT, GOT10K_vot_train, COCO17, TRACKINGNET]
    DATASETS_RATIO: [1, 1, 1, 1]
    SAMPLE_PER_EPOCH: 60000
MODEL:
  PRETRAIN_FILE: 'mae_pretrain_vit_base.pth'
  TGT_TYPE: 'allmax'
  BACKBONE: {TYPE: vit_base, STRIDE: 16}
  HEAD: {TYPE: CENTER, NUM_CHANNELS: 256}
TRAIN:
  BACKBONE_MULTIPLIER: 0.1
  DROP_PATH_RATE: 0.1
  BATCH_SIZE: 40
  EPOCH: 300
  GIOU_WEIGHT: 2.0
  L1_WEIGHT: 5.0
  GRAD_CLIP_NORM: 0.1
  LR: 0.0004
  LR_DROP_EPOCH: 240
  NUM_WORKER: 16
  OPTIMIZER: ADAMW
  SCHEDULER: {TYPE: step, DECAY_RATE: 0.1}
  VAL_EPOCH_INTERVAL: 20
  WEIGHT_DECAY: 0.0001
TEST:
  EPOCH: 300
  SEARCH_FACTOR: 4.0
  SEARCH_SIZE: 256
  TEMPLATE_FACTOR: 2.0
  TEMPLATE_SIZE: 128
  HYPER: {LASOT: 0.4, NFS: 0.60, UAV: 0.55, AVIST: 0.4}
"""


def test_users_official_yaml_loads_unchanged_and_matches_ours(tmp_path):
    path = tmp_path / "vitb_256_ep300.yaml"
    path.write_text(OFFICIAL_VITB_YAML)
    theirs = load_config(path)
    ours = load_config("vitb_256_ep300")
    assert theirs.to_dict() == ours.to_dict()
    assert theirs.TEST.HYPER.NFS == 0.6 and theirs.TEST.HYPER.DEFAULT == 0
    assert theirs.TRAIN.CE_START_EPOCH == 20  # default kept for keys the YAML omits


def test_three_experiments_differ_where_the_paper_says():
    b = load_config("vitb_256_ep300")
    g = load_config("vitb_256_got_ep100")
    lg = load_config("vitl_320_ep300")
    assert backbone_dims(b) == (768, 12, 12) and backbone_dims(lg) == (1024, 24, 16)
    assert division_layers(b) == tuple(range(1, 12)) and division_layers(lg) == tuple(range(1, 24))
    assert (g.TRAIN.EPOCH, g.TRAIN.LR_DROP_EPOCH, g.DATA.TRAIN.DATASETS_NAME) == (100, 80, ["GOT10K_train"])
    assert (lg.DATA.SEARCH.SIZE, lg.DATA.SEARCH.FACTOR, lg.TRAIN.BATCH_SIZE) == (320, 5.0, 10)
    assert g.TEST.HYPER.LASOT == 0 and b.TEST.HYPER.LASOT == 0.4
    for cfg in (b, g, lg):
        assert cfg.MODEL.DIVISION.OTHER_LAYERS == "full" and cfg.MODEL.DTYPE == "float32"


def test_tiny_config_matches_the_parity_fixture(parity_bundle):
    import json
    model = json.loads((parity_bundle / "config.json").read_text())["model"]
    cfg = load_config("tiny_test")
    assert backbone_dims(cfg) == (model["embed_dim"], model["depth"], model["num_heads"])
    assert cfg.DATA.TEMPLATE.SIZE == model["template_size"] and cfg.DATA.SEARCH.SIZE == model["search_size"]
    assert cfg.MODEL.HEAD.NUM_CHANNELS == model["head_channels"]


def test_unknown_key_in_yaml_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"MODEL": {"BACKBONE": {"TYPO_KEY": 1}}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "MODEL.BACKBONE.TYPO_KEY" in str(err.value) and "bad.yaml" in str(err.value)


def test_section_replaced_by_value_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("TRAIN:\n  SCHEDULER: step\n")
    with pytest.raises(ConfigError, match="TRAIN.SCHEDULER"):
        load_config(path)


def test_overrides_parse_as_yaml_and_unknown_override_fails():
    cfg = load_config("tiny_test", ["TRAIN.LR=1e-3", "MODEL.DIVISION.LAYERS=[1, 3]",
                                    "MODEL.TGT_TYPE=roiavg", "TRAIN.MAX_STEPS=7"])
    assert cfg.TRAIN.LR == pytest.approx(1e-3)
    assert division_layers(cfg) == (1, 3)
    assert cfg.MODEL.TGT_TYPE == "roiavg" and cfg.TRAIN.MAX_STEPS == 7
    with pytest.raises(ConfigError, match="TRAIN.NOT_A_KEY"):
        load_config("tiny_test", ["TRAIN.NOT_A_KEY=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("TRAIN.LR")


def test_invalid_values_are_rejected_with_the_key():
    cfg = load_config("tiny_test")
    with pytest.raises(ConfigError, match="MODEL.TGT_TYPE"):
        apply_overrides(cfg, ["MODEL.TGT_TYPE=mean"])
    with pytest.raises(ConfigError, match="DATA.SEARCH.SIZE"):
        apply_overrides(load_config("tiny_test"), ["DATA.SEARCH.SIZE=100", "TEST.SEARCH_SIZE=100"])
    with pytest.raises(ConfigError, match="TEST.SEARCH_SIZE"):
        apply_overrides(load_config("tiny_test"), ["DATA.SEARCH.SIZE=256"])
    cfg = apply_overrides(load_config("tiny_test"), ["DATA.SEARCH.SIZE=256", "TEST.SEARCH_SIZE=256"])
    assert cfg.DATA.SEARCH.SIZE == 256
    with pytest.raises(ConfigError, match="MODEL.DIVISION.LAYERS"):
        apply_overrides(load_config("tiny_test"), ["MODEL.DIVISION.LAYERS=[9]"])
    with pytest.raises(ConfigError, match="unknown experiment"):
        load_config("no_such_experiment")


def test_command_line_options():
    import argparse
    from grm_jax.config import add_config_args, config_from_args
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    args = parser.parse_args(["--config", "tiny_test", "--set", "TRAIN.LR=2e-4", "--set",
                              "MODEL.DIVISION.OTHER_LAYERS=separate"])
    cfg = config_from_args(args)
    assert cfg.TRAIN.LR == pytest.approx(2e-4) and cfg.MODEL.DIVISION.OTHER_LAYERS == "separate"
    bad = parser.parse_args(["--config", "tiny_test", "--set", "MODEL.NOPE=1"])
    with pytest.raises(ConfigError, match="MODEL.NOPE"):
        config_from_args(bad)
