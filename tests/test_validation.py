"""Every value checked where it enters (grm_jax/validation.py, the config key table of grm_jax/config.py), nothing
waits forever on the network (grm_jax/deadlines.py), one line instead of a traceback (also for Ctrl-C), and
exports that cannot leave a finished-looking file that was never checked (grm_jax/install.py)."""
from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import PARITY_BUNDLE, REPO

CLI_DIR = REPO / "grm_jax" / "cli"
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}


def _cli(name: str):
    return importlib.import_module(f"grm_jax.cli.{name}")


# ---------------------------------------------------------------------------------------------------------------
# Config keys: one table of ranges


@pytest.mark.parametrize("override, message", [
    ("TRAIN.LR=.inf", "override: TRAIN.LR=inf: must be a finite number > 0"),
    ("TRAIN.LR=nan", "override: TRAIN.LR=nan: must be a finite number > 0"),
    ("TRAIN.LR=-1", "override: TRAIN.LR=-1: must be a finite number > 0"),
    ("TRAIN.LR=0", "override: TRAIN.LR=0: must be a finite number > 0"),
    ("TRAIN.WEIGHT_DECAY=-0.1", "override: TRAIN.WEIGHT_DECAY=-0.1: must be a finite number >= 0"),
    ("TRAIN.WEIGHT_DECAY=.nan", "override: TRAIN.WEIGHT_DECAY=nan: must be a finite number >= 0"),
    ("TRAIN.DROP_PATH_RATE=1", "override: TRAIN.DROP_PATH_RATE=1: must be a finite number in [0, 1)"),
    ("TRAIN.GRAD_CLIP_NORM=-1", "override: TRAIN.GRAD_CLIP_NORM=-1: must be a finite number >= 0 (0 = no clipping)"),
    ("TRAIN.SEED=-1", "override: TRAIN.SEED=-1: must be an integer in [0, 9223372036854775807]"),
    ("TRAIN.KEEP_CHECKPOINTS=0", "override: TRAIN.KEEP_CHECKPOINTS=0: must be a number of checkpoints >= 1, or null "
                                 "to keep all"),
    ("DATA.MEAN=[0.5, 0.5]", "override: DATA.MEAN=[0.5, 0.5]: must be a list of 3 numbers, each a finite number "
                             "(per RGB channel)"),
    ("DATA.MEAN=[a, 0.5, 0.5]", "override: DATA.MEAN=['a', 0.5, 0.5]: 'a' is not a finite number (per RGB channel)"),
    ("DATA.STD=[0.2, 0, 0.2]", "override: DATA.STD=[0.2, 0, 0.2]: 0 is not a finite number > 0 (per RGB channel)"),
    ("DATA.STD=[0.2, .inf, 0.2]", "override: DATA.STD=[0.2, inf, 0.2]: inf is not a finite number > 0 (per RGB "
                                  "channel)"),
    ("DATA.SEARCH.FACTOR=0", "override: DATA.SEARCH.FACTOR=0: must be a finite number > 0"),
    ("DATA.TRAIN.DATASETS_RATIO=[1, -1]", "override: DATA.TRAIN.DATASETS_RATIO=[1, -1]: -1 is not a finite number >= 0"),
    ("DATA.SERVICE_TIMEOUT_S=0", "override: DATA.SERVICE_TIMEOUT_S=0: must be a finite number > 0 (seconds)"),
    ("TEST.HYPER.LASOT=2", "override: TEST.HYPER.LASOT=2: must be a finite number in [0, 1] (a division threshold)"),
    ("TEST.HYPER.DEFAULT=-0.1", "override: TEST.HYPER.DEFAULT=-0.1: must be a finite number in [0, 1] (a division "
                                "threshold)"),
    ("TEST.SEARCH_FACTOR=.nan", "override: TEST.SEARCH_FACTOR=nan: must be a finite number > 0"),
    ("MODEL.DIVISION.RATIO=1.5", "override: MODEL.DIVISION.RATIO=1.5: must be a finite number in [0, 1]"),
])
def test_config_values_outside_their_range_are_one_error_naming_key_value_and_range(override, message):
    from grm_jax.config import ConfigError, load_config

    with pytest.raises(ConfigError) as info:
        load_config("tiny_test", [override])
    assert str(info.value) == message


