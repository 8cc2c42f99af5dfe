"""Per-sequence challenge attributes and per-frame difficulty flags of the benchmarks, read from their own files.

Per-sequence attributes (one set of names per sequence):

* LaSOT and its extension: the LaSOT evaluation toolkit's `annos/att/<seq>.txt`, one line of 14 values 0/1 in the
  order of `att_name` in its `run_tracker_performance_evaluation.m` (IV, POC, DEF, MB, CM, ROT, BC, VC, SV, FOC,
  FM, OV, LR, ARC). The folder is looked for in `--attributes DIR`, else `<root>/att`, `<root>/annos/att`,
  `<root>/anno/att`.
* UAV123: the release's `anno/UAV123/att/<seq>.txt` (beside each sequence's annotation file), one line of 12
  values 0/1 in the order of the UAV123 toolkit's `attName` (SV, ARC, LR, FM, FOC, POC, OV, BC, IV, VC, CM, SOB).
* OTB-2015: the OTB toolkit's `anno/att/<seq>.txt`, 11 values 0/1 in the order of `attName` in its
  `perfPlot.m` (IV, OPR, SV, OCC, DEF, MB, FM, IPR, OV, BC, LR); looked for like LaSOT's, file names matched
  without regard to case or `-` / `_` (the toolkit writes `Jogging-1`, the benchmark tables `Jogging_1`).
* GOT-10k val: `object_class` and `motion_class` of each sequence's `meta_info.ini` (`object: <class>`,
  `motion: <class>`), as the GOT-10k toolkit reports per class.

Values may be separated by commas and/or whitespace; anything else (a wrong count, a value other than 0/1) is an
`AttributeFileError` naming the file. NfS: the occlusion flag of its official sequence table (one group, OCC).
AVisT and TNL2K ship no per-sequence attribute files in a layout this reader knows; their report says so in one
line.

Per-frame flags (`frame_flags(seq)`), used for the hard-frame metrics:

* LaSOT / LaSOT extension: `full_occlusion.txt`, `out_of_view.txt` in the sequence folder (official release);
* AVisT: `full_occlusion/<seq>_full_occlusion.txt`, `out_of_view/<seq>_out_of_view.txt`;
* GOT-10k val: `absence.label` (1 = target absent) and `cover.label` (0 = target fully covered; not counted when
  absent) in the sequence folder;
* UAV123: the NaN annotation rows (the release README: the target is fully occluded or out of view).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from grm_jax.sequence import AnnotationError, data_path, parse_flags

from . import tables
from .datasets import DATASET_ALIASES

__all__ = ["ATTRIBUTE_NAMES", "AttributeFileError", "Attributes", "read_attributes", "frame_flags",
           "invisible_frames", "reappearance_frames", "read_attribute_line", "HARD_FRAME_DEFINITIONS"]


class AttributeFileError(AnnotationError):
    """An attribute file that exists but cannot be read as the benchmark defines it."""


# (abbreviation, official name) in file order.
ATTRIBUTE_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "lasot": (("IV", "Illumination Variation"), ("POC", "Partial Occlusion"), ("DEF", "Deformation"),
              ("MB", "Motion Blur"), ("CM", "Camera Motion"), ("ROT", "Rotation"), ("BC", "Background Clutter"),
              ("VC", "Viewpoint Change"), ("SV", "Scale Variation"), ("FOC", "Full Occlusion"),
              ("FM", "Fast Motion"), ("OV", "Out-of-View"), ("LR", "Low Resolution"),
              ("ARC", "Aspect Ratio Change")),
    "uav": (("SV", "Scale Variation"), ("ARC", "Aspect Ratio Change"), ("LR", "Low Resolution"),
            ("FM", "Fast Motion"), ("FOC", "Full Occlusion"), ("POC", "Partial Occlusion"), ("OV", "Out-of-View"),
            ("BC", "Background Clutter"), ("IV", "Illumination Variation"), ("VC", "Viewpoint Change"),
            ("CM", "Camera Motion"), ("SOB", "Similar Object")),
    "otb": (("IV", "Illumination Variation"), ("OPR", "Out-of-Plane Rotation"), ("SV", "Scale Variation"),
            ("OCC", "Occlusion"), ("DEF", "Deformation"), ("MB", "Motion Blur"), ("FM", "Fast Motion"),
            ("IPR", "In-Plane Rotation"), ("OV", "Out-of-View"), ("BC", "Background Clutter"),
            ("LR", "Low Resolution")),
}
ATTRIBUTE_NAMES["lasot_extension_subset"] = ATTRIBUTE_NAMES["lasot"]

# What a toolkit folder of per-sequence files is called (searched under the benchmark root).
_TOOLKIT_FOLDERS = ("att", "annos/att", "anno/att")

HARD_FRAME_DEFINITIONS = {
    "full_occlusion": "frames flagged 1 in the sequence's full_occlusion file (LaSOT, AVisT)",
    "out_of_view": "frames flagged 1 in the sequence's out_of_view file (LaSOT, AVisT)",
    "absent": "frames flagged 1 in absence.label (GOT-10k) or with a NaN annotation row (UAV123: target fully "
              "occluded or out of view)",
    "fully_covered": "frames with cover.label 0 that are not absent (GOT-10k: target fully covered)",
    "after_reappearance": "the first N frames after a run of flagged frames ends, where the target is flagged "
                          "visible again",
}


@dataclass
class Attributes:
    """Attribute groups of a benchmark's sequences."""
    dataset: str
    groups: dict[str, list[str]]            # group label -> sequence names having it, in benchmark order
    labels: dict[str, str] = field(default_factory=dict)   # group label -> long name
    source: str = ""                        # where they were read from
    missing: list[str] = field(default_factory=list)     # sequences without an attribute row
    empty: list[str] = field(default_factory=list)       # official attributes no sequence here has

    def mask(self, group: str, sequences: list[str]) -> np.ndarray:
        members = set(self.groups[group])
        return np.array([s in members for s in sequences], bool)


