"""hf: teachers equal transformers' own path (processor, model, post-processing) for each KITTI
teacher family, as random-initialised tiny models saved with their image processors."""

import numpy as np
import pytest
import torch

from tiekd.data.images import read_rgb
from tiekd.data.kitti import kb_crop, read_split
from tiekd.pipeline.teachers.load import load_teacher, predict_depth

transformers = pytest.importorskip("transformers")

HALF_STEP = 1 / 512
"""Half the store's quantisation step (1/256 m): maps this close store the same or adjacent values."""
BATCH_NOISE = 1e-3
"""Float differences (m) between a tiny model run on a batch and on 1 image (measured: up to 6e-4)."""
CROP = (64, 224)
"""A small KB crop keeps the tiny models fast; the processors resize it as they would 352x1216."""


def glpn():
    config = transformers.GLPNConfig(
        num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1], hidden_sizes=[8, 16, 32, 64],
        num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=16, max_depth=80,
    )
    return transformers.GLPNForDepthEstimation(config), transformers.GLPNImageProcessor()


def depth_anything():
    """DPT head on a DINOv2 backbone, metric, max depth 80 (as Depth Anything's KITTI models)."""
    backbone = transformers.Dinov2Config(
        image_size=56, patch_size=14, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=32, out_indices=[1, 2, 3, 4], reshape_hidden_states=False,
    )
    config = transformers.DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8,
        head_hidden_size=8, depth_estimation_type="metric", max_depth=80,
    )
    processor = transformers.DPTImageProcessor(  # Depth Anything's processor settings, at 56 instead of 518
        size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )
    return transformers.DepthAnythingForDepthEstimation(config), processor


def zoedepth():
    backbone = transformers.BeitConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
        use_relative_position_bias=True, reshape_hidden_states=False,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.ZoeDepthConfig(
        backbone_config=backbone, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8, bottleneck_features=8,
        num_attractors=[4, 4, 2, 1], bin_embedding_dim=8, num_relative_features=8,
        bin_configurations=[{"n_bins": 8, "min_depth": 0.001, "max_depth": 80.0}],
    )
    return transformers.ZoeDepthForDepthEstimation(config), transformers.ZoeDepthImageProcessor(
        size={"height": 32, "width": 96}
    )


def dpt():
    config = transformers.DPTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
        backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8,
    )
    return transformers.DPTForDepthEstimation(config), transformers.DPTImageProcessor(size={"height": 32, "width": 32})


FAMILIES = {"glpn": glpn, "depth_anything": depth_anything, "zoedepth": zoedepth, "dpt": dpt}
GAIN = {"zoedepth": 1.5}
"""Weight scale that makes a family's tiny random map vary by metres (ZoeDepth's bins flatten it at 1)."""


def spread(model: torch.nn.Module, gain: float = 1.0) -> torch.nn.Module:
    """Variance-preserving random weights: default-initialised tiny models predict an almost
    constant map, which no pre-processing difference could change."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ConvTranspose2d)):
                module.weight.normal_(0, gain * module.weight[0].numel() ** -0.5)
    return model.eval()


def saved(family: str, folder, dtype=torch.float32):
    model, processor = FAMILIES[family]()
    spread(model, GAIN.get(family, 1.0)).to(dtype).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def crops(sample, n=2, crop=CROP) -> list[np.ndarray]:
    """KB crops (uint8 HxWx3) of the first ``n`` sample images."""
    return [kb_crop(read_rgb(sample.data_root / r.rgb), crop=crop).copy() for r in read_split(sample.train_split)[:n]]


def crops_of(sample, ids: list[str]) -> list[np.ndarray]:
    """Full 352x1216 KB crops of the images ``ids``."""
    return [kb_crop(read_rgb(sample.data_root / i)).copy() for i in ids]


@torch.no_grad()
def transformers_path(folder, crop: np.ndarray, *, flip: bool = False) -> torch.Tensor:
    """What a user of the model gets: Auto classes, the uint8 image, post-processing to its size."""
    model = transformers.AutoModelForDepthEstimation.from_pretrained(folder).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    inputs = processor(images=crop, return_tensors="pt")
    outputs = model(**inputs)
    size = [crop.shape[:2]]
    extra = {"source_sizes": size} if isinstance(processor, transformers.ZoeDepthImageProcessor) else {}
    if flip:
        extra["outputs_flipped"] = model(pixel_values=inputs["pixel_values"].flip(3))
    return processor.post_process_depth_estimation(outputs, target_sizes=size, **extra)[0]["predicted_depth"]


def as_input(crops_uint8: list[np.ndarray]) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1], as cache-teacher hands images to a teacher."""
    return torch.stack([torch.from_numpy(c).permute(2, 0, 1) for c in crops_uint8]).float() / 255


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_equals_transformers_own_path(family, sample, tmp_path):
    folder = saved(family, tmp_path)
    images = crops(sample)
    depth = predict_depth(load_teacher(f"hf:{folder}").module, as_input(images), flip_tta=False)
    for k, crop in enumerate(images):  # one batch of two through tiekd, one image at a time through transformers
        reference = transformers_path(folder, crop)
        assert reference.std() > 10 * HALF_STEP, "a flat map would hide pre-processing differences"
        assert (depth[k, 0] - reference).abs().max() <= HALF_STEP