def test_every_numeric_config_key_has_a_range_and_yaml_files_are_checked_too(tmp_path):
    """A numeric key added without a rule would take NaN or a negative value unchecked."""
    from grm_jax.config import KEY_RULES, LIST_RULES, ConfigError, default_config, flat_config, load_config

    flat = flat_config(default_config().to_dict())
    numeric = {k for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    nullable_numeric = {k for k in KEY_RULES if flat.get(k, 0) is None}
    assert numeric - set(KEY_RULES) == set()
    lists = {k for k, v in flat.items() if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)}
    assert lists - set(LIST_RULES) == set()
    assert {"TRAIN.MAX_STEPS", "TRAIN.KEEP_CHECKPOINTS"} <= nullable_numeric
    yaml_file = tmp_path / "exp.yaml"
    yaml_file.write_text("TRAIN:\n  LR: .inf\n")
    with pytest.raises(ConfigError, match=rf"^{yaml_file}: TRAIN.LR=inf: must be a finite number > 0$"):
        load_config(yaml_file)


def test_a_binary_or_non_utf8_config_file_is_one_line_naming_it(tmp_path):
    from grm_jax.config import ConfigError, load_config

    binary = tmp_path / "ckpt.yaml"
    binary.write_bytes(b"TRAIN:\n  LR: 1\n\x80\x04\x95 pickled")
    with pytest.raises(ConfigError) as info:
        load_config(binary)
    assert str(info.value) == f"{binary}:3: not UTF-8 text (byte 0x80 at offset 15); a config is a YAML file"
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"TRAIN:\n  LR: 1\x00\n")
    with pytest.raises(ConfigError) as info:
        load_config(nul)
    assert str(info.value).startswith(f"{nul}: not valid YAML (") and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# Command-line values: the shared argparse types, in every grm-* parser


def test_argument_types_accept_what_they_should_and_name_the_range():
    from grm_jax.validation import finite_float, int_range, positive_int, size_pair

    assert positive_int("3") == 3 and finite_float(0, 1)("0.25") == 0.25
    assert size_pair("320x240") == (320, 240) and int_range(1)("60") == 60 and int_range(1)("60-90") == (60, 90)
    cases = [(positive_int, "0", "got 0, expected an integer >= 1"), (positive_int, "2.5", "'2.5' is not an integer"),
             (finite_float(0, 1), "nan", "got nan, expected a finite number in [0, 1]"),
             (finite_float(0, 1), "inf", "got inf, expected a finite number in [0, 1]"),
             (size_pair, "0x0", "got '0x0', expected WIDTHxHEIGHT with both integers >= 1"),
             (size_pair, "320", "got '320', expected WIDTHxHEIGHT, e.g. 320x240"),
             (int_range(1), "5-2", "got '5-2', expected N or MIN-MAX with integers >= 1 and MIN <= MAX"),
             (int_range(1), "-1", "got '-1', expected N or MIN-MAX (integers >= 1)")]
    for parse, text, message in cases:
        with pytest.raises(argparse.ArgumentTypeError) as info:
            parse(text)
        assert str(info.value) == message


