"""Export the tracker's network step to ONNX or to a serialized JAX program, and run such a file as a tracker
engine.

The exported step is `track/network.py: network_outputs`, the function `track/tracker.py: TrackerCore` runs per
frame (official `lib/test/tracker/grm.py: GRM.track`, network part): eval-mode forward at fp32 with the division
threshold baked in, then the box decoded at the peak of the Hann-windowed score map. Inputs are the float32 crops
normalised with DATA.MEAN / DATA.STD (recorded in the sidecar; the engine normalises the search crops with them),
NHWC:

    template       (B, Hz, Wz, 3) float32
    search         (B, Hx, Wx, 3) float32
    template_mask  (B, Nz) float32 0/1      only for MODEL.TGT_TYPE roimax / roiavg (the others never read it)

Outputs:

    pred_boxes     (B, 4) float32  normalised cx, cy, w, h decoded at the raw score peak (the forward's pred_boxes)
    tracker_box    (B, 4) float32  the same decoded at the Hann-windowed peak (what the tracker maps back)
    score_map      (B, F, F, 1) float32
    decisions      (B, L_div, Nx) float32 0/1, class 1 = the search token interacts with the template
                   (only with division layers and `with_decisions`)

Formats (each file gets a JSON sidecar `<file>.json`, see `write_sidecar`):

- ``onnx``: converted with jax2onnx from the step's jaxpr (lax primitives only, weights as initializers). The
  batch size is fixed at export time: jax2onnx 0.17 cannot trace the head's per-row gather
  (`jnp.arange(B)` indexing in `cal_bbox`) over a symbolic batch. The tracker runs any number of sequences on a
  batch-1 file, one slot after the other.
- ``jax``: `jax.export` StableHLO with a symbolic batch dimension (or a fixed one), reloadable with
  `jax.export.deserialize(data).call(...)` and no model code.

An engine (`load_engine`) checks every input against the sidecar before the runtime sees it, and
`TrackerCore(..., engine=...)` refuses one whose baked threshold or crop sizes differ from the run's settings.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import geometry
from .benchmarking import git_commit
from .models.choices import ROI_TGT_TYPES
from .runtime import xla_compiler_options
from .track.network import network_outputs

__all__ = ["FORMATS", "ENGINES", "DEFAULT_OPSET", "ExportError", "ExportInputError", "EngineUnavailableError",
           "needs_template_mask", "network_step", "export_network", "export_function_to_onnx", "read_sidecar",
           "load_engine", "ExportedEngine", "OnnxRuntimeEngine", "JaxExportedEngine", "sidecar_path",
           "check_export_target", "is_finished_export"]

FORMAT_VERSION = "grm_jax.export/1"
FORMATS = ("onnx", "jax")
ENGINES = {"onnxruntime": "onnx", "exported": "jax"}   # tracker engine name -> file format it runs
# Opset 17: read by TensorRT 8.6 and later and run by every onnxruntime >= 1.13.
DEFAULT_OPSET = 17
INPUT_NAMES = ("template", "search", "template_mask")
OUTPUT_NAMES = ("pred_boxes", "tracker_box", "score_map", "decisions")
ONNX_PIP = "onnxruntime==1.32.0"
JAX_PLATFORMS = ("cpu", "cuda")   # a jax export made on a CPU machine also runs on an NVIDIA GPU


class ExportError(RuntimeError):
    """An export that cannot be written correctly (unsupported op, missing converter, bad option)."""


class ExportInputError(ValueError):
    """An input of the wrong name, shape or dtype for an exported model."""


class EngineUnavailableError(ImportError):
    """The runtime an engine needs is not installed."""


def needs_template_mask(tgt_type: str) -> bool:
    """roimax / roiavg mask the template tokens with the init box (`models/division.py: target_representation`)."""
    return tgt_type in ROI_TGT_TYPES


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


# --- the network step ---------------------------------------------------------------------------------------

def network_step(model, variables, *, threshold: float, with_decisions: bool = True) -> tuple[Callable, list, list]:
    """-> (fn, input_names, output_names); `fn(*inputs)` returns a tuple in `output_names` order.

    The variables are closed over (constants of the exported program); BatchNorm runs in eval mode.
    """
    uses_mask = needs_template_mask(model.division.tgt_type)
    decisions = with_decisions and len(model.division.layers) > 0
    input_names = list(INPUT_NAMES if uses_mask else INPUT_NAMES[:2])
    output_names = list(OUTPUT_NAMES if decisions else OUTPUT_NAMES[:3])

    def step(template, search, template_mask=None):
        out = network_outputs(model, variables, template, template_mask, search, float(threshold),
                              with_decisions=decisions)
        return tuple(out[name] for name in output_names)

    return step, input_names, output_names


def _input_specs(model, input_names: Sequence[str], batch: Optional[int]) -> list[dict]:
    nz = (model.template_size // model.patch_size) ** 2
    shapes = {"template": [model.template_size, model.template_size, 3],
              "search": [model.search_size, model.search_size, 3], "template_mask": [nz]}
    b = "batch" if batch is None else int(batch)
    return [{"name": n, "shape": [b] + shapes[n], "dtype": "float32"} for n in input_names]


def _abstract(specs: list[dict]):
    if any(s["shape"][0] == "batch" for s in specs):
        (b,) = jax.export.symbolic_shape("batch")
    out = []
    for s in specs:
        shape = tuple(b if d == "batch" else d for d in s["shape"])
        out.append(jax.ShapeDtypeStruct(shape, jnp.dtype(s["dtype"])))
    return out


def _output_specs(fn, abstract_inputs, output_names, batch) -> list[dict]:
    outs = jax.eval_shape(fn, *abstract_inputs)
    return [{"name": n, "shape": ["batch" if batch is None else int(batch)] + [int(d) for d in o.shape[1:]],
             "dtype": str(o.dtype)} for n, o in zip(output_names, outs)]


# --- ONNX ---------------------------------------------------------------------------------------------------

def _jax2onnx():
    try:   # both present, or one message naming the missing one
        for module in ("jax2onnx", "onnx"):
            importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the packages jax2onnx and onnx ({exc}); install the optional export "
                          "section of requirements.txt (jax2onnx goes in with --no-deps, see its comment)") from None
    # jax2onnx imports every plugin module it ships; those for libraries we do not use (equinox, dm-pix) log a
    # traceback each, and onnx_ir warns about values it leaves untyped. Neither concerns our graph.
    for name in ("jax2onnx", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from jax2onnx import to_onnx   # optional (the export section of requirements.txt), checked above

    return to_onnx


def _failing_primitive(exc: BaseException) -> Optional[str]:
    """The JAX primitive whose lowering raised: the innermost traceback frame holding a jaxpr equation."""
    name = None
    tb = exc.__traceback__
    while tb is not None:
        eqn = tb.tb_frame.f_locals.get("eqn")
        prim = getattr(getattr(eqn, "primitive", None), "name", None)
        if prim is not None:
            name = prim
        tb = tb.tb_next
    if name is None and "primitive '" in str(exc):
        name = str(exc).split("primitive '", 1)[1].split("'", 1)[0]
    return name


def _einsum_as_matmul(equation: str):
    """(lhs perm, rhs perm, output perm or None) computing a two-operand Einsum with one contracted label as
    Transpose + MatMul + Transpose, or None when the equation has another form.

    jax2onnx writes a `lax.dot_general` whose lhs has more than two dimensions (every Dense layer on (B, N, C)
    tokens) as an Einsum; onnxruntime's CPU Einsum is several times slower than its MatMul on those shapes."""
    try:
        inputs, out = equation.replace(" ", "").split("->")
        lhs, rhs = inputs.split(",")
    except ValueError:
        return None
    if "." in equation or len(set(lhs)) != len(lhs) or len(set(rhs)) != len(rhs) or len(set(out)) != len(out):
        return None
    contract = [c for c in lhs if c in rhs and c not in out]
    batch = [c for c in out if c in lhs and c in rhs]
    lhs_free = [c for c in lhs if c in out and c not in rhs]
    rhs_free = [c for c in rhs if c in out and c not in lhs]
    if len(contract) != 1 or len(rhs_free) != 1 or set(out) != set(batch + lhs_free + rhs_free):
        return None
    if set(lhs) != set(batch + lhs_free + contract) or set(rhs) != set(batch + rhs_free + contract):
        return None
    if batch and len(lhs_free) != 1:
        return None
    if not lhs_free:
        return None
    lhs_order = batch + lhs_free + contract
    rhs_order = batch + contract + rhs_free
    mm_out = batch + lhs_free + rhs_free
    return ([lhs.index(c) for c in lhs_order], [rhs.index(c) for c in rhs_order],
            None if mm_out == list(out) else [mm_out.index(c) for c in out])


