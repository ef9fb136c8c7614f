"""``tiekd evaluate``: a cached teacher and a student checkpoint under the KITTI protocol, each
result checked against metrics computed here from the maps and the GT PNGs; crops, pictures,
refusals.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from support.commands import SCALE, TEACHER, error_line, evaluate_args
from support.sparsification_reference import reference_scores

from tiekd.data.images import read_rgb
from tiekd.data.kitti import KITTI, gt_path, kb_crop, read_depth, read_split
from tiekd.pipeline.checkpoint import load_checkpoint, save_checkpoint, student_from_checkpoint
from tiekd.pipeline.dpm import dpm_entropy
from tiekd.pipeline.metrics import METRIC_NAMES, depth_metrics
from tiekd.pipeline.pictures.figures import evaluation_figure, save_figure
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.stages.cache_teacher import CacheTeacherConfig
from tiekd.stages.cache_teacher import run as cache_run
from tiekd.stages.train_student import run as train_run
from tiekd.stages.training.config import TrainStudentConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(test_split_store):
    """The toy teacher cached over the sample's test split (3 of its 4 records have GT)."""
    return test_split_store


@pytest.fixture(scope="module")
def checkpoints(sample, store, tmp_path_factory):
    """{"dpm": TIE-KD student, "regression": res-mse student}: last.pt of 2-step runs."""
    paths = {}
    for head, method in (("dpm", "tiekd"), ("regression", "res-mse")):
        out = tmp_path_factory.mktemp(method)
        train_run(
            TrainStudentConfig(
                data_root=sample.data_root,
                split=sample.test_split,
                out=out,
                cache=str(store),
                student="test_resnet",
                method=method,
                max_steps=2,
                batch_size=2,
                scale=SCALE,
                pretrained=False,
                workers=0,
                device="cpu",
            )
        )
        paths[head] = out / "last.pt"
    return paths


def evaluate_json(cli, sample, tmp_path, *extra) -> dict:
    out = tmp_path / "result.json"
    result = cli(*evaluate_args(sample, *extra, "--json", out))
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()) | {"output": result.output}


def with_gt(sample):
    return [r for r in read_split(sample.test_split) if r.gt is not None]


def full_image_garg(height: int, width: int) -> np.ndarray:
    """The Garg crop taken on the full image (BTS, AdaBins), seen through the 352x1216 KB crop."""
    mask = np.zeros((height, width), bool)
    mask[int(0.40810811 * height) : int(0.99189189 * height), int(0.03594771 * width) : int(0.96405229 * width)] = True
    top, left = height - 352, (width - 1216) // 2
    return mask[top : top + 352, left : left + 1216]


def reference(sample, predict, crop="garg"):
    """(per-image metrics, their mean) of ``predict(record, kb_rgb)`` against the GT PNGs.

    ``crop`` is a crop name, or ``"full"`` for the full-image Garg crop.
    """
    per_image = []
    for record in with_gt(sample):
        rgb = read_rgb(sample.data_root / record.rgb)
        gt = kb_crop(read_depth(gt_path(sample.gt_root, record)))
        mask = full_image_garg(*rgb.shape[:2]) if crop == "full" else KITTI.eval_mask(crop, *gt.shape)
        pred = np.clip(predict(record, kb_crop(rgb)), 1e-3, 80.0)
        per_image.append(depth_metrics(pred, gt, min_depth=1e-3, max_depth=80.0, crop=mask))
    return per_image, {name: float(np.mean([m[name] for m in per_image])) for name in METRIC_NAMES}


def assert_metrics_equal(result: dict, expected, rel=1e-12):
    per_image, mean = expected
    assert len(result["per_image"]) == len(per_image)
    for got, want in zip(result["per_image"], per_image):
        assert {k: got[k] for k in METRIC_NAMES} == pytest.approx(want, rel=rel)
    assert {k: result["metrics"][k] for k in METRIC_NAMES} == pytest.approx(mean, rel=rel)


def cached(store):
    cache = TeacherCache.open(store)
    return lambda record, rgb: cache.depth_of(record.rgb)


def student_depth(model, rgb: np.ndarray, *, flip: bool) -> np.ndarray:
    """The student's depth for a KB-cropped uint8 image: at its training scale, optional flip TTA,
    resized back to 352x1216."""
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, scale_factor=SCALE, mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        depth = model.predict_depth(x)
        if flip:
            depth = (depth + model.predict_depth(x.flip(-1)).flip(-1)) / 2
    return F.interpolate(depth, size=(352, 1216), mode="bilinear", align_corners=False)[0, 0].numpy()


