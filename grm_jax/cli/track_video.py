#!/usr/bin/env python
"""Track one target through a video file or an image folder, starting from an x,y,w,h box.

    grm-track-video clip.mp4 --box 412,180,96,120 --config vitb_256_ep300 \
        --checkpoint GRM_ep0300.pth.tar --out runs/clip [--show-decisions]

Writes `<out>.txt` (one x,y,w,h line per frame, frame 0 = the given box, ints as the official runner; with
--float-boxes the unrounded floats) and `<out>.mp4` (mp4v) with the box drawn. --show-decisions adds, under each
frame, the search crop once per division layer with the tokens that layer let interact with the template
(class 1) tinted red, so one sees where GRM's token division put each search token.

A frame of another size than the first is tracked in its own pixels and resized into the video (with a
warning). An unreadable frame (or a non-finite network output) stops the run with one `error:` line naming it;
the boxes of the frames before it are still written. Exit status 0, or 2 on bad input (--debug: traceback).
"""
from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from grm_jax.cli import run_command, run_reporting_user_errors
from grm_jax.config import add_config_args, config_from_args
from grm_jax.evaluation.raw_results import atomic_write_text
from grm_jax.sequence import FrameError, read_frame
from grm_jax.validation import fraction, positive_float
from grm_jax.workdir import workdir_path


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def parse_box(text: str) -> list[float]:
    try:
        box = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--box {text!r}: expected four numbers x,y,w,h") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise argparse.ArgumentTypeError(f"--box {text!r}: expected finite x,y,w,h with w > 0 and h > 0")
    return box


