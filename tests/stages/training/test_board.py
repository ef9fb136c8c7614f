"""TensorBoard records of a run, read back with tensorboard's own EventAccumulator."""

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tiekd.data.images import read_rgb
from tiekd.data.kitti import kb_crop, read_split, rgb_path
from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.pipeline.metrics import METRIC_NAMES
from tiekd.pipeline.pictures.tiles import label_band_height, label_font
from tiekd.stages.training.board import VALIDATION_PICTURES
from tiekd.stages.training.log import read_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STEP_TAGS = {"loss": "train/loss", "dpm": "train/dpm", "depth": "train/depth", "lr": "train/lr"}
STEP_TAGS |= {"step_seconds": "time/step_seconds", "data_seconds": "time/data_seconds"}
TILES = 4
"""image, student depth, DPM entropy, relative error."""


@pytest.fixture(scope="module")
def events(run_dir):  # noqa: F811
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_every_step_is_a_scalar(events, run_dir):  # noqa: F811
    steps = read_jsonl(run_dir / "steps.jsonl")
    for key, tag in STEP_TAGS.items():
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [s["step"] for s in steps], tag
        np.testing.assert_allclose([e.value for e in logged], [s[key] for s in steps], rtol=1e-6, err_msg=tag)


def test_every_epoch_has_its_validation_metrics(events, run_dir):  # noqa: F811
    epochs = read_jsonl(run_dir / "epochs.jsonl")
    np.testing.assert_allclose([e.value for e in events.Scalars("epoch/loss")], [e["loss"] for e in epochs], rtol=1e-6)
    for name in METRIC_NAMES:
        logged = events.Scalars(f"val/{name}")
        assert [e.step for e in logged] == [e["step"] for e in epochs] == [4, 8]
        np.testing.assert_allclose([e.value for e in logged], [e["val"][name] for e in epochs], rtol=1e-6)


def test_every_epoch_has_validation_pictures(events, sample):
    import io

    from PIL import Image

    tags = [f"pictures/{i}" for i in range(VALIDATION_PICTURES)]
    assert set(tags) <= set(events.Tags()["images"])
    record = next(r for r in read_split(sample.test_split) if r.gt is not None)
    rgb = kb_crop(read_rgb(rgb_path(sample.data_root, record))).astype(np.float64)
    half = rgb.reshape(176, 2, 608, 2, 3).mean(axis=(1, 3))  # the image tile: the KB crop at half size
    band = label_band_height(label_font())
    for tag in tags:
        images = events.Images(tag)
        assert [e.step for e in images] == [4, 8]
        picture = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("RGB"))
        assert picture.shape == (TILES * (band + 176), 608, 3)
    first = np.asarray(Image.open(io.BytesIO(events.Images(tags[0])[0].encoded_image_string)).convert("RGB"))
    assert np.abs(first[band : band + 176].astype(np.float64) - half).max() <= 1


def test_a_resumed_run_reads_as_one_run(sample, store, run_dir, tmp_path, monkeypatch):  # noqa: F811
    """Interrupted after step 6 with last.pt at step 5: on resume the events of step 6 are dropped
    and written again, so the board shows each step once, as the uninterrupted run has it."""
    from test_train_student import train_config

    from tiekd.stages.train_student import run
    from tiekd.stages.training.trainer import Trainer

    cfg = train_config(sample, store, tmp_path, epochs=2, val_split=sample.test_split, save_every=5)
    take_step = Trainer.train_step

    def interrupted(self, batch):
        if self.step == 6:
            raise KeyboardInterrupt  # the run stops at step 7, after step 6 was logged
        return take_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    monkeypatch.setattr(Trainer, "train_step", take_step)
    before = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    before.Reload()
    assert [e.step for e in before.Scalars("train/loss")] == list(range(1, 7))
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 5
    run(cfg.__class__(**{**cfg.__dict__, "resume": True}))
    accumulator = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    accumulator.Reload()
    logged = accumulator.Scalars("train/loss")
    assert [e.step for e in logged] == list(range(1, 9))
    whole = [s["loss"] for s in read_jsonl(run_dir / "steps.jsonl")]
    np.testing.assert_allclose([e.value for e in logged], whole, rtol=1e-6)


def test_hparams_hold_the_options_and_the_metrics(events, run_dir):
    """The HPARAMS tab: run.json's scalar options as the session's values, the epoch loss and the
    validation metrics as its metrics, whose last logged values are the run's final metrics."""
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = HParamsPluginData.FromString(content[metadata.EXPERIMENT_TAG]).experiment
    start = HParamsPluginData.FromString(content[metadata.SESSION_START_INFO_TAG]).session_start_info
    end = HParamsPluginData.FromString(content[metadata.SESSION_END_INFO_TAG]).session_end_info
    config = json.loads((run_dir / "run.json").read_text())
    assert start.hparams["student"].string_value == config["student"] == "test_resnet"
    assert start.hparams["lr"].number_value == config["lr"] and start.hparams["epochs"].number_value == 2
    assert start.hparams["pretrained"].bool_value is False and start.hparams["crop"].string_value == "352x704"
    assert "sigma" not in start.hparams and "option_sources" not in start.hparams  # None and nested: left out
    assert {info.name for info in experiment.hparam_infos} == set(start.hparams)
    tags = [info.name.tag for info in experiment.metric_infos]
    assert tags == ["epoch/loss"] + [f"val/{name}" for name in METRIC_NAMES]
    assert all(tag in events.Tags()["scalars"] for tag in tags)
    assert end.status == 1  # STATUS_SUCCESS