def student_entropy(model, rgb: np.ndarray) -> np.ndarray:
    """The DPM entropy evaluate uses: of the unflipped input at the training scale, resized back."""
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, scale_factor=SCALE, mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        return F.interpolate(dpm_entropy(model(x)), size=(352, 1216), mode="bilinear")[0, 0].numpy()


def picture_name(record) -> str:
    return record.rgb.removesuffix(".png").replace("/", "_") + ".png"


def figure_pixels(record, sample, depth, entropy, description, depth_title, folder) -> np.ndarray:
    """The labelled figure of one image rendered here, as RGB pixels."""
    rgb = kb_crop(read_rgb(sample.data_root / record.rgb))
    gt = kb_crop(read_depth(gt_path(sample.gt_root, record)))
    figure = evaluation_figure(
        rgb, depth, gt, entropy, title=f"{record.rgb}: {description}", depth_title=depth_title, max_depth=80.0,
        n_bins=257, crop_name="KB crop", gt_name="LiDAR",
    )  # fmt: skip
    path = save_figure(figure, folder / "expected.png")
    return np.asarray(Image.open(path).convert("RGB"))


class TestFromCache:
    def test_table_and_json_equal_metrics_computed_here(self, sample, store, tmp_path, cli):
        result = evaluate_json(cli, sample, tmp_path, "--cache", store)
        assert (result["n_images"], result["n_skipped"]) == (3, 1)
        assert [m["id"] for m in result["per_image"]] == [r.rgb for r in with_gt(sample)]
        assert_metrics_equal(result, reference(sample, cached(store)))
        assert result["protocol"] == {
            "dataset": "kitti",
            "crop": "garg",
            "garg_on": "kb",
            "min_depth": 1e-3,
            "max_depth": 80.0,
            "model": f"cached teacher {store}/row_prior/test",
            "split": str(sample.test_split),
            "flip_tta": None,
        }
        lines = result["output"].splitlines()
        head = lines.index(next(line for line in lines if line.startswith("cached teacher")))
        assert lines[head] == (
            f"cached teacher {store}/row_prior/test on {sample.test_split}: 3 images (1 without GT "
            "skipped); KB crop, garg crop on the 352x1216 KB crop, depth in [0.001, 80.0] m"
        )
        assert lines[head + 1].split(" | ") == [f"{name:>8}" for name in METRIC_NAMES]
        values = [float(v) for v in lines[head + 2].split(" | ")]
        assert values == pytest.approx([round(result["metrics"][name], 4) for name in METRIC_NAMES], abs=1e-9)

    def test_garg_crop_on_the_full_image(self, sample, store, tmp_path, cli):
        kb = evaluate_json(cli, sample, tmp_path, "--cache", store)
        full = evaluate_json(cli, sample, tmp_path, "--cache", store, "--garg-on", "full")
        assert_metrics_equal(full, reference(sample, cached(store), crop="full"))
        assert abs(full["metrics"]["rmse"] - kb["metrics"]["rmse"]) > 1e-3
        assert "garg crop on the full image" in full["output"]

    @pytest.mark.parametrize("crop", ["eigen", "none"])
    def test_other_crops(self, sample, store, tmp_path, cli, crop):
        result = evaluate_json(cli, sample, tmp_path, "--cache", store, "--crop", crop)
        assert_metrics_equal(result, reference(sample, cached(store), crop=crop))
        garg = reference(sample, cached(store))[1]
        assert abs(result["metrics"]["rmse"] - garg["rmse"]) > 1e-3

    def test_labelled_figures(self, sample, store, tmp_path, cli):
        result = cli(*evaluate_args(sample, "--cache", store, "--save-images", tmp_path / "pictures"))
        assert result.exit_code == 0, result.output
        cache = TeacherCache.open(store)
        names = sorted(picture_name(r) for r in with_gt(sample))
        assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == names
        for record in with_gt(sample):
            saved = np.asarray(Image.open(tmp_path / "pictures" / picture_name(record)).convert("RGB"))
            expected = figure_pixels(
                record, sample, np.clip(cache.depth_of(record.rgb), 1e-3, 80.0), None,
                f"cached teacher {store}/row_prior/test", "cached teacher depth", tmp_path,
            )  # fmt: skip
            np.testing.assert_array_equal(saved, expected)