@pytest.mark.parametrize("program, argv, expected", [
    ("track", ["--threshold", "nan"], "argument --threshold: got nan, expected a finite number in [0, 1]"),
    ("track", ["--threshold", "inf"], "argument --threshold: got inf, expected a finite number in [0, 1]"),
    ("track", ["--threshold", "-1"], "argument --threshold: got -1, expected a finite number in [0, 1]"),
    ("track", ["--threshold", "2"], "argument --threshold: got 2, expected a finite number in [0, 1]"),
    ("track", ["--batch-size", "0"], "argument --batch-size: got 0, expected an integer >= 1"),
    ("train", ["--max-steps", "0"], "argument --max-steps: got 0, expected an integer >= 1"),
    ("train", ["--max-steps", "-1"], "argument --max-steps: got -1, expected an integer >= 1"),
    ("make_synthetic", ["out", "--frames", "5-2"],
     "argument --frames: got '5-2', expected N or MIN-MAX with integers >= 1 and MIN <= MAX"),
    ("make_synthetic", ["out", "--image-size", "0x0"],
     "argument --image-size: got '0x0', expected WIDTHxHEIGHT with both integers >= 1"),
    ("make_synthetic", ["out", "--sequences", "-1"], "argument --sequences: got -1, expected an integer >= 1"),
    ("export", ["--threshold", "nan"], "argument --threshold: got nan, expected a finite number in [0, 1]"),
    ("export", ["--batch", "0"], "argument --batch: got 0, expected an integer >= 1"),
    ("export", ["--tol", "-1"], "argument --tol: got -1, expected a finite number >= 0"),
    ("demo", ["--steps", "0"], "argument --steps: got 0, expected an integer >= 1"),
    ("demo", ["--batch-size", "-2"], "argument --batch-size: got -2, expected an integer >= 1"),
    ("track_video", ["--fps", "0"], "argument --fps: got 0, expected a finite number > 0"),
    ("ablate", ["--batch-size", "0"], "argument --batch-size: got 0, expected an integer >= 1"),
    ("input_service", ["--port", "70000"], "argument --port: got 70000, expected an integer in [0, 65535]"),
    ("bench_tracking", ["--size", "0x10"], "argument --size: got '0x10', expected WIDTHxHEIGHT with both integers >= 1"),
])
def test_cli_values_are_refused_before_any_work_naming_flag_value_and_range(program, argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        _cli(program).main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {expected}")


def test_no_cli_option_takes_a_bare_int_or_float():
    """Every numeric option of every grm-* parser goes through a checked type of grm_jax/validation.py."""
    bare = [f"{path.name}:{i}" for path in sorted(CLI_DIR.glob("*.py"))
            for i, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"type=(int|float)\b", line)]
    assert bare == []


def test_track_threshold_nan_never_reaches_track_config_json():
    parser = _cli("track").build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--config", "tiny_test", "--checkpoint", "x", "--dataset", "otb", "--workdir", "w",
                           "--threshold", "nan"])


# ---------------------------------------------------------------------------------------------------------------
# Sequence names from list files


@pytest.mark.parametrize("name", ["../../etc", "/abs/seq", "a/b", "..", "a\\b"])
def test_unsafe_sequence_names_in_list_txt_are_refused_naming_file_and_line(tmp_path, name):
    from data_pipeline.readers.got10k import read_list
    from grm_jax.evaluation.datasets import load_eval_dataset
    from grm_jax.validation import InputFileError

    for split in ("val", "train"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "list.txt").write_text(f"GOT-10k_{split}_000001\n\n{name}\n")
    message = f"{tmp_path / 'val' / 'list.txt'}:3: sequence name {name!r} is not a plain folder name"
    with pytest.raises(InputFileError, match=re.escape(message)):
        load_eval_dataset("got10k_val", tmp_path)
    with pytest.raises(InputFileError, match=re.escape(message.replace("val", "train"))):
        read_list(tmp_path / "train")


def test_non_utf8_bytes_in_list_txt_are_one_line_naming_file_and_line(tmp_path, capsys):
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "list.txt").write_bytes(b"GOT-10k_Val_000001\nGOT\xff\xfe\n")
    status = _cli("analyze").main(["--dataset", "got10k_val", "--dataset-root", str(tmp_path), "--tracker",
                                   f"a={tmp_path}"])
    assert status == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'val' / 'list.txt'}:2: not UTF-8 text (byte 0xff at "
                                       "offset 22)\n")


# ---------------------------------------------------------------------------------------------------------------
# One line, not a traceback


