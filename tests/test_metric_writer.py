"""grm_jax/train/metrics.py: one write_scalars call reaches the console line, TensorBoard and the JSON history;
a resumed run's history drops the records after its checkpoint; a sink that cannot write is one warning."""
import errno
import json
import os
import re

import pytest

from grm_jax.train.metrics import HISTORY_FILE, MetricWriter, console_line, read_history

SCALARS = {"loss/total": 1.25, "loss/giou": 0.5, "loss/l1": 0.25, "loss/focal": 0.5, "IoU": 0.625,
           "grad_norm": 3.0, "lr/head": 4e-4, "lr/backbone": 4e-5, "interact_frac/layer0": 0.5,
           "interact_frac/layer1": 0.25, "step_time": 0.125, "pairs_per_s": 64.0, "data/bad_frames": 0,
           "data/redraws": 0}


def _tensorboard_scalars(tb_dir):
    import tensorflow as tf

    out = {}
    for path in sorted(tb_dir.iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                out[(event.step, value.tag)] = value.simple_value
    return out


def test_one_call_reaches_console_tensorboard_and_history(tmp_path, capsys):
    writer = MetricWriter(tmp_path, total_steps=10)
    writer.write_scalars(1, SCALARS)
    writer.write_scalars(2, dict(SCALARS, **{"loss/total": 1.0, "data/bad_frames": 2, "data/redraws": 3}))
    writer.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("step 1/10 total 1.25 giou 0.5 l1 0.25 focal 0.5 iou 0.625 grad_norm 3 lr 0.0004/4e-05 "
                        "interact [0.5, 0.25] 125ms 64.0 pairs/s")
    assert re.match(r"step 2/10 total 1 .* skipped: 2 bad frames, 3 redraws$", lines[1]), lines[1]
    history = read_history(tmp_path / HISTORY_FILE)
    assert history == writer.history
    assert [h["step"] for h in history] == [1, 2] and history[1]["loss/total"] == 1.0
    assert history[1]["data/redraws"] == 3.0
    tb = _tensorboard_scalars(tmp_path / "tb")
    assert tb[(1, "loss/total")] == 1.25 and tb[(2, "loss/total")] == 1.0
    assert tb[(2, "data/bad_frames")] == 2 and tb[(1, "lr/backbone")] == pytest.approx(4e-5)
    assert {tag for step, tag in tb if step == 1} == set(SCALARS)


def test_resume_drops_history_after_the_checkpoint_and_a_torn_line(tmp_path, capsys):
    writer = MetricWriter(tmp_path, total_steps=10)
    for step in range(1, 6):
        writer.write_scalars(step, SCALARS)
    writer.close()
    with open(tmp_path / HISTORY_FILE, "a") as f:
        f.write('{"step": 6, "loss/to')            # killed mid-line
    resumed = MetricWriter(tmp_path, total_steps=10, start_step=3)
    resumed.write_scalars(4, SCALARS)
    resumed.close()
    assert [h["step"] for h in read_history(tmp_path / HISTORY_FILE)] == [1, 2, 3, 4]
    assert all(json.loads(ln) for ln in (tmp_path / HISTORY_FILE).read_text().splitlines())


def test_disabled_writer_writes_nothing(tmp_path, capsys):
    writer = MetricWriter(tmp_path, total_steps=10, enabled=False)
    writer.write_scalars(1, SCALARS)
    writer.message("hello")
    writer.close()
    assert capsys.readouterr().out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_is_one_warning_per_sink_and_the_console_goes_on(tmp_path, capsys):
    (tmp_path / HISTORY_FILE).symlink_to("/dev/full")   # every flush: ENOSPC
    writer = MetricWriter(tmp_path, total_steps=10)

    def no_space(event):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    writer._tensorboard.handle.write_event = no_space
    for step in (1, 2, 3):
        writer.write_scalars(step, SCALARS)
    writer.close()
    out, err = capsys.readouterr()
    assert [ln.split()[1] for ln in out.splitlines()] == ["1/10", "2/10", "3/10"]
    warnings = err.strip().splitlines()
    assert len(warnings) == 2, err
    assert any(w.startswith("warning: cannot write TensorBoard logs to ") and "No space left" in w
               for w in warnings), err
    assert any(w.startswith(f"warning: cannot write the metrics history to {tmp_path / HISTORY_FILE}")
               for w in warnings), err
    assert len(writer.history) == 3


def test_console_line_without_optional_parts():
    assert console_line(5, 7, {"loss/total": 2.0}) == "step 5/7 total 2"


def test_with_a_progress_bar_lines_go_to_stdout_and_the_bar_shows_loss_and_iou(tmp_path, capsys):
    import io

    from tqdm import tqdm

    stream = io.StringIO()
    bar = tqdm(total=10, file=stream, mininterval=0)
    writer = MetricWriter(tmp_path, total_steps=10, bar=bar)
    bar.update(1)
    writer.write_scalars(1, SCALARS)
    writer.close()
    bar.close()
    assert capsys.readouterr().out.startswith("step 1/10 total 1.25 ")
    assert bar.postfix == "iou=0.625, loss=1.25"