def read_attribute_line(path: Path, expected: int) -> np.ndarray:
    """The 0/1 values of one attribute file (commas and/or whitespace; blank lines ignored)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise AttributeFileError(f"{path}: not a text file of {expected} attribute values 0/1") from None
    tokens = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    if len(tokens) != expected:
        raise AttributeFileError(f"{path}: {len(tokens)} values, expected {expected} attribute values 0/1")
    try:
        values = np.array([float(t) for t in tokens])
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        raise AttributeFileError(f"{path}: {bad!r} is not an attribute value 0/1") from None
    if not np.isin(values, (0.0, 1.0)).all():
        bad = values[~np.isin(values, (0.0, 1.0))][0]
        raise AttributeFileError(f"{path}: {bad:g} is not an attribute value 0/1")
    return values.astype(bool)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _normalised(name: str) -> str:
    return name.lower().replace("-", "_")


def _toolkit_folder(root: Path, attributes_dir) -> Path | None:
    if attributes_dir is not None:
        folder = data_path(attributes_dir)
        if not folder.is_dir():
            raise AttributeFileError(f"attribute folder not found: {folder}")
        return folder
    for sub in _TOOLKIT_FOLDERS:
        if (root / sub).is_dir():
            return root / sub
    return None


def _from_files(dataset: str, files: Mapping[str, Path | None], source: str) -> Attributes:
    names = ATTRIBUTE_NAMES[dataset]
    groups: dict[str, list[str]] = {abbr: [] for abbr, _ in names}
    missing = []
    for seq, path in files.items():
        if path is None or not path.is_file():
            missing.append(seq)
            continue
        flags = read_attribute_line(path, len(names))
        for (abbr, _), on in zip(names, flags):
            if on:
                groups[abbr].append(seq)
    empty = [abbr for abbr, members in groups.items() if not members]
    return Attributes(dataset, {k: v for k, v in groups.items() if v}, dict(names), source, missing, empty)


def _got10k_meta(sequences) -> Attributes | None:
    groups: dict[str, list[str]] = {}
    missing = []
    for seq in sequences:
        meta = data_path(str(seq.frames[0])).parent / "meta_info.ini" if len(seq.frames) else None
        if meta is None or not meta.is_file():
            missing.append(seq.name)
            continue
        values = {}
        for line in meta.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                values[key.strip().lower()] = value.strip()
        for key, prefix in (("object_class", "object"), ("motion_class", "motion")):
            if values.get(key):
                groups.setdefault(f"{prefix}: {values[key]}", []).append(seq.name)
    if not groups:
        return None
    ordered = dict(sorted(groups.items()))
    return Attributes("got10k_val", ordered, {k: k for k in ordered}, "meta_info.ini of each sequence", missing)


def read_attributes(dataset: str, root, sequences, attributes_dir=None) -> tuple[Attributes | None, str]:
    """(attributes, message): attributes of `sequences` (grm_jax.sequence.Sequence) of benchmark `dataset` read
    from the benchmark's own files, or None and one line saying why there are none."""
    key = DATASET_ALIASES.get(dataset.lower(), dataset.lower())
    root = data_path(root)
    names = [s.name for s in sequences]
    if key == "got10k_val":
        found = _got10k_meta(sequences)
        if found is None:
            return None, f"no attributes: no sequence of {dataset} has a meta_info.ini with object/motion classes"
        return found, f"attributes: {found.source}"
    if key in ("lasot", "lasot_extension_subset", "otb"):
        folder = _toolkit_folder(root, attributes_dir)
        if folder is None:
            where = ", ".join(f"{root / s}" for s in _TOOLKIT_FOLDERS)
            toolkit = "LaSOT evaluation toolkit's annos/att" if key != "otb" else "OTB toolkit's anno/att"
            return None, (f"no attributes: no attribute folder for {dataset} (the {toolkit}; looked in {where}; "
                          "--attributes DIR names it)")
        listing = {_normalised(p.stem): p for p in folder.iterdir() if p.suffix == ".txt"}
        plain = [n[len("otb_"):] if key == "otb" and n.startswith("otb_") else n for n in names]
        files = {n: listing.get(_normalised(p)) for n, p in zip(names, plain)}
        return _report(_from_files(key, files, str(folder)))
    if key == "uav":
        entries = {e["name"]: e for e in tables.table("uav")}
        files = {}
        for n in names:
            anno = root / entries[n]["anno"] if n in entries else None
            files[n] = anno.parent / "att" / anno.name if anno is not None else None
        if not any(p is not None and p.is_file() for p in files.values()):
            return None, f"no attributes: no UAV123 attribute files (anno/UAV123/att/<seq>.txt) under {root}"
        return _report(_from_files("uav", files, str(root / "anno" / "UAV123" / "att")))
    if key == "nfs":
        # The official sequence table marks the sequences with occlusion (pytracking `nfsdataset.py`).
        entries = {e["name"]: e for e in tables.table("nfs")}
        members = [n for n in names if entries.get(n, {}).get("occlusion")]
        groups = {"OCC": members} if members else {}
        found = Attributes("nfs", groups, {"OCC": "Occlusion"}, "the NfS sequence table's occlusion flag",
                           [], [] if members else ["OCC"])
        return (found, f"attributes: {found.source}") if members else \
            (None, "no attributes: none of these NfS sequences is marked with occlusion")
    return None, f"no attributes: {dataset} ships no per-sequence attribute files in a layout this analysis reads"


