"""Run outputs: metrics.jsonl lines, TensorBoard events read back, config.json, resume, NaN checks, progress bar."""

import io
import json
import math
import os
import pathlib
import pickle

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator, event_file_loader

from samjax.train.progress import ProgressBar
from samjax.train.writers import (
    MetricWriter,
    NonFiniteLossError,
    check_finite,
    format_metrics,
    read_metrics,
)


def _strict_lines(path):
    """Every line parsed as strict JSON (bare NaN / Infinity refused)."""

    def refuse(constant):
        raise AssertionError(f"non-JSON constant {constant} in metrics.jsonl")

    with open(path, encoding="utf-8") as f:
        return [json.loads(line, parse_constant=refuse) for line in f]


def _event_files(directory):
    return sorted(p for p in os.listdir(directory) if p.startswith("events.out.tfevents."))


def _accumulator(directory):
    acc = event_accumulator.EventAccumulator(
        str(directory),
        size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0},
    )
    acc.Reload()
    return acc


def test_metrics_jsonl_holds_exact_values(tmp_path):
    loss32 = np.float32(0.41321)
    with MetricWriter(tmp_path) as writer:
        writer.write(0, {"loss": 1.25, "dice": np.float64(0.8125), "lr": 1e-4})
        writer.write(10, {"loss": loss32, "dice": jnp.asarray(0.5, jnp.float32), "lr": np.array([3e-5])})
        writer.write(20, {"loss": jnp.asarray(2.0, jnp.bfloat16), "images": 8, "finished": np.bool_(True)})

    lines = _strict_lines(tmp_path / "metrics.jsonl")
    assert lines == [
        {"step": 0, "loss": 1.25, "dice": 0.8125, "lr": 1e-4},
        {"step": 10, "loss": float(loss32), "dice": 0.5, "lr": 3e-5},
        {"step": 20, "loss": 2.0, "images": 8, "finished": 1},
    ]
    assert type(lines[1]["loss"]) is float and type(lines[2]["images"]) is int
    assert float(np.float32(lines[1]["loss"])) == float(loss32)  # the float32 value round-trips exactly


def test_write_flushes_each_line_before_close(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.write(3, {"loss": 0.5})
    # Read while the writer is still open: the line is already on disk (a crash now would lose nothing).
    assert _strict_lines(tmp_path / "metrics.jsonl") == [{"step": 3, "loss": 0.5}]
    writer.close()
    writer.close()  # closing twice is fine
    with pytest.raises(ValueError, match="closed"):
        writer.write(4, {"loss": 0.4})


def test_bad_metrics_are_refused(tmp_path):
    with MetricWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="scalar"):
            writer.write(0, {"loss": np.zeros(3)})
        with pytest.raises(ValueError, match="step"):
            writer.write(0, {"step": 1, "loss": 0.1})
    assert _strict_lines(tmp_path / "metrics.jsonl") == []


def test_non_finite_values_stay_valid_json(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write(5, {"loss": float("nan"), "grad_norm": np.float32(np.inf), "dice": -math.inf, "lr": 1e-3})

    (line,) = _strict_lines(tmp_path / "metrics.jsonl")
    assert line == {"step": 5, "loss": "nan", "grad_norm": "inf", "dice": "-inf", "lr": 1e-3}
    (record,) = read_metrics(tmp_path)
    assert math.isnan(record["loss"])
    assert record["grad_norm"] == math.inf and record["dice"] == -math.inf and record["lr"] == 1e-3


def test_non_chief_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    with MetricWriter(workdir, is_chief=False, resume_step=3) as writer:
        writer.write(0, {"loss": 1.0})
        writer.write_images(0, {"img": np.zeros((4, 4, 3), np.uint8)})
        writer.write_text(0, {"note": "hi"})
        writer.write_hparams({"lr": 1e-4})
        writer.flush()
    assert not workdir.exists()


def test_resume_drops_later_steps_and_appends(tmp_path):
    with MetricWriter(tmp_path) as writer:
        for step in range(0, 100, 10):
            writer.write(step, {"loss": 1.0 / (step + 1)})
    # The earlier run was killed mid-write: a last line cut short.
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 100, "lo')

    with MetricWriter(tmp_path, resume_step=50) as writer:
        writer.write(50, {"loss": 0.25})
        writer.write(60, {"loss": 0.125})

    lines = _strict_lines(tmp_path / "metrics.jsonl")
    assert [line["step"] for line in lines] == [0, 10, 20, 30, 40, 50, 60]
    assert [line["loss"] for line in lines[:5]] == [1.0 / (s + 1) for s in (0, 10, 20, 30, 40)]
    assert lines[5]["loss"] == 0.25 and lines[6]["loss"] == 0.125
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "tensorboard"]  # no temporary file left