class TestFromCheckpoint:
    @pytest.mark.parametrize("head", ["dpm", "regression"])
    def test_metrics_with_and_without_flip_tta(self, sample, checkpoints, tmp_path, cli, head):
        state = load_checkpoint(checkpoints[head])
        assert state["input_scale"] == SCALE
        model = student_from_checkpoint(state).eval()
        tta = evaluate_json(cli, sample, tmp_path, "--checkpoint", checkpoints[head])
        plain = evaluate_json(cli, sample, tmp_path, "--checkpoint", checkpoints[head], "--no-flip-tta")
        for result, flip in ((tta, True), (plain, False)):
            expected = reference(sample, lambda record, rgb: student_depth(model, rgb, flip=flip))
            assert_metrics_equal(result, expected, rel=1e-6)
            assert (result["n_images"], result["n_skipped"], result["protocol"]["flip_tta"]) == (3, 1, flip)
        assert tta["metrics"]["abs_rel"] != pytest.approx(plain["metrics"]["abs_rel"], rel=1e-6)
        assert f"student {checkpoints[head]} on {sample.test_split}: 3 images (1 without GT skipped)" in tta["output"]
        assert ", flip TTA," in tta["output"] and ", no TTA," in plain["output"]

    def test_figures_hold_depth_and_the_dpm_entropy(self, sample, checkpoints, tmp_path, cli):
        for head in ("dpm", "regression"):
            result = cli(*evaluate_args(sample, "--checkpoint", checkpoints[head], "--save-images", tmp_path / head))
            assert result.exit_code == 0, result.output
            names = sorted(picture_name(r) for r in with_gt(sample))
            assert sorted(p.name for p in (tmp_path / head).iterdir()) == names
        model = student_from_checkpoint(load_checkpoint(checkpoints["dpm"])).eval()
        for record in with_gt(sample):
            rgb = kb_crop(read_rgb(sample.data_root / record.rgb))
            saved = np.asarray(Image.open(tmp_path / "dpm" / picture_name(record)).convert("RGB"))
            depth, entropy = np.clip(student_depth(model, rgb, flip=True), 1e-3, 80), student_entropy(model, rgb)
            description = f"student {checkpoints['dpm']}"
            expected = figure_pixels(record, sample, depth, entropy, description, "student depth (flip TTA)", tmp_path)
            assert saved.shape == expected.shape
            assert np.mean(np.any(saved != expected, axis=-1)) < 0.01  # float32 rounding moves a few pixels
            with Image.open(tmp_path / "regression" / picture_name(record)) as regression:
                assert regression.height < saved.shape[0]  # no entropy row


class TestRefusals:
    def test_checkpoint_problems(self, sample, checkpoints, tmp_path, cli):
        garbage = tmp_path / "garbage.pt"
        garbage.write_bytes(b"\x00 not a checkpoint")
        assert f"checkpoint {garbage} is corrupt or not a torch file" in error_line(
            cli(*evaluate_args(sample, "--checkpoint", garbage))
        )
        foreign, missing = tmp_path / "foreign.pt", tmp_path / "missing.pt"
        torch.save({"weights": torch.zeros(3)}, foreign)
        for path, fragment in (
            (foreign, f"{foreign} is not a tiekd checkpoint"),
            (missing, f"checkpoint {missing} does not exist"),
        ):
            assert fragment in error_line(cli(*evaluate_args(sample, "--checkpoint", path)))
        state = load_checkpoint(checkpoints["dpm"])
        state["architecture"]["n_bins"] = 65
        save_checkpoint(tmp_path / "other.pt", state)
        assert f"weights in {tmp_path / 'other.pt'} do not fit its architecture" in error_line(
            cli(*evaluate_args(sample, "--checkpoint", tmp_path / "other.pt"))
        )

    def test_exactly_one_of_checkpoint_and_cache(self, sample, store, checkpoints, cli):
        for extra in ((), ("--cache", store, "--checkpoint", checkpoints["dpm"])):
            assert "pass exactly one of --checkpoint" in error_line(cli(*evaluate_args(sample, *extra)))

    def test_split_without_ground_truth(self, sample, store, tmp_path, cli):
        split = tmp_path / "test.txt"  # the stem names the store's split group
        split.write_text("".join(f"{r.rgb} None {r.focal}\n" for r in read_split(sample.test_split)))
        args = evaluate_args(sample, "--cache", store)
        args[args.index("--split") + 1] = split
        assert "none of the 4 records has a ground-truth depth" in error_line(cli(*args))

    def test_cache_of_another_crop(self, sample, tmp_path, cli):
        path = tmp_path / "cropped.zarr"
        cache_run(
            CacheTeacherConfig(
                teacher=TEACHER,
                data_root=sample.data_root,
                split=sample.test_split,
                out=str(path),
                crop=(352, 1200),
                teacher_input=(44, 150),
                workers=0,
            )
        )
        line = error_line(cli(*evaluate_args(sample, "--cache", path)))
        assert "holds 352x1200 maps; evaluation needs the 352x1216 KB crop" in line

    def test_incomplete_cache_is_refused_with_the_count(self, sample, tmp_path, cli):
        """Issue 9 case 1: frames never written used to score as 0 m with exit 0."""
        path = tmp_path / "half.zarr"
        cache_run(
            CacheTeacherConfig(
                teacher=TEACHER, data_root=sample.data_root, split=sample.test_split, out=str(path),
                teacher_input=(88, 304), workers=0, shard=(0, 2), frames_per_shard=2,
            )
        )
        line = error_line(cli(*evaluate_args(sample, "--cache", path)))
        assert "has no map for 2 of the 4 evaluation images" in line and "run cache-teacher" in line