def _rewrite_einsums(proto) -> int:
    """Replace every Einsum `_einsum_as_matmul` can express by Transpose/MatMul nodes, in place; -> count."""
    from onnx import helper   # optional (the export section of requirements.txt), present once _jax2onnx() returned

    graph = proto.graph
    nodes = []
    rewritten = 0
    for node in graph.node:
        eq = next((a.s.decode() for a in node.attribute if a.name == "equation"), None)
        plan = _einsum_as_matmul(eq) if node.op_type == "Einsum" and len(node.input) == 2 and eq else None
        if plan is None:
            nodes.append(node)
            continue
        lhs_perm, rhs_perm, out_perm = plan
        base = node.name or node.output[0]
        lhs, rhs = node.input
        if lhs_perm != sorted(lhs_perm):
            nodes.append(helper.make_node("Transpose", [lhs], [f"{base}__lhs_t"], perm=lhs_perm))
            lhs = f"{base}__lhs_t"
        if rhs_perm != sorted(rhs_perm):
            nodes.append(helper.make_node("Transpose", [rhs], [f"{base}__rhs_t"], perm=rhs_perm))
            rhs = f"{base}__rhs_t"
        mm_out = node.output[0] if out_perm is None else f"{base}__mm"
        nodes.append(helper.make_node("MatMul", [lhs, rhs], [mm_out], name=f"{base}__matmul"))
        if out_perm is not None:
            nodes.append(helper.make_node("Transpose", [mm_out], [node.output[0]], perm=out_perm))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def export_function_to_onnx(fn: Callable, abstract_inputs, *, input_names: Sequence[str],
                            output_names: Sequence[str], opset: int = DEFAULT_OPSET):
    """Convert a JAX function of fixed input shapes to an onnx.ModelProto.

    The function is first traced to a jaxpr of lax primitives and jax2onnx converts those (not the Flax
    modules: its Flax plugins substitute their own primitives, which have no batching rules). An op jax2onnx
    cannot express raises one ExportError naming the primitive.
    """
    to_onnx = _jax2onnx()
    closed = jax.make_jaxpr(fn)(*abstract_inputs)

    def primitives_only(*args):
        return jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *args)

    try:
        proto = to_onnx(primitives_only, list(abstract_inputs), opset=int(opset), input_names=list(input_names),
                        output_names=list(output_names))
    except Exception as exc:   # jax2onnx raises NotImplementedError, ValueError, TypeError, ... per plugin
        prim = _failing_primitive(exc)
        where = f"the JAX primitive {prim!r}" if prim else "an op of the model"
        converter = f"jax2onnx {importlib.metadata.version('jax2onnx')}"
        raise ExportError(f"ONNX export failed: {converter} (opset {opset}) cannot express "
                          f"{where}: {type(exc).__name__}: {exc}. No file was written.") from exc
    _rewrite_einsums(proto)
    import onnx   # optional (the export section of requirements.txt), present once _jax2onnx() returned
    onnx.checker.check_model(proto)
    return proto