def test_zoedepth_flip_tta_is_the_models_own(sample, tmp_path):
    """ZoeDepth averages the flipped output before removing its padding and resizing."""
    folder = saved("zoedepth", tmp_path)
    images = crops(sample)
    depth = predict_depth(load_teacher(f"hf:{folder}").module, as_input(images), flip_tta=True)
    for k, crop in enumerate(images):
        assert (depth[k, 0] - transformers_path(folder, crop, flip=True)).abs().max() <= HALF_STEP


@torch.no_grad()
def test_uint8_path_matters_for_depth_anything(sample, tmp_path):
    """The float [0, 1] input with do_rescale=False (tiekd before) is measurably another map."""
    folder = saved("depth_anything", tmp_path)
    [crop] = crops(sample, 1)
    model = transformers.AutoModelForDepthEstimation.from_pretrained(folder).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    inputs = processor(images=as_input([crop]), do_rescale=False, return_tensors="pt")
    floats = processor.post_process_depth_estimation(model(**inputs), target_sizes=[crop.shape[:2]])[0]
    assert (floats["predicted_depth"] - transformers_path(folder, crop)).abs().max() > 10 * HALF_STEP


def test_float16_checkpoint_runs_in_float32_unless_asked(tmp_path):
    folder = saved("glpn", tmp_path, dtype=torch.float16)
    teacher = load_teacher(f"hf:{folder}")
    assert teacher.dtype == "float32" and teacher.module.model.dtype == torch.float32
    assert load_teacher(f"hf:{folder}", args={"dtype": "float16"}).dtype == "float16"


def test_zoedepth_through_cache_teacher_stores_transformers_maps(sample, tmp_path, cli):
    """The crash case of before (ZoeDepth needs source sizes): full KB crops, flip TTA on, stored
    maps equal to transformers' own within the quantisation; dtype and teacher args recorded."""
    from tiekd.pipeline.store.cache import DEPTH_SCALE, TeacherCache

    folder = saved("zoedepth", tmp_path / "zoe")
    result = cli(
        "cache-teacher", "--teacher", f"hf:{folder}", "--data-root", sample.data_root, "--split", sample.test_split,
        "--out", tmp_path / "s.zarr", "--workers", "0", "--batch-size", "2", "--teacher-arg", "revision=main",
    )
    assert result.exit_code == 0, result.output
    cache = TeacherCache.open(tmp_path / "s.zarr")
    assert cache.attrs["teacher_dtype"] == "float32" and cache.attrs["teacher_args"] == {"revision": "main"}
    assert cache.attrs["autocast"] is None  # --amp runs on CUDA only
    for k, crop in enumerate(crops_of(sample, cache.ids[:2])):
        # the store's smallest value is one step (0 means "never written"); bicubic resizing undershoots
        reference = transformers_path(folder, crop, flip=True).clamp(1 / DEPTH_SCALE, 80)
        assert np.abs(cache.depth(k) - reference.numpy()).max() <= HALF_STEP + BATCH_NOISE