def _report(found: Attributes) -> tuple[Attributes | None, str]:
    if not found.groups:
        return None, f"no attributes: none of the sequences has an attribute file in {found.source}"
    message = f"attributes: {found.source}"
    if found.missing:
        message += (f" ({len(found.missing)} sequences without an attribute file, left out of the attribute tables:"
                    f" {', '.join(found.missing[:5])}{', ...' if len(found.missing) > 5 else ''})")
    return found, message


# ------------------------------------------------------------------------------------------- per-frame flags
def frame_flags(seq) -> dict[str, np.ndarray]:
    """Per-frame flags (T,) bool of one sequence from the benchmark's own files; {} where it has none."""
    n = len(seq.boxes)
    if not len(seq.frames):
        return {}
    first = data_path(str(seq.frames[0]))
    if seq.dataset in ("lasot", "lasot_extension_subset"):
        folder = first.parent.parent
        return {"full_occlusion": parse_flags(folder / "full_occlusion.txt", expected=n).astype(bool),
                "out_of_view": parse_flags(folder / "out_of_view.txt", expected=n).astype(bool)}
    if seq.dataset == "avist":
        root = first.parent.parent.parent
        return {"full_occlusion": parse_flags(root / "full_occlusion" / f"{seq.name}_full_occlusion.txt",
                                              expected=n).astype(bool),
                "out_of_view": parse_flags(root / "out_of_view" / f"{seq.name}_out_of_view.txt",
                                           expected=n).astype(bool)}
    if seq.dataset == "got10k":
        folder = first.parent
        flags = {}
        if (folder / "absence.label").is_file():
            flags["absent"] = parse_flags(folder / "absence.label", expected=n).astype(bool)
        if (folder / "cover.label").is_file():
            covered = parse_flags(folder / "cover.label", expected=n) == 0
            flags["fully_covered"] = covered & ~flags.get("absent", np.zeros(n, bool))
        return flags
    if seq.dataset == "uav":
        return {"absent": np.isnan(np.asarray(seq.boxes, np.float64)).any(axis=1)}
    return {}


def invisible_frames(flags: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """Frames where any flag says the target cannot be seen (None without flags)."""
    if not flags:
        return None
    return np.logical_or.reduce([np.asarray(f, bool) for f in flags.values()])


def reappearance_frames(invisible: np.ndarray, count: int) -> np.ndarray:
    """The first `count` visible frames after each run of invisible frames (a run ending at the last frame has
    none)."""
    invisible = np.asarray(invisible, bool)
    out = np.zeros_like(invisible)
    ends = np.flatnonzero(invisible[:-1] & ~invisible[1:]) + 1   # first visible frame after a run
    for start in ends:
        stop = start
        while stop < len(invisible) and stop - start < count and not invisible[stop]:
            stop += 1
        out[start:stop] = True
    return out


def attribute_groups_of(attributes: Attributes | None, names: Iterable[str]) -> dict[str, np.ndarray]:
    names = list(names)
    if attributes is None:
        return {}
    return {g: attributes.mask(g, names) for g in attributes.groups}