# --- export ---------------------------------------------------------------------------------------------------

def export_network(model, variables, *, fmt: str, out_path: str | os.PathLike, threshold: float,
                   batch: Optional[int] = 1, with_decisions: bool = True, opset: int = DEFAULT_OPSET,
                   platforms: Sequence[str] = JAX_PLATFORMS, metadata: Optional[dict] = None,
                   mean: Sequence[float] = geometry.IMAGENET_MEAN,
                   std: Sequence[float] = geometry.IMAGENET_STD) -> dict:
    """Write the network step of `model` with `variables` as `fmt` to `out_path` plus `<out_path>.json`.

    batch: an int fixes the batch size, None makes it symbolic (`jax` only). platforms (`jax` only): the
    backends the program is lowered for (one file then runs on each). mean / std: DATA.MEAN / DATA.STD, the
    normalisation of the inputs (recorded in the sidecar; engines apply it). Returns the sidecar dict. The file
    appears only once complete (written to a temporary name, then renamed).
    """
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r}: expected one of {FORMATS}")
    if batch is None and fmt == "onnx":
        raise ExportError("ONNX export needs a fixed batch size (--batch N): jax2onnx cannot trace the box "
                          "decoding's per-row gather over a symbolic batch. A batch-1 model tracks any number of "
                          "sequences (one slot after the other); --format jax supports --batch dynamic.")
    if batch is not None and int(batch) < 1:
        raise ExportError(f"batch {batch}: expected a positive integer or None (dynamic)")
    if not np.isfinite(threshold) or threshold < 0:
        raise ExportError(f"threshold {threshold}: expected a finite value >= 0 (0 = argmax)")
    fn, input_names, output_names = network_step(model, variables, threshold=threshold,
                                                 with_decisions=with_decisions)
    inputs = _input_specs(model, input_names, batch)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with jax.default_matmul_precision("highest"):   # fp32 products, also where the default would be TF32
        abstract = _abstract(inputs)
        outputs = _output_specs(fn, abstract, output_names, batch)
        if fmt == "jax":
            try:
                exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(*abstract)
            except Exception as exc:   # e.g. an op without a lowering for one of the platforms
                raise ExportError(f"jax.export for platforms {list(platforms)} failed: {type(exc).__name__}: {exc}. "
                                  "No file was written.") from exc
            data = exported.serialize()
            extra = {"serialization_version": int(exported.calling_convention_version),
                     "platforms": list(exported.platforms)}
        else:
            proto = export_function_to_onnx(fn, abstract, input_names=input_names, output_names=output_names,
                                            opset=opset)
            data = proto.SerializeToString()
            extra = {"opset": int(opset), "converter": f"jax2onnx {importlib.metadata.version('jax2onnx')}",
                     "onnx": importlib.metadata.version("onnx")}
    sidecar = {
        "format_version": FORMAT_VERSION, "format": fmt, "threshold": float(threshold),
        "inputs": inputs, "outputs": outputs, "commit": git_commit(), "jax": jax.__version__,
        "model": {"template_size": model.template_size, "search_size": model.search_size,
                  "patch_size": model.patch_size, "feat_size": model.feat_size, "embed_dim": model.embed_dim,
                  "depth": model.depth, "num_heads": model.num_heads, "tgt_type": model.division.tgt_type,
                  "division_layers": [int(i) for i in model.division.layers]},
        "normalisation": {"mean": np.asarray(mean, np.float32).tolist(), "std": np.asarray(std, np.float32).tolist(),
                          "layout": "NHWC RGB, (x / 255 - mean) / std, float32"},
        **extra, **(metadata or {}),
    }
    _atomic_write(out_path, data)
    _atomic_write(sidecar_path(out_path), (json.dumps(sidecar, indent=1) + "\n").encode())
    return sidecar


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_finished_export(path: str | os.PathLike) -> bool:
    """A regular file with a readable sidecar of this format: what an export run leaves when it completed."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        read_sidecar(path)
    except (ExportInputError, OSError, UnicodeDecodeError):
        return False
    return True


def check_export_target(out: str | os.PathLike, force: bool) -> None:
    """Refuse, before any work, an --out that cannot take an export: a folder, a path under a file, or an existing
    output without `force`; `force` replaces only a finished export (never another file). FileExistsError /
    NotADirectoryError naming the path."""
    out = Path(out)
    for path in (out, sidecar_path(out)):
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder: --out names the file to write (e.g. {out / 'grm.onnx'})")
    ancestor = out.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"{out}: {ancestor} is a file, not a folder")
    present = [p for p in (out, sidecar_path(out)) if p.exists() or p.is_symlink()]
    if present and not force:
        raise FileExistsError(f"{present[0]} exists (pass --force to replace it)")
    if present and not is_finished_export(out):
        raise FileExistsError(f"{present[0]} exists and is not a finished export ({out} with a valid {FORMAT_VERSION} "
                              f"sidecar {sidecar_path(out).name}): --force replaces only an export; remove it or "
                              "choose another --out")


# --- engines --------------------------------------------------------------------------------------------------

def read_sidecar(path: str | os.PathLike) -> dict:
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported model file")
    if not side.is_file():
        raise ExportInputError(f"{path}: its sidecar {side.name} is missing (scripts/export.py writes both; the "
                               "tracker needs the threshold and shapes it records)")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ExportInputError(f"{side}: not valid JSON ({exc})") from None
    missing = [k for k in ("format_version", "format", "threshold", "inputs", "outputs", "model") if k not in meta]
    if missing or meta.get("format_version") != FORMAT_VERSION:
        raise ExportInputError(f"{side}: not a {FORMAT_VERSION} sidecar (missing keys {missing}, "
                               f"format_version {meta.get('format_version')!r})")
    return meta


class ExportedEngine:
    """An exported network step with the sidecar's contract enforced; subclasses bind a runtime.

    `run({name: array})` checks names, shapes and dtypes against the sidecar and returns {output name: array}.
    Calling the engine as the tracker does, `engine(template, template_mask, search_uint8, active)`, normalises
    the search crops on the host, runs the active slots (in chunks of the file's batch size when it is fixed)
    and returns the (B, 4) tracker boxes (and (B, L_div, Nx) decisions with `with_decisions`).
    """

    kind = "?"

    def __init__(self, path: str | os.PathLike, meta: dict):
        self.path = Path(path)
        self.meta = meta
        self.threshold = float(meta["threshold"])
        self.inputs = {s["name"]: s for s in meta["inputs"]}
        self.output_names = [s["name"] for s in meta["outputs"]]
        first = meta["inputs"][0]["shape"][0]
        self.batch: Optional[int] = None if first == "batch" else int(first)
        m = meta["model"]
        self.template_size, self.search_size, self.feat_size = (int(m["template_size"]), int(m["search_size"]),
                                                                int(m["feat_size"]))
        self.has_decisions = "decisions" in self.output_names
        norm = meta.get("normalisation", {})
        self.mean = tuple(norm.get("mean", geometry.IMAGENET_MEAN.tolist()))
        self.std = tuple(norm.get("std", geometry.IMAGENET_STD.tolist()))

    def check_inputs(self, feeds: dict) -> dict:
        names = set(feeds)
        if names != set(self.inputs):
            raise ExportInputError(f"{self.path.name}: inputs {sorted(names)}, the model takes {sorted(self.inputs)}")
        checked = {}
        for name, spec in self.inputs.items():
            arr = feeds[name]
            dtype = getattr(arr, "dtype", None)
            if dtype is None or np.dtype(dtype) != np.dtype(spec["dtype"]):
                raise ExportInputError(f"{self.path.name}: input {name!r} has dtype {dtype}, the model takes "
                                       f"{spec['dtype']} (shape {spec['shape']})")
            shape = tuple(np.shape(arr))
            want = spec["shape"]
            ok = len(shape) == len(want) and all(w == "batch" or int(w) == s for w, s in zip(want, shape))
            if not ok or shape[0] < 1:
                raise ExportInputError(f"{self.path.name}: input {name!r} has shape {list(shape)}, the model takes "
                                       f"{want} ('batch' = any size >= 1)")
            checked[name] = np.ascontiguousarray(arr)
        batches = {name: a.shape[0] for name, a in checked.items()}
        if len(set(batches.values())) > 1:
            raise ExportInputError(f"{self.path.name}: the inputs have batch sizes {batches}; they must agree")
        return checked

    def run(self, feeds: dict) -> dict:
        outs = self._run(self.check_inputs(feeds))
        return dict(zip(self.output_names, (np.asarray(o) for o in outs)))

    def _run(self, feeds: dict) -> Sequence[np.ndarray]:
        raise NotImplementedError

    def check_settings(self, settings, with_decisions: bool = False) -> None:
        """Raise ValueError when this file cannot serve a tracker with `settings` (threshold, crop sizes,
        normalisation)."""
        if not np.isclose(self.threshold, settings.threshold, rtol=0, atol=1e-9):
            raise ValueError(
                f"{self.path.name} was exported with division threshold {self.threshold:g}, this run uses "
                f"{settings.threshold:g} (TEST.HYPER of the dataset, or --threshold): export again with "
                f"--threshold {settings.threshold:g}, or track with --threshold {self.threshold:g}")
        if (self.template_size, self.search_size, self.feat_size) != (
                settings.template_size, settings.search_size, settings.feat_size):
            raise ValueError(f"{self.path.name} takes template/search crops of {self.template_size}/"
                             f"{self.search_size} px (feature grid {self.feat_size}), the config asks for "
                             f"{settings.template_size}/{settings.search_size} (grid {settings.feat_size})")
        for name, mine, theirs in (("mean", self.mean, settings.mean), ("std", self.std, settings.std)):
            if not np.array_equal(np.asarray(mine, np.float32), np.asarray(theirs, np.float32)):
                raise ValueError(f"{self.path.name} was exported for inputs normalised with {name} "
                                 f"{list(mine)}, the config asks for DATA.{name.upper()} {list(theirs)}")
        if with_decisions and not self.has_decisions:
            raise ValueError(f"{self.path.name} was exported without the division decisions output")

    def __call__(self, template, template_mask, search_uint8, active=None, *, with_decisions: bool = False):
        search_uint8 = np.asarray(search_uint8)
        b = search_uint8.shape[0]
        rows = np.arange(b) if active is None else np.flatnonzero(np.asarray(active))
        boxes = np.zeros((b, 4), np.float32)
        decisions = None
        if with_decisions:
            spec = self.meta["outputs"][self.output_names.index("decisions")]["shape"]
            decisions = np.zeros((b, spec[1], spec[2]), np.float32)
        template = np.asarray(template, np.float32)
        template_mask = np.asarray(template_mask, np.float32)
        chunk = self.batch or max(len(rows), 1)
        for start in range(0, len(rows), chunk):
            idx = rows[start:start + chunk]
            n = len(idx)
            pad = lambda a: a if n == chunk else np.concatenate(   # noqa: E731
                [a, np.zeros((chunk - n,) + a.shape[1:], a.dtype)])
            search = geometry.normalize_image(search_uint8[idx], self.mean, self.std)
            feeds = {"template": pad(template[idx]), "search": pad(search)}
            if "template_mask" in self.inputs:
                feeds["template_mask"] = pad(template_mask[idx])
            out = self.run(feeds)
            boxes[idx] = out["tracker_box"][:n]
            if decisions is not None:
                decisions[idx] = out["decisions"][:n]
        return (boxes, decisions) if with_decisions else boxes


class OnnxRuntimeEngine(ExportedEngine):
    kind = "onnxruntime"

    def __init__(self, path, meta, *, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None):
        super().__init__(path, meta)
        try:   # optional: the engine's runtime, installed only where ONNX files are run
            import onnxruntime as ort
        except ImportError:
            raise EngineUnavailableError(f"--engine onnxruntime needs the onnxruntime package, which is not "
                                         f"installed: .venv/bin/pip install {ONNX_PIP}") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        if providers is None:   # a GPU when onnxruntime-gpu sees one, else the CPU (not the remote Azure EP)
            providers = [p for p in ort.get_available_providers() if p in ("CUDAExecutionProvider",
                                                                             "CPUExecutionProvider")]
        self.session = ort.InferenceSession(str(self.path), opts, providers=list(providers))
        got = [i.name for i in self.session.get_inputs()]
        if sorted(got) != sorted(self.inputs):
            raise ExportInputError(f"{self.path}: the ONNX graph takes inputs {got}, its sidecar says "
                                   f"{sorted(self.inputs)}")

    def _run(self, feeds):
        return self.session.run(self.output_names, feeds)


class JaxExportedEngine(ExportedEngine):
    kind = "exported"

    def __init__(self, path, meta):
        super().__init__(path, meta)
        self.exported = jax.export.deserialize(bytearray(self.path.read_bytes()))
        order = [s["name"] for s in meta["inputs"]]
        self._order = order
        self._call = jax.jit(self.exported.call, compiler_options=xla_compiler_options())

    def _run(self, feeds):
        return self._call(*(feeds[n] for n in self._order))


def load_engine(path: str | os.PathLike, engine: Optional[str] = None, **kwargs) -> ExportedEngine:
    """An engine for an exported file: `engine` 'onnxruntime' (format onnx) or 'exported' (format jax); None
    picks the one that runs the file's format."""
    meta = read_sidecar(path)
    fmt = meta["format"]
    if engine is None:
        engine = {v: k for k, v in ENGINES.items()}.get(fmt)
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {sorted(ENGINES)} for an exported file")
    if ENGINES[engine] != fmt:
        raise ValueError(f"{Path(path).name} is a {fmt!r} export; --engine {engine} runs {ENGINES[engine]!r} "
                         f"files (use --engine {'onnxruntime' if fmt == 'onnx' else 'exported'})")
    cls = OnnxRuntimeEngine if engine == "onnxruntime" else JaxExportedEngine
    return cls(path, meta, **kwargs)