def frame_source(path: Path):
    """(iterator of RGB uint8 frames, fps or None, count or None) for a video file or an image folder. A frame
    that cannot be read raises FrameError naming it when the iterator reaches it."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise SystemExit(f"error: no images ({', '.join(IMAGE_EXTS)}) in {path}")
        return (read_frame(str(f)) for f in files), None, len(files)
    if not path.is_file():
        raise SystemExit(f"error: {path} is neither a video file nor an image folder")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"error: OpenCV cannot open the video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or None
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    def frames():
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()
    return frames(), fps, count


def decision_strip(crop, decisions, width: int):
    """One tile per division layer: the search crop with class-1 (interacting) tokens tinted red. RGB uint8."""
    layers, nx = decisions.shape
    f = int(round(np.sqrt(nx)))
    tile = max(32, width // max(layers, 1))
    base = cv2.resize(crop, (tile, tile), interpolation=cv2.INTER_AREA).astype(np.float32)
    tiles = []
    for layer in range(layers):
        grid = decisions[layer].reshape(f, f).astype(np.float32)
        mask = cv2.resize(grid, (tile, tile), interpolation=cv2.INTER_NEAREST)[..., None]
        red = np.array([255.0, 0.0, 0.0], np.float32)
        img = base * (1 - 0.45 * mask) + red * 0.45 * mask
        img = img.clip(0, 255).astype(np.uint8)
        cv2.putText(img, f"L{layer}", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(img)
    strip = np.concatenate(tiles, axis=1)
    if strip.shape[1] < width:
        strip = np.pad(strip, ((0, 0), (0, width - strip.shape[1]), (0, 0)))
    return strip[:, :width]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="video file or folder of images (sorted by name)")
    p.add_argument("--box", type=parse_box, required=True, help="initial target box x,y,w,h in pixels")
    add_config_args(p)
    p.add_argument("--checkpoint", type=workdir_path, required=True,
                   help="checkpoint (local or gs://); with --engine onnxruntime / exported the file written by "
                        "scripts/export.py")
    p.add_argument("--engine", choices=["jax", "onnxruntime", "exported"], default="jax",
                   help="what runs the network step: jax (the model), onnxruntime or exported (scripts/export.py)")
    p.add_argument("--out", type=Path, required=True, help="output stem: writes <out>.txt and <out>.mp4")
    p.add_argument("--dataset", default=None, help="take the division threshold of this TEST.HYPER key")
    p.add_argument("--threshold", type=fraction, default=None)
    p.add_argument("--fps", type=positive_float, default=None, help="output video fps (default: the input's, else 30)")
    p.add_argument("--show-decisions", action="store_true", help="draw the per-layer token division")
    p.add_argument("--float-boxes", action="store_true", help="write float boxes instead of ints")
    p.add_argument("--no-video", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    args = p.parse_args(argv)
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    from grm_jax.track import SequenceError
    return run_reporting_user_errors(lambda: run(args), debug=args.debug, also=(SequenceError,))


def run(args) -> int:
    # jax/TF: after argument parsing (grm_jax/cli/__init__.py)
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")

    from grm_jax.checkpoints.inference import load_for_inference
    from grm_jax.specs import build_model
    from grm_jax.track import SequenceError, SequenceTracker, TrackerCore, TrackerSettings

    cfg = config_from_args(args)
    settings = TrackerSettings.from_config(cfg, args.dataset, args.threshold)
    if args.engine == "jax":
        core = TrackerCore(build_model(cfg), load_for_inference(args.checkpoint, cfg), settings,
                           with_decisions=args.show_decisions)
    else:
        from grm_jax.export import load_engine
        try:
            core = TrackerCore(None, None, settings, with_decisions=args.show_decisions,
                               engine=load_engine(args.checkpoint, args.engine))
        except (ValueError, ImportError, OSError) as exc:
            raise SystemExit(f"error: {exc}") from None
    tracker = SequenceTracker(core)
    frames, src_fps, count = frame_source(args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    boxes, writer, pending = [], None, None
    video_path = args.out.with_name(args.out.name + ".mp4")

    video_size = None

    def write(writer, canvas, k):
        nonlocal video_size
        if writer is None:
            video_size = (canvas.shape[1], canvas.shape[0])
            writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), args.fps or src_fps or 30.0,
                                     video_size)
            if not writer.isOpened():
                raise SystemExit(f"error: OpenCV cannot write {video_path}")
        if (canvas.shape[1], canvas.shape[0]) != video_size:
            # OpenCV silently drops a frame of another size; keep every frame, resized
            tqdm.write(f"warning: frame {k} is {canvas.shape[1]}x{canvas.shape[0]}, the video "
                       f"{video_size[0]}x{video_size[1]}: resized in the video (its box in the .txt is in its own "
                       "pixels)", file=sys.stderr)
            canvas = cv2.resize(canvas, video_size, interpolation=cv2.INTER_AREA)
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        return writer

    failure = None
    frame_iter = iter(tqdm(frames, total=count, unit="frame"))
    k = -1
    while True:
        k += 1
        try:
            frame = next(frame_iter)
        except StopIteration:
            break
        except FrameError as err:
            failure = f"frame {k}: {err}"
            break
        try:
            if k == 0:
                h, w = frame.shape[:2]
                x, y, bw, bh = args.box
                if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
                    raise SystemExit(f"error: --box {args.box} lies outside the {w}x{h} first frame")
                tracker.initialize(frame, args.box)
                box = list(args.box)
            else:
                box = tracker.track(frame)
        except SequenceError as err:
            if k == 0:
                raise
            failure = f"frame {k}: {err}"
            break
        boxes.append(box)
        if args.no_video:
            continue
        canvas = frame.copy()
        x, y, bw, bh = (int(v) for v in box)
        cv2.rectangle(canvas, (x, y), (x + bw, y + bh), (0, 255, 0), max(2, frame.shape[1] // 320))
        if args.show_decisions:
            if k == 0:
                pending = canvas          # its (blank) strip needs the layer count, known after frame 1
                continue
            strip = decision_strip(tracker.last_search_crop, tracker.last_decisions, canvas.shape[1])
            if pending is not None:
                writer = write(writer, np.concatenate([pending, np.zeros_like(strip)], axis=0), 0)
                pending = None
            canvas = np.concatenate([canvas, strip], axis=0)
        writer = write(writer, canvas, k)
    if pending is not None:
        writer = write(writer, pending, 0)
    if writer is not None:
        writer.release()
    if not boxes:
        raise SystemExit(f"error: no frame could be read from {args.source}" + (f" ({failure})" if failure else ""))
    arr = np.asarray(boxes, np.float64)
    box_path = args.out.with_name(args.out.name + ".txt")
    buf = io.StringIO()
    if args.float_boxes:
        np.savetxt(buf, arr, fmt="%.4f", delimiter=",")
    else:
        np.savetxt(buf, arr.astype(int), fmt="%d", delimiter=",")
    atomic_write_text(box_path, buf.getvalue())
    print(f"{len(boxes)} frames: boxes in {box_path}"
          + ("" if args.no_video else f", video in {video_path}"))
    if failure is not None:
        print(f"error: stopped at {failure}; the boxes of the {len(boxes)} frames before it are written",
              file=sys.stderr)
        return 2
    return 0


def cli() -> None:
    """Entry point of `grm-track-video` (pyproject.toml) and scripts/track_video.py."""
    run_command(main, huge_pages=True)


if __name__ == "__main__":
    cli()