class TestUncertainty:
    def test_sparsification_of_the_dpm_entropy(self, sample, checkpoints, tmp_path, cli):
        from tiekd.pipeline.sparsification import REMOVED_FRACTIONS, UNCERTAINTY_METRIC_NAMES

        model = student_from_checkpoint(load_checkpoint(checkpoints["dpm"])).eval()
        result = evaluate_json(cli, sample, tmp_path, "--checkpoint", checkpoints["dpm"])
        for got, record in zip(result["per_image"], with_gt(sample)):
            rgb = kb_crop(read_rgb(sample.data_root / record.rgb))
            gt = kb_crop(read_depth(gt_path(sample.gt_root, record)))
            entropy = student_entropy(model, rgb)
            valid = (gt > 1e-3) & (gt < 80) & KITTI.eval_mask("garg", 352, 1216)
            pred = np.clip(student_depth(model, rgb, flip=True), 1e-3, 80.0)
            expected = reference_scores(pred[valid], gt[valid], entropy[valid])
            assert {k: got[k] for k in UNCERTAINTY_METRIC_NAMES} == pytest.approx(expected, rel=1e-3, abs=1e-6)
        for key in UNCERTAINTY_METRIC_NAMES:
            assert result["metrics"][key] == pytest.approx(np.mean([m[key] for m in result["per_image"]]), rel=1e-12)
        curves = result["sparsification"]
        assert curves["rmse"]["random"][0] == pytest.approx(result["metrics"]["rmse"], rel=1e-12)
        assert len(curves["d1"]["oracle"]) == len(REMOVED_FRACTIONS) == 51
        assert "DPM entropy as uncertainty" in result["output"]

    def test_no_uncertainty_without_a_dpm(self, sample, checkpoints, store, tmp_path, cli):
        for source in (("--checkpoint", checkpoints["regression"]), ("--cache", store)):
            result = evaluate_json(cli, sample, tmp_path, *source)
            assert result["sparsification"] is None and "ause_rmse" not in result["metrics"]


def dpm_evaluation(sample, checkpoint, **kwargs):
    """The DPM student of ``checkpoint`` evaluated on the sample's test split (sparsification included)."""
    from tiekd.data.datasets import EvaluationSamples
    from tiekd.data.registry import get_dataset
    from tiekd.stages.evaluation import StudentPredictor, evaluate

    kitti = get_dataset("kitti")
    samples = EvaluationSamples(read_split(sample.test_split), sample.data_root, sample.gt_root, dataset=kitti)
    student = student_from_checkpoint(load_checkpoint(checkpoint))
    return evaluate(StudentPredictor(student, scale=SCALE), samples, show_progress=False, **kwargs)


def evaluate_a_share(rank: int, world: int, port: int, sample, checkpoint, out) -> None:
    """One of ``world`` gloo processes: its share of the evaluation, gathered, and the records it scored."""
    import torch.distributed as dist

    from tiekd.stages.training.distributed import gathered

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        scored = []
        result = dpm_evaluation(sample, checkpoint, shard=(rank, world), gather=gathered,
                                on_image=lambda record, *_: scored.append(record.rgb))
        torch.save({"result": result, "scored": scored}, out / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_processes_share_the_evaluation_and_each_returns_the_one_process_result(sample, checkpoints, tmp_path):
    """Validation under torchrun: 2 real gloo processes score disjoint halves of the split, and after
    gathering each holds exactly what one process computes alone (per image, means, curves)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(evaluate_a_share, args=(2, port, sample, checkpoints["dpm"], tmp_path), nprocs=2)
    alone = dpm_evaluation(sample, checkpoints["dpm"])
    with_gt = [r.rgb for r in read_split(sample.test_split) if r.gt is not None]
    shares = [torch.load(tmp_path / f"{rank}.pt", weights_only=False) for rank in (0, 1)]
    assert [share["scored"] for share in shares] == [with_gt[0::2], with_gt[1::2]]
    assert alone.sparsification is not None and alone.n_images == len(with_gt) == 3
    for share in shares:
        assert share["result"] == alone
