"""Experiment configuration in the official GRM schema.

The official code keeps an EasyDict of defaults that an experiment YAML overrides, refusing unknown keys. We
keep the same schema and defaults, so a user's existing official YAML loads unchanged, and add a few
extension keys (documented in docs/INTERFACES.md) whose defaults reproduce the official behaviour.

    cfg = load_config("vitb_256_ep300", overrides=["TRAIN.LR=1e-3"])
    cfg.MODEL.BACKBONE.TYPE  # 'vit_base'
"""
from __future__ import annotations

import copy
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import yaml

from .errors import ConfigError
from .models.choices import BACKBONE_DIMS, OTHER_LAYERS, REMAT_SETTINGS, TGT_TYPES
from .validation import (COUNT, FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_COUNT, SEED_RANGE, InputFileError, Range,
                         read_utf8_text)


def _config_dir() -> Path:
    """The experiment YAMLs: `configs/` of a source checkout (also what an editable install runs), else the copy an
    installed wheel carries as the package data of `grm_jax.configs` (pyproject.toml maps one onto the other)."""
    package = Path(__file__).resolve().parent
    checkout = package.parent / "configs"
    return checkout if checkout.is_dir() else package / "configs"


CONFIG_DIR = _config_dir()


class Config(dict):
    """Nested dict with attribute access (`cfg.MODEL.BACKBONE.TYPE`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r} (known: {sorted(self)})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __deepcopy__(self, memo):
        return Config({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()}

    def get_path(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            node = node[part]
        return node


def _wrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return Config({k: _wrap(v) for k, v in value.items()})
    return value


# ImageNet per-channel normalisation of RGB images in [0, 1] (official default of DATA.MEAN / DATA.STD and the
# tracker's `lib/test/tracker/data_utils.py: Preprocessor`).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

# Official defaults (lib/config/grm/config.py), followed by our extension keys (marked "ext").
_DEFAULTS: dict = {
    "MODEL": {
        "PRETRAIN_FILE": "mae_pretrain_vit_base.pth",
        "TGT_TYPE": "allmax",
        "BACKBONE": {
            "TYPE": "vit_base",
            "STRIDE": 16,
            "MID_PE": False,
            "CAT_MODE": "direct",
            "MERGE_LAYER": 0,
            # ext: null -> from TYPE (BACKBONE_DIMS)
            "EMBED_DIM": None,
            "DEPTH": None,
            "NUM_HEADS": None,
        },
        "HEAD": {
            "TYPE": "CENTER",
            "NUM_CHANNELS": 256,
        },
        # ext: which blocks divide, and how the others attend
        "DIVISION": {
            "LAYERS": None,           # null -> every block except block 0 (official)
            "OTHER_LAYERS": "full",   # 'full' joint attention (official) | 'separate' (two-stream)
            "EARLY": True,
            "RATIO": 0.0,
        },
        "DTYPE": "float32",           # ext: compute dtype; params stay float32
    },
    "TRAIN": {
        "LR": 0.0001,
        "WEIGHT_DECAY": 0.0001,
        "EPOCH": 500,
        "LR_DROP_EPOCH": 400,
        "BATCH_SIZE": 16,
        "NUM_WORKER": 8,
        "OPTIMIZER": "ADAMW",
        "BACKBONE_MULTIPLIER": 0.1,
        "GIOU_WEIGHT": 2.0,
        "L1_WEIGHT": 5.0,
        "FREEZE_LAYERS": [0],
        "VAL_EPOCH_INTERVAL": 20,
        "GRAD_CLIP_NORM": 0.1,
        "CE_START_EPOCH": 20,
        "CE_WARM_EPOCH": 80,
        "DROP_PATH_RATE": 0.1,
        "SCHEDULER": {
            "TYPE": "step",
            "DECAY_RATE": 0.1,
        },
        # ext
        "ENTROPY_LOSS": False,
        "SEED": 42,
        "MAX_STEPS": None,            # null -> EPOCH * SAMPLE_PER_EPOCH / BATCH_SIZE
        "CKPT_EVERY_STEPS": None,     # null -> once per epoch (official)
        "KEEP_CHECKPOINTS": None,     # null -> keep all (official)
        "LOG_EVERY_STEPS": 50,
        "SCAN_BLOCKS": True,          # backbone blocks as lax.scan in training (same results, see models/vit.py)
        "REMAT": "dots",              # what the backward keeps per block: none | dots | blocks (models/vit.py)
    },
    "DATA": {
        "SAMPLER_MODE": "causal",
        "MEAN": list(IMAGE_MEAN),
        "STD": list(IMAGE_STD),
        "MAX_SAMPLE_INTERVAL": 200,
        "TRAIN": {
            "DATASETS_NAME": ["LASOT", "GOT10K_vot_train"],
            "DATASETS_RATIO": [1, 1],
            "SAMPLE_PER_EPOCH": 60000,
        },
        "SEARCH": {
            "SIZE": 320,
            "FACTOR": 5.0,
            "CENTER_JITTER": 4.5,
            "SCALE_JITTER": 0.5,
            "NUMBER": 1,
        },
        "TEMPLATE": {
            "NUMBER": 1,
            "SIZE": 128,
            "FACTOR": 2.0,
            "CENTER_JITTER": 0,
            "SCALE_JITTER": 0,
        },
        # ext: per-sample input path: "graph" (TF ops, scales with cores, runs on tf.data service workers) or
        # "python" (NumPy/OpenCV reference in tf.numpy_function), see data_pipeline/pipeline.py
        "PIPELINE": "graph",
        # ext: "host:port" of a tf.data service dispatcher (scripts/input_service.py); "" = preprocess here
        "SERVICE_ADDRESS": "",
        # ext: cores of each tf.data service worker host; sets how many samples a worker keeps in flight (the
        # dataset graph is built here, so it cannot ask the worker); 0 = as many as this host has
        "SERVICE_WORKER_CORES": 0,
        # ext: seconds to wait for the tf.data service (its dispatcher, each worker, each batch) before stopping
        # with an error naming the address
        "SERVICE_TIMEOUT_S": 60.0,
        # ext: dataset roots ("" = not configured)
        "ROOTS": {
            "LASOT": "",
            "GOT10K": "",
            "TRACKINGNET": "",
            "COCO17": "",
        },
        # ext: where training reads the datasets: "folders" (DATA.ROOTS) or "tfds" (prepared datasets,
        # scripts/prepare_tfds.py; TFDS data dirs, local or gs://..., "" = not configured)
        "SOURCE": "folders",
        "TFDS_DIRS": {
            "LASOT": "",
            "GOT10K": "",
            "TRACKINGNET": "",
            "COCO17": "",
        },
    },
    "TEST": {
        "TEMPLATE_FACTOR": 2.0,
        "TEMPLATE_SIZE": 128,
        "SEARCH_FACTOR": 5.0,
        "SEARCH_SIZE": 320,
        "EPOCH": 500,
        "HYPER": {
            "DEFAULT": 0,
            "LASOT": 0,
            "TRACKINGNET": 0,
            "GOT10K_TEST": 0,
            "NFS": 0,
            "UAV": 0,
            "AVIST": 0,
        },
    },
}

DTYPES = ("float32", "bfloat16")
DATA_SOURCES = ("folders", "tfds")
PIPELINES = ("graph", "python")


# Where and how the training data is read, not what is computed from it: the batches are the same whatever these
# say (a prepared dataset holds its folders' bytes; the tf.data service makes the direct pipeline's batches).
DATA_ACCESS_KEYS = ("DATA.ROOTS.", "DATA.SOURCE", "DATA.TFDS_DIRS.", "DATA.SERVICE_ADDRESS",
                    "DATA.SERVICE_WORKER_CORES", "DATA.SERVICE_TIMEOUT_S")
ABSENT = "<absent>"


def flat_config(tree: Mapping, prefix: str = "") -> dict:
    """A nested config mapping as {dotted key: value}."""
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_config(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def config_changes(old: Mapping, new: Mapping, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for each key whose value differs between two configs in `to_dict()`
    form, e.g. one recorded in a workdir and the current one; keys starting with a prefix in `ignore` are left
    out. A key one side lacks counts as its default there: a key added to the project after a file was written
    is no change while it keeps its default (ABSENT where there is no default either)."""
    defaults = flat_config(_DEFAULTS)
    a, b = flat_config(old), flat_config(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key, defaults.get(key, ABSENT)), b.get(key, defaults.get(key, ABSENT))
        if before != after and not key.startswith(ignore):
            changes.append((key, before, after))
    return changes