def test_keyboard_interrupt_is_one_line_and_status_130(capsys):
    from grm_jax.cli import run_command, run_reporting_user_errors

    def interrupted():
        raise KeyboardInterrupt

    assert run_reporting_user_errors(interrupted, debug=False, prog="grm-track") == 130
    assert capsys.readouterr().err == "grm-track: stopped by Ctrl-C\n"
    with pytest.raises(KeyboardInterrupt):
        run_reporting_user_errors(interrupted, debug=True)
    with pytest.raises(SystemExit) as info:
        run_command(interrupted)
    assert info.value.code == 130 and capsys.readouterr().err == "stopped by Ctrl-C\n"


def test_every_program_reports_bad_input_in_one_line_through_run_command(capsys, monkeypatch):
    """Programs without their own run_reporting_user_errors (benchmarks, grm-checkpoint-digest, ...) too."""
    from grm_jax.cli import run_command
    from grm_jax.config import ConfigError

    def bad_input():
        raise ConfigError("vit.yaml: TRAIN.LR=inf: must be a finite number > 0")

    monkeypatch.setattr(sys, "argv", ["grm-bench-train"])
    with pytest.raises(SystemExit) as info:
        run_command(bad_input)
    assert info.value.code == 2 and capsys.readouterr().err == ("error: vit.yaml: TRAIN.LR=inf: must be a finite "
                                                                "number > 0\n")
    monkeypatch.setattr(sys, "argv", ["grm-bench-train", "--debug"])
    with pytest.raises(ConfigError):
        run_command(bad_input)