def test_resume_without_earlier_file_and_plain_reopen_appends(tmp_path):
    with MetricWriter(tmp_path, resume_step=7) as writer:
        writer.write(7, {"loss": 0.5})
    with MetricWriter(tmp_path) as writer:  # no resume_step: plain append
        writer.write(8, {"loss": 0.25})
    assert _strict_lines(tmp_path / "metrics.jsonl") == [{"step": 7, "loss": 0.5}, {"step": 8, "loss": 0.25}]


def test_tensorboard_scalars_read_back(tmp_path):
    losses = {0: 0.9, 10: np.float32(0.41321), 20: float("nan")}
    with MetricWriter(tmp_path) as writer:
        for step, loss in losses.items():
            writer.write(step, {"loss": loss, "lr": 1e-4 * (step + 1)})

    tb_dir = tmp_path / "tensorboard" / "train"
    assert len(_event_files(tb_dir)) == 1
    acc = _accumulator(tb_dir)
    assert set(acc.Tags()["scalars"]) == {"loss", "lr"}
    loss_events = acc.Scalars("loss")
    assert [e.step for e in loss_events] == [0, 10, 20]
    assert loss_events[0].value == float(np.float32(0.9))  # TensorBoard stores float32
    assert loss_events[1].value == float(np.float32(0.41321))
    assert math.isnan(loss_events[2].value)
    assert [e.value for e in acc.Scalars("lr")] == [float(np.float32(1e-4 * (s + 1))) for s in losses]


def test_tensorboard_images_and_text_read_back(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(4, 7), dtype=np.uint8)
    with MetricWriter(tmp_path) as writer:
        writer.write_images(30, {"overlay": rgb, "mask": gray})
        writer.write_text(30, {"note": "dice **0.81**"})
        with pytest.raises(TypeError, match="uint8"):
            writer.write_images(31, {"bad": rgb.astype(np.float32)})

    acc = _accumulator(tmp_path / "tensorboard" / "train")
    (overlay,) = acc.Images("overlay")
    assert (overlay.step, overlay.width, overlay.height) == (30, 5, 6)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(overlay.encoded_image_string))), rgb)
    (mask,) = acc.Images("mask")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(mask.encoded_image_string))), gray)
    (note,) = acc.Tensors("note")
    assert note.step == 30
    assert note.tensor_proto.string_val == [b"dice **0.81**"]
    assert acc.SummaryMetadata("note").plugin_data.plugin_name == "text"


def test_tensorboard_resume_discards_stale_points(tmp_path):
    tb_dir = tmp_path / "tensorboard" / "train"
    with MetricWriter(tmp_path) as writer:
        for step in range(8):
            writer.write(step, {"loss": float(step)})
    (first,) = _event_files(tb_dir)
    # The killed run wrote its file earlier; make its time stamp (part of the name, which orders files) older.
    stamp = first.split(".")[3]
    older = first.replace(stamp, f"{int(stamp) - 100:010d}", 1)
    os.rename(tb_dir / first, tb_dir / older)

    with MetricWriter(tmp_path, resume_step=5) as writer:
        for step in (5, 6):
            writer.write(step, {"loss": 100.0 + step})

    files = _event_files(tb_dir)
    assert len(files) == 2 and files[0] == older
    events = list(event_file_loader.EventFileLoader(str(tb_dir / files[1])).Load())
    starts = [e for e in events if e.HasField("session_log")]
    assert [(e.step, e.session_log.status) for e in starts] == [(5, starts[0].session_log.START)]

    loss = _accumulator(tb_dir).Scalars("loss")
    expected = [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 105.0), (6, 106.0)]
    assert [(e.step, e.value) for e in loss] == expected


