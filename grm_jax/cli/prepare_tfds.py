#!/usr/bin/env python
"""Prepare a tracking dataset as a TFDS dataset (array_record) from its official download, then verify it.

    python scripts/prepare_tfds.py got10k --manual-dir /data/GOT-10k --data-dir /data/tfds
    python scripts/prepare_tfds.py lasot --manual-dir /data/LaSOT --data-dir gs://my-bucket/tfds

NAME: got10k (train/val/test), lasot (train/test), trackingnet (TRAIN_* chunks / TEST), coco2017 (train).
Writes DATA_DIR/grm_<NAME>/1.0.0/ (any tf.io.gfile location). TFDS writes into a temporary `incomplete.*`
folder and renames it only when every split is written, so a killed run leaves nothing that loads as a
dataset; run the same command again to start over (unfinished folders of earlier runs are removed). A prepared
dataset is not rebuilt (pass --overwrite); the verification pass always runs: the prepared sequences, frame
counts, boxes and flags must equal what the folder readers give, and the records must hold the source files'
bytes (first and last frame of every sequence plus 1000 random frames; --verify-all: every frame).

Frames that the folder pipeline would skip as bad (missing, empty, truncated, not a JPEG) are stored as they are
and listed, so training skips them exactly as it does from the folders; --strict-frames stops at the first one
instead. A malformed annotation stops the build with one error naming the file and line.
Exit status: 0 prepared and verified, 1 verification found differences, 2 bad input (nothing written).
Equivalent TFDS command (no verification; the tensorflow-datasets 4.9.10 command line needs apache-beam):
    PYTHONPATH=. tfds build grm_got10k --imports data_pipeline.prepared.builders --manual_dir DIR --data_dir OUT
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

from absl import logging as absl_logging
from etils import epath

from data_pipeline.readers.index import DatasetError
from grm_jax.cli import run_command
from grm_jax.sequence import AnnotationError, FrameError, is_url


NAMES = {"got10k": "got10k", "lasot": "lasot", "trackingnet": "trackingnet", "coco2017": "coco2017",
         "coco": "coco2017", "coco17": "coco2017"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(NAMES), help="dataset to prepare")
    p.add_argument("--manual-dir", required=True, help="the official download, unpacked (see the builder's layout)")
    p.add_argument("--data-dir", required=True, help="TFDS data dir to write into (local folder or gs://...)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if the dataset is already prepared")
    p.add_argument("--strict-frames", action="store_true",
                   help="stop at the first frame the training pipeline would skip as bad")
    p.add_argument("--verify-all", action="store_true", help="compare every record with its source file")
    p.add_argument("--no-verify", action="store_true", help="skip the verification pass")
    p.add_argument("--no-progress", action="store_true")
    return p


def _quiet_libraries() -> None:
    """TFDS reports through absl (e.g. that the output folder has no dataset yet): keep errors only."""
    logging.getLogger("absl").setLevel(logging.ERROR)
    absl_logging.set_verbosity(absl_logging.ERROR)


def _remove_unfinished(builder) -> None:
    """`incomplete.*` folders of killed runs (never loadable; each run starts its own)."""
    parent = epath.Path(builder.data_dir).parent
    if not parent.exists():
        return
    for stale in parent.glob("incomplete.*"):
        print(f"removing the unfinished build {stale}")
        stale.rmtree()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import tensorflow_datasets as tfds

    from data_pipeline.prepared.builders import BUILDERS
    from data_pipeline.prepared_store import SplitTable
    from data_pipeline.prepared.verify import verify

    _quiet_libraries()
    tfds.display_progress_bar(not args.no_progress)
    dataset = NAMES[args.name]
    data_dir = args.data_dir if is_url(args.data_dir) else os.path.abspath(os.path.expanduser(args.data_dir))
    if not epath.Path(args.manual_dir).is_dir():
        print(f"error: --manual-dir {args.manual_dir} is not a folder", file=sys.stderr)
        return 2
    builder = BUILDERS[dataset](data_dir=data_dir, strict_frames=args.strict_frames, progress=not args.no_progress)
    if builder.is_prepared() and not args.overwrite:
        print(f"{builder.name} is already prepared in {builder.data_dir} (--overwrite rebuilds it)")
    else:
        _remove_unfinished(builder)
        mode = tfds.download.GenerateMode
        config = tfds.download.DownloadConfig(
            manual_dir=args.manual_dir,
            download_mode=mode.FORCE_REDOWNLOAD if args.overwrite else mode.REUSE_DATASET_IF_EXISTS)
        try:
            with tempfile.TemporaryDirectory() as downloads:  # nothing is downloaded; keeps DATA_DIR clean
                builder.download_and_prepare(download_dir=downloads, download_config=config)
        except (DatasetError, AnnotationError, FrameError) as err:
            print(f"error: {err}\n(nothing was kept in {data_dir})", file=sys.stderr)
            return 2
    info = tfds.builder_from_directory(builder.data_dir).info
    bad = []
    for split, split_info in info.splits.items():
        table = SplitTable.load(builder.data_dir, split)
        bad += table.attrs.get("bad_frames", [])
        print(f"  {split}: {len(table)} sequences, {int(table.offsets[-1])} frames, {split_info.num_examples} records, "
              f"{split_info.num_bytes / 2 ** 20:.1f} MiB")
    if bad:
        print(f"{len(bad)} frame(s) stored as bad (training skips them as with folders):")
        for b in bad[:20]:
            print(f"  {b['problem']}")
        if len(bad) > 20:
            print(f"  ... ({len(bad) - 20} more)")
    if args.no_verify:
        return 0
    print(f"verifying {builder.data_dir} against {args.manual_dir} ...")
    problems = verify(dataset, args.manual_dir, data_dir, every_record=args.verify_all,
                      progress=not args.no_progress)
    if problems:
        print(f"verification FAILED ({len(problems)} difference(s)):", file=sys.stderr)
        for p in problems[:30]:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"verified: the prepared {builder.name} equals the folder readers' view of {args.manual_dir}")
    return 0


def cli() -> None:
    run_command(main)


if __name__ == "__main__":
    cli()