@pytest.mark.slow
def test_ctrl_c_in_a_cli_is_one_line_status_130(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "grm_jax.cli.make_synthetic", str(tmp_path / "data"), "--format",
                             "lasot", "--sequences", "500", "--frames", "200"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    deadline = time.monotonic() + 120
    while not any((tmp_path / "data").rglob("*.jpg")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "stopped by Ctrl-C"


def test_bad_output_folders_are_one_line(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert _cli("make_synthetic").main([str(a_file / "data"), "--format", "lasot"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: Not a directory: {a_file / 'data'}"
    assert _cli("demo").main(["--out", str(a_file / "demo")]) == 2
    assert capsys.readouterr().err == f"error: Not a directory: {a_file / 'demo'}\n"

    def read_only(self, *args, **kwargs):   # a read-only file system (permission bits do not stop root)
        raise OSError(errno.EROFS, "Read-only file system", str(self))
    monkeypatch.setattr(Path, "mkdir", read_only)
    assert _cli("demo").main(["--out", str(tmp_path / "demo")]) == 2
    assert capsys.readouterr().err == f"error: Read-only file system: {tmp_path / 'demo'}\n"


# ---------------------------------------------------------------------------------------------------------------
# Nothing hangs: the tf.data service and buckets


def test_an_unreachable_or_workerless_tf_data_service_is_named_within_its_deadline():
    import tensorflow as tf

    from grm_jax.deadlines import UnreachableError, check_data_service

    t0 = time.monotonic()
    with pytest.raises(UnreachableError) as info:
        check_data_service("grpc://127.0.0.1:1", 1.0)
    assert time.monotonic() - t0 < 5
    assert str(info.value) == ("the tf.data service dispatcher grpc://127.0.0.1:1 (DATA.SERVICE_ADDRESS) does not "
                               "answer within 1 s (DATA.SERVICE_TIMEOUT_S): is scripts/input_service.py running "
                               "there, and the address right?")
    service = tf.data.experimental.service
    dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
    address = dispatcher.target
    with pytest.raises(UnreachableError, match=f"dispatcher {address} .* has no workers within 0.5 s"):
        check_data_service(address, 0.5)
    host_port = address.split("://")[1]
    worker = service.WorkerServer(service.WorkerConfig(dispatcher_address=host_port, port=0))
    assert check_data_service(address, 10.0) == [worker._address]
    silent = service.WorkerServer(service.WorkerConfig(dispatcher_address=host_port,
                                                       worker_address="nohost.invalid:%port%", port=0))
    deadline = time.monotonic() + 10
    while dispatcher._num_workers() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(UnreachableError, match=r"worker nohost\.invalid:\d+ \(of the dispatcher .*\) does not "
                                               r"answer within 1 s"):
        check_data_service(address, 1.0)
    del silent, worker, dispatcher


def test_each_batch_from_the_service_has_a_deadline():
    from data_pipeline.pipeline import InputFailure, TrainIterator

    class Silent:
        def as_numpy_iterator(self):
            def batches():
                threading.Event().wait()   # a worker that never sends
                yield {}
            return batches()

    iterator = TrainIterator(Silent(), None, 7, reorder=True, batch_timeout_s=0.3, service_address="grpc://h:5050")
    t0 = time.monotonic()
    with pytest.raises(InputFailure) as info:
        next(iterator)
    assert time.monotonic() - t0 < 3
    assert str(info.value).startswith("input service grpc://h:5050: no batch within 0.3 s (DATA.SERVICE_TIMEOUT_S) "
                                      "while waiting for step 7")


@pytest.mark.slow
def test_grm_train_with_an_unreachable_service_stops_with_one_line(tmp_path):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "grm_jax.cli.train", "--config", "tiny_test", "--workdir",
                           str(tmp_path / "run"), "--set", "DATA.SERVICE_ADDRESS=grpc://127.0.0.1:1", "--set",
                           "DATA.SERVICE_TIMEOUT_S=2", "--no-progress"], capture_output=True, text=True,
                          timeout=120, env=ENV, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("error: the tf.data service dispatcher grpc://127.0.0.1:1 (DATA.SERVICE_ADDRESS) does not "
                           "answer within 2 s (DATA.SERVICE_TIMEOUT_S): is scripts/input_service.py running there, "
                           "and the address right?\n")
    assert time.monotonic() - t0 < 60


def test_a_bucket_that_does_not_answer_is_named_within_the_deadline(monkeypatch):
    from grm_jax import deadlines
    from grm_jax.workdir import workdir_path

    calls = []

    def silent(url):
        calls.append(url)
        if url.startswith("gs://silent"):
            threading.Event().wait()
        return True
    monkeypatch.setattr(deadlines, "_first_access", silent)
    monkeypatch.setattr(deadlines, "_ANSWERED", set())
    monkeypatch.setenv(deadlines.STORAGE_TIMEOUT_ENV, "0.5")
    t0 = time.monotonic()
    with pytest.raises(deadlines.UnreachableError) as info:
        workdir_path("gs://silent/run").exists()
    assert time.monotonic() - t0 < 3
    assert str(info.value) == ("gs://silent does not answer: no reply to the first access (gs://silent/run) within "
                               "0.5 s (GRM_STORAGE_TIMEOUT_S); check the network, the bucket name and the credentials")
    from grm_jax.sequence import data_path
    with pytest.raises(deadlines.UnreachableError, match="^gs://silent does not answer"):
        data_path("gs://silent/LaSOT")
    deadlines.check_bucket("ram://answers/a")
    deadlines.check_bucket("ram://answers/b")   # once per bucket
    assert calls.count("ram://answers/a") == 1 and "ram://answers/b" not in calls


# ---------------------------------------------------------------------------------------------------------------
# grm-export: written beside the target, moved into place last


EXPORT_ARGS = ["--config", "tiny_test", "--checkpoint", str(PARITY_BUNDLE / "checkpoint.pth.tar"), "--format", "jax",
               "--platforms", "cpu"]


def _visible(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


@pytest.mark.slow
def test_export_refuses_a_folder_or_a_path_under_a_file_and_never_leaves_an_unchecked_file(tmp_path, capsys,
                                                                                          monkeypatch):
    export = _cli("export")
    (tmp_path / "folder").mkdir()
    assert export.main(EXPORT_ARGS + ["--out", str(tmp_path / "folder")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'folder'} is a folder: --out names the file to write "
                                       f"(e.g. {tmp_path / 'folder' / 'grm.onnx'})\n")
    (tmp_path / "a_file").write_text("x")
    assert export.main(EXPORT_ARGS + ["--out", str(tmp_path / "a_file" / "grm.jax")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'a_file' / 'grm.jax'}: {tmp_path / 'a_file'} is a file, not a folder\n"
    assert export.main(EXPORT_ARGS + ["--out", str(tmp_path / "a_file"), "--force"]) == 2
    assert "is not a finished export" in capsys.readouterr().err and (tmp_path / "a_file").read_text() == "x"

    out = tmp_path / "grm.jax"
    assert export.main(EXPORT_ARGS + ["--out", str(out)]) == 0
    good = _visible(tmp_path)
    assert {"grm.jax", "grm.jax.json"} <= set(good)
    capsys.readouterr()

    def failing_check(*args, **kwargs):   # the check fails (or the process dies) after the file is written
        raise RuntimeError("killed during the check")
    monkeypatch.setattr(export, "verify", failing_check)
    with pytest.raises(RuntimeError, match="killed during the check"):
        export.main(EXPORT_ARGS + ["--out", str(out), "--force"])
    assert _visible(tmp_path) == good                          # the old export untouched, nothing new
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no staging folder left either
    fresh = tmp_path / "fresh.jax"
    with pytest.raises(RuntimeError):
        export.main(EXPORT_ARGS + ["--out", str(fresh)])
    assert not fresh.exists() and not (tmp_path / "fresh.jax.json").exists()


_KILLED_IN_CHECK = """
import os, signal, sys
import grm_jax.cli.export as export
export.verify = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
sys.exit(export.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_an_export_killed_during_its_check_leaves_the_previous_export_and_nothing_finished_looking(tmp_path):
    out = tmp_path / "grm.jax"
    out.write_bytes(b"previous export")
    out.with_name("grm.jax.json").write_text(json.dumps({   # a finished export, as far as --force can tell
        "format_version": "grm_jax.export/1", "format": "jax", "threshold": 0.0, "inputs": [], "outputs": [],
        "model": {}}))
    before = _visible(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _KILLED_IN_CHECK, *EXPORT_ARGS, "--out", str(out), "--force"],
                          capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _visible(tmp_path) == before   # the previous export as it was; the new one only in a hidden staging folder
    assert all(p.name.startswith(".grm.jax.staging-") for p in tmp_path.iterdir() if p.name not in before)


def test_a_killed_runs_staging_folder_is_cleared_and_the_output_it_moved_aside_put_back(tmp_path):
    """A run killed after moving the previous output aside (targets absent, the old files inside its staging
    folder): the next run to the same place puts them back before anything else, then clears the folder; a
    staging folder of a live process is left alone."""
    import subprocess

    from grm_jax.install import install_checked, recover_killed_runs

    dead = subprocess.Popen(["true"])
    dead.wait()
    targets = [tmp_path / "grm.onnx", tmp_path / "grm.onnx.json"]
    staging = tmp_path / f".grm.onnx.staging-{dead.pid}-abc"
    staging.mkdir()
    (staging / ".replaced.grm.onnx").write_bytes(b"old model")
    (staging / ".replaced.grm.onnx.json").write_text("old sidecar")
    (staging / "grm.onnx").write_bytes(b"half of a new")
    live = tmp_path / f".grm.onnx.staging-{os.getpid()}-def"
    live.mkdir()
    lines = []
    recover_killed_runs(targets, log=lines.append)
    assert targets[0].read_bytes() == b"old model" and targets[1].read_text() == "old sidecar"
    assert not staging.exists() and live.is_dir()
    assert len(lines) == 1 and str(staging) in lines[0] and "put back" in lines[0]

    def write(folder):
        (folder / "grm.onnx").write_bytes(b"new model")
        (folder / "grm.onnx.json").write_text("new sidecar")

    install_checked(write, targets)
    assert targets[0].read_bytes() == b"new model" and targets[1].read_text() == "new sidecar"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["grm.onnx", "grm.onnx.json", live.name])