def test_config_json_round_trip(tmp_path):
    config = {
        "model": {"type": "vit_b", "image_size": 1024, "freeze": ["image_encoder"]},
        "optimizer": {"lr": 1e-4, "betas": (0.9, 0.999), "warmup": np.int64(250)},
        "data_dir": pathlib.Path("/data/msd"),
        "dtype": np.float32,
        "clip": float("inf"),
        "seed": 0,
        "debug": False,
        "notes": None,
    }
    with MetricWriter(tmp_path) as writer:
        writer.write_hparams(config)

    loaded = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert loaded == {
        "model": {"type": "vit_b", "image_size": 1024, "freeze": ["image_encoder"]},
        "optimizer": {"lr": 1e-4, "betas": [0.9, 0.999], "warmup": 250},
        "data_dir": "/data/msd",
        "dtype": str(np.float32),
        "clip": "inf",
        "seed": 0,
        "debug": False,
        "notes": None,
    }
    (text,) = _accumulator(tmp_path / "tensorboard" / "train").Tensors("config")
    body = text.tensor_proto.string_val[0].decode()
    assert json.loads(body.removeprefix("```json\n").removesuffix("```")) == loaded


def test_config_dict_is_written_as_plain_json(tmp_path):
    ml_collections = pytest.importorskip("ml_collections")
    config = ml_collections.ConfigDict({"train": {"steps": 1000, "lr": 3e-4}, "workdir": "runs/x"})
    with MetricWriter(tmp_path) as writer:
        writer.write_hparams(config)
    loaded = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert loaded == {"train": {"steps": 1000, "lr": 3e-4}, "workdir": "runs/x"}


def test_check_finite_passes_on_finite_values():
    check_finite(3, {"dice": 0.5, "focal": np.float32(0.1), "total": jnp.asarray(0.6), "lr": 1e-4, "name": "x"})


def test_check_finite_names_step_and_bad_terms():
    metrics = {"focal": 0.2, "dice": float("nan"), "iou": jnp.asarray(jnp.inf), "total": np.float32("nan")}
    with pytest.raises(NonFiniteLossError) as info:
        check_finite(37, metrics, checkpoint_dir="runs/x/checkpoints")
    error = info.value
    assert isinstance(error, FloatingPointError)
    assert error.step == 37 and error.names == ("dice", "iou", "total")
    assert str(error) == (
        "non-finite loss at step 37: dice=nan, iou=inf, total=nan; the run stops here; "
        "the last good checkpoint is kept in runs/x/checkpoints"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.step, copy.names, str(copy)) == (37, ("dice", "iou", "total"), str(error))

    with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at step 2: loss=-inf; the run stops here$"):
        check_finite(2, {"loss": np.array([1.0, -np.inf])})


def test_format_metrics_line():
    metrics = {"step": 120, "loss": np.float32(0.41321), "dice": 0.81, "steps_per_sec": 3.2, "lr": 1e-4}
    assert format_metrics(metrics) == "step 120 | loss 0.4132 | dice 0.81 | lr 1.0e-04 | 3.2 steps/s"
    assert format_metrics({"loss": float("nan"), "images_per_sec": 412.7}) == "loss nan | 413 images/s"


def test_progress_bar_disabled_tracks_step_and_prints_nothing():
    out = io.StringIO()
    with ProgressBar(100, initial_step=10, enabled=False, file=out) as bar:
        assert bar.n == 10
        bar.update(25, loss=0.5)
        bar.write("hidden")
        assert bar.n == 25
    assert out.getvalue() == ""

    with ProgressBar(100, is_chief=False, file=out) as bar:
        bar.update(7)
        assert bar.n == 7 and not bar.enabled
    assert out.getvalue() == ""


def test_progress_bar_enabled_moves_to_step_and_shows_metrics():
    out = io.StringIO()
    with ProgressBar(200, initial_step=50, desc="train", mininterval=0, file=out) as bar:
        assert bar.n == 50 and bar._bar.n == 50
        bar.update(60, loss=np.float32(0.41321), lr=1e-4)
        assert bar.n == 60 and bar._bar.n == 60
        bar.update(120, loss=0.25)
        assert bar.n == 120 and bar._bar.n == 120
        bar.write("step 120 | loss 0.25")
    text = out.getvalue()
    assert "train" in text and "120/200" in text
    assert "loss=0.4132, lr=1.0e-04" in text and "loss=0.25" in text
    assert "step 120 | loss 0.25" in text