def default_config() -> Config:
    return _wrap(copy.deepcopy(_DEFAULTS))


def _merge(base: Config, update: Mapping, prefix: str, source: str) -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{source}: unknown key '{dotted}'")
        if isinstance(base[key], Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: key '{dotted}' is a section, got {value!r}")
            _merge(base[key], value, dotted + ".", source)
        else:
            if isinstance(value, Mapping):
                raise ConfigError(f"{source}: key '{dotted}' is a value, got a section {dict(value)!r}")
            base[key] = _coerce(base[key], _wrap(copy.deepcopy(value)), dotted, source)


def merge_into(cfg: Config, update: Mapping, source: str) -> None:
    """Merge the nested mapping `update` into `cfg` in place; an unknown key is a ConfigError naming `source`."""
    _merge(cfg, update, "", source)


@dataclass(frozen=True)
class KeyRule:
    """What a numeric config key may hold: `allowed` (grm_jax.validation.Range; a key whose default is null may
    also be null, "derive it"), said in errors as `noun` (default: the range's own words) plus `note`."""

    allowed: Range
    noun: str = ""
    note: str = ""

    def describe(self) -> str:
        words = f"{self.noun} {self.allowed.bounds()}" if self.noun else self.allowed.describe()
        return words + self.note


# Every numeric config key and what it may hold; `validate` checks each one of every config, wherever it comes
# from (official YAML, our YAML, --set, a recorded config.yaml). Integer keys take whole numbers only: 2.5 or
# `true` there is a mistake, not something to round. NaN and infinities are in no range.
_INT_SIZE = KeyRule(POSITIVE_COUNT)
KEY_RULES: dict[str, KeyRule] = {
    "MODEL.BACKBONE.STRIDE": _INT_SIZE,
    "MODEL.BACKBONE.MERGE_LAYER": KeyRule(COUNT),
    "MODEL.BACKBONE.EMBED_DIM": _INT_SIZE,
    "MODEL.BACKBONE.DEPTH": _INT_SIZE,
    "MODEL.BACKBONE.NUM_HEADS": _INT_SIZE,
    "MODEL.HEAD.NUM_CHANNELS": KeyRule(Range(8, integer=True), note=" (each head branch halves it three times)"),
    "MODEL.DIVISION.RATIO": KeyRule(FRACTION),
    "TRAIN.LR": KeyRule(POSITIVE),
    "TRAIN.WEIGHT_DECAY": KeyRule(NON_NEGATIVE),
    "TRAIN.EPOCH": _INT_SIZE,
    "TRAIN.LR_DROP_EPOCH": KeyRule(POSITIVE_COUNT, note=" (epochs between learning-rate drops)"),
    "TRAIN.BATCH_SIZE": _INT_SIZE,
    "TRAIN.NUM_WORKER": KeyRule(COUNT),
    "TRAIN.BACKBONE_MULTIPLIER": KeyRule(NON_NEGATIVE),
    "TRAIN.GIOU_WEIGHT": KeyRule(NON_NEGATIVE),
    "TRAIN.L1_WEIGHT": KeyRule(NON_NEGATIVE),
    "TRAIN.VAL_EPOCH_INTERVAL": _INT_SIZE,
    "TRAIN.GRAD_CLIP_NORM": KeyRule(NON_NEGATIVE, note=" (0 = no clipping)"),
    "TRAIN.CE_START_EPOCH": KeyRule(COUNT),
    "TRAIN.CE_WARM_EPOCH": KeyRule(COUNT),
    "TRAIN.DROP_PATH_RATE": KeyRule(Range(0, 1, hi_open=True)),
    "TRAIN.SCHEDULER.DECAY_RATE": KeyRule(POSITIVE),
    "TRAIN.SEED": KeyRule(SEED_RANGE),
    "TRAIN.MAX_STEPS": _INT_SIZE,
    "TRAIN.CKPT_EVERY_STEPS": _INT_SIZE,
    "TRAIN.KEEP_CHECKPOINTS": KeyRule(POSITIVE_COUNT, noun="a number of checkpoints", note=", or null to keep all"),
    "TRAIN.LOG_EVERY_STEPS": _INT_SIZE,
    "DATA.MAX_SAMPLE_INTERVAL": _INT_SIZE,
    "DATA.TRAIN.SAMPLE_PER_EPOCH": _INT_SIZE,
    "DATA.SEARCH.SIZE": _INT_SIZE,
    "DATA.SEARCH.FACTOR": KeyRule(POSITIVE),
    "DATA.SEARCH.CENTER_JITTER": KeyRule(NON_NEGATIVE),
    "DATA.SEARCH.SCALE_JITTER": KeyRule(NON_NEGATIVE),
    "DATA.SEARCH.NUMBER": _INT_SIZE,
    "DATA.TEMPLATE.SIZE": _INT_SIZE,
    "DATA.TEMPLATE.FACTOR": KeyRule(POSITIVE),
    "DATA.TEMPLATE.CENTER_JITTER": KeyRule(NON_NEGATIVE),
    "DATA.TEMPLATE.SCALE_JITTER": KeyRule(NON_NEGATIVE),
    "DATA.TEMPLATE.NUMBER": _INT_SIZE,
    "DATA.SERVICE_WORKER_CORES": KeyRule(COUNT, note=" (0 = the cores of this host)"),
    "DATA.SERVICE_TIMEOUT_S": KeyRule(POSITIVE, note=" (seconds)"),
    "TEST.TEMPLATE_FACTOR": KeyRule(POSITIVE),
    "TEST.TEMPLATE_SIZE": _INT_SIZE,
    "TEST.SEARCH_FACTOR": KeyRule(POSITIVE),
    "TEST.SEARCH_SIZE": _INT_SIZE,
    "TEST.EPOCH": _INT_SIZE,
    **{f"TEST.HYPER.{name}": KeyRule(FRACTION, note=" (a division threshold)") for name in _DEFAULTS["TEST"]["HYPER"]},
}
# Keys holding a list of numbers: (what each element may hold, the list's length or None for any).
LIST_RULES: dict[str, tuple[KeyRule, int | None]] = {
    "DATA.MEAN": (KeyRule(Range(), note=" (per RGB channel)"), 3),
    "DATA.STD": (KeyRule(POSITIVE, note=" (per RGB channel)"), 3),
    "DATA.TRAIN.DATASETS_RATIO": (KeyRule(NON_NEGATIVE), None),
    "TRAIN.FREEZE_LAYERS": (KeyRule(COUNT), None),
}
INTEGER_KEYS = frozenset(k for k, rule in KEY_RULES.items() if rule.allowed.integer)


def _check_rules(cfg: "Config", source: str) -> None:
    """Every key of KEY_RULES / LIST_RULES in its range: one ConfigError naming the key, value and range."""
    defaults = flat_config(_DEFAULTS)
    for key, rule in KEY_RULES.items():
        value = cfg.get_path(key)
        if value is None and defaults.get(key) is None:
            continue
        if not rule.allowed.contains(value):
            raise ConfigError(f"{source}: {key}={value!r}: must be {rule.describe()}")
    for key, (rule, length) in LIST_RULES.items():
        values = cfg.get_path(key)
        if length is not None and (not isinstance(values, (list, tuple)) or len(values) != length):
            raise ConfigError(f"{source}: {key}={values!r}: must be a list of {length} numbers, each "
                              f"{rule.describe()}")
        bad = [v for v in values if not rule.allowed.contains(v)]
        if bad:
            raise ConfigError(f"{source}: {key}={values!r}: {bad[0]!r} is not {rule.describe()}")
    names, ratios = cfg.DATA.TRAIN.DATASETS_NAME, cfg.DATA.TRAIN.DATASETS_RATIO
    if len(names) != len(ratios) or not sum(ratios) > 0:
        raise ConfigError(f"{source}: DATA.TRAIN.DATASETS_RATIO={list(ratios)!r}: must hold one ratio >= 0 per "
                          f"dataset of DATA.TRAIN.DATASETS_NAME ({len(names)}), with a positive sum")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _coerce(default: Any, value: Any, dotted: str, source: str) -> Any:
    """The value a YAML / override gives for `dotted`, checked against the key's type (never silently changed:
    `BATCH_SIZE: 2.5` or `true` is an error naming the key, not 2 or 1)."""
    # YAML 1.1 reads `1e-4` (no dot) as a string; where the key holds a number, the user meant a number. This is
    # the one place that reads such strings, for YAML files and overrides alike.
    if (_is_number(default) or dotted in INTEGER_KEYS) and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{source}: key '{dotted}' expects a number, got {value!r}") from None
    if dotted in INTEGER_KEYS:
        if value is None and default is None:
            return None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not _is_number(value) or isinstance(value, float):
            raise ConfigError(f"{source}: key '{dotted}' expects a whole number, got {value!r}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: key '{dotted}' expects true or false, got {value!r}")
    elif _is_number(default):
        if not _is_number(value):
            raise ConfigError(f"{source}: key '{dotted}' expects a number, got {value!r}")
    elif isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: key '{dotted}' expects a list, got {value!r}")
    return value


def _nest(dotted: str, value: Any) -> dict:
    node: Any = value
    for part in reversed(dotted.split(".")):
        node = {part: node}
    return node


def parse_override(text: str) -> tuple[str, Any]:
    """`"TRAIN.LR=0.001"` -> ("TRAIN.LR", 0.001); the value is parsed as YAML (a number YAML 1.1 leaves as a
    string, "1e-3", is read by `_coerce` where the key holds a number)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {text!r}: malformed key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({' '.join(str(err).split())})") from None
    return key, value


def apply_overrides(cfg: Config, overrides: Iterable[str] | Mapping[str, Any] = (),
                    source: str = "override") -> Config:
    """Apply `KEY=VALUE` strings or a {dotted key: value} mapping in place; returns cfg."""
    items = (overrides.items() if isinstance(overrides, Mapping)
             else (parse_override(o) for o in overrides))
    for key, value in items:
        _merge(cfg, _nest(key, value), "", f"{source} '{key}'")
    validate(cfg, source)
    return cfg


def resolve_config_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown experiment {str(name_or_path)!r}: no {candidate.name} in configs/ "
                          f"(known: {known})")
    return candidate


def read_text_file(path: str | Path) -> str:
    """The text of a UTF-8 file; a binary or otherwise non-UTF-8 file is a ConfigError naming it, the line and the
    byte (a wrong file given as a config, e.g. a checkpoint)."""
    try:
        return read_utf8_text(Path(path))
    except InputFileError as err:
        raise ConfigError(f"{err}; a config is a YAML file") from None


def load_config(name_or_path: str | Path, overrides: Iterable[str] | Mapping[str, Any] = ()) -> Config:
    """Defaults <- experiment YAML (official schema) <- overrides."""
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(read_text_file(path))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    cfg = default_config()
    _merge(cfg, raw, "", str(path))
    validate(cfg, str(path))
    return apply_overrides(cfg, overrides)


def add_config_args(parser, default: str | None = None) -> None:
    """Give a script the common `--config NAME_OR_PATH` and repeatable `--set KEY=VALUE` options."""
    parser.add_argument("--config", default=default, required=default is None,
                        help="experiment name in configs/ (e.g. vitb_256_ep300) or a YAML in the official "
                             "schema")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config key, value parsed as YAML (repeatable), e.g. --set TRAIN.LR=1e-3")


def config_from_args(args) -> Config:
    """The Config selected by `add_config_args` options."""
    return load_config(args.config, args.overrides)


def check_input_pipeline(pipeline: str, service_address: str, source: str = "config") -> None:
    """DATA.PIPELINE is a known path and a tf.data service (DATA.SERVICE_ADDRESS) is only asked of the graph path;
    also for the values `data_pipeline.pipeline.make_train_iterator` takes as arguments."""
    if pipeline not in PIPELINES:
        raise ConfigError(f"{source}: DATA.PIPELINE={pipeline!r}, expected one of {PIPELINES}")
    if service_address and pipeline != "graph":
        raise ConfigError(f"{source}: DATA.SERVICE_ADDRESS={service_address!r} needs DATA.PIPELINE=graph "
                          "(tf.data service workers run graph ops only, not the Python per-sample path)")


def validate(cfg: Config, source: str = "config") -> None:
    m = cfg.MODEL
    if m.TGT_TYPE not in TGT_TYPES:
        raise ConfigError(f"{source}: MODEL.TGT_TYPE={m.TGT_TYPE!r}, expected one of {TGT_TYPES}")
    if m.DIVISION.OTHER_LAYERS not in OTHER_LAYERS:
        raise ConfigError(f"{source}: MODEL.DIVISION.OTHER_LAYERS={m.DIVISION.OTHER_LAYERS!r}, "
                          f"expected one of {OTHER_LAYERS}")
    if cfg.DATA.SOURCE not in DATA_SOURCES:
        raise ConfigError(f"{source}: DATA.SOURCE={cfg.DATA.SOURCE!r}, expected one of {DATA_SOURCES}")
    if str(cfg.TRAIN.REMAT) not in REMAT_SETTINGS:
        raise ConfigError(f"{source}: TRAIN.REMAT={cfg.TRAIN.REMAT!r}, expected one of {REMAT_SETTINGS}")
    if m.DTYPE not in DTYPES:
        raise ConfigError(f"{source}: MODEL.DTYPE={m.DTYPE!r}, expected one of {DTYPES}")
    check_input_pipeline(cfg.DATA.PIPELINE, cfg.DATA.SERVICE_ADDRESS, source)
    if m.HEAD.TYPE != "CENTER":
        raise ConfigError(f"{source}: MODEL.HEAD.TYPE={m.HEAD.TYPE!r}: only 'CENTER' is implemented")
    _check_rules(cfg, source)
    bb = m.BACKBONE
    if bb.TYPE not in BACKBONE_DIMS and None in (bb.EMBED_DIM, bb.DEPTH, bb.NUM_HEADS):
        raise ConfigError(f"{source}: MODEL.BACKBONE.TYPE={bb.TYPE!r} is not one of {sorted(BACKBONE_DIMS)}; "
                          "set MODEL.BACKBONE.EMBED_DIM, DEPTH and NUM_HEADS explicitly")
    embed, depth, heads = backbone_dims(cfg)
    if embed % heads:
        raise ConfigError(f"{source}: MODEL.BACKBONE.EMBED_DIM={embed} is not divisible by NUM_HEADS={heads}")
    stride = bb.STRIDE
    for key in ("DATA.TEMPLATE.SIZE", "DATA.SEARCH.SIZE"):
        size = cfg.get_path(key)
        if not isinstance(size, int) or size <= 0 or size % stride:
            raise ConfigError(f"{source}: {key}={size!r} must be a positive multiple of "
                              f"MODEL.BACKBONE.STRIDE={stride}")
    # The network is built for DATA sizes (position embeddings, head feat_sz); the tracker crops at TEST sizes.
    for data_key, test_key in (("DATA.TEMPLATE.SIZE", "TEST.TEMPLATE_SIZE"), ("DATA.SEARCH.SIZE", "TEST.SEARCH_SIZE")):
        if cfg.get_path(data_key) != cfg.get_path(test_key):
            raise ConfigError(f"{source}: {test_key}={cfg.get_path(test_key)!r} differs from "
                              f"{data_key}={cfg.get_path(data_key)!r}; the model only runs at the size it was "
                              "built for, set both")
    layers = m.DIVISION.LAYERS
    if layers is not None:
        if not isinstance(layers, (list, tuple)) or any(not isinstance(i, int) or not 0 <= i < depth
                                                        for i in layers):
            raise ConfigError(f"{source}: MODEL.DIVISION.LAYERS={layers!r} must be a list of block indices "
                              f"in [0, {depth})")


def backbone_dims(cfg: Config) -> tuple[int, int, int]:
    """(embed_dim, depth, num_heads), explicit keys taking precedence over MODEL.BACKBONE.TYPE."""
    bb = cfg.MODEL.BACKBONE
    base = BACKBONE_DIMS.get(bb.TYPE, (None, None, None))
    dims = tuple(v if v is not None else d for v, d in zip((bb.EMBED_DIM, bb.DEPTH, bb.NUM_HEADS), base))
    return dims  # type: ignore[return-value]


def division_layers(cfg: Config) -> tuple[int, ...]:
    """Sorted block indices that carry a division predictor."""
    _, depth, _ = backbone_dims(cfg)
    layers = cfg.MODEL.DIVISION.LAYERS
    if layers is None:
        return tuple(range(1, depth))
    return tuple(sorted(set(int(i) for i in layers)))
