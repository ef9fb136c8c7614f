"""``hf:`` teachers: a transformers depth-estimation model run as a user of the model runs it.

The path is transformers' own, batched and on the teacher's device:

1. the [0, 1] crop goes back to the uint8 image it was decoded from (``round(x * 255)`` is exact),
   because image processors resize the uint8 image and rescale after (feeding floats with
   ``do_rescale=False`` resizes before rounding: up to a metre apart on Depth Anything);
2. the model's image processor resizes, pads and normalises the whole batch on the device
   (transformers' default torchvision processors; a PIL-only processor runs per image on the CPU);
3. the model runs in the dtype chosen at load time (float32 unless ``--teacher-arg dtype=...``;
   ``--amp`` adds float16 autocast on CUDA);
4. the processor's ``post_process_depth_estimation`` brings depth back to the input size, with the
   source sizes where it takes them (ZoeDepth removes its reflection padding with them) and, under
   flip TTA, the flipped outputs where it takes them (ZoeDepth's own flip averaging).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tiekd.pipeline.errors import TeacherError
from tiekd.pipeline.files import file_sha256, state_dict_sha256

UINT8_MAX = 255
"""Images reach the teacher as uint8 / 255 (data.datasets.CroppedImages)."""
DEFAULT_DTYPE = "float32"
"""Weights dtype unless --teacher-arg dtype=... says otherwise: transformers would otherwise load a
float16 checkpoint as float16, several times slower on a CPU and less precise than autocast."""


class HFDepthTeacher(nn.Module):
    """A transformers depth-estimation model and its image processor behind the teacher contract."""

    def __init__(self, model: nn.Module, processor):
        super().__init__()
        self.model = model
        self.processor = processor
        post = getattr(processor, "post_process_depth_estimation", None)
        parameters = inspect.signature(post).parameters if post is not None else {}
        self._post = post if "target_sizes" in parameters else None
        self._source_sizes = "source_sizes" in parameters
        self.model_flip_tta = "outputs_flipped" in parameters
        """Whether flip TTA is the model's own (averaged by its post-processing, before resizing)."""

    def pixel_values(self, image: torch.Tensor) -> torch.Tensor:
        """Model input for images (B, 3, H, W) in [0, 1], on the image's device."""
        uint8 = (image * UINT8_MAX).round_().clamp_(0, UINT8_MAX).to(torch.uint8)
        if getattr(self.processor, "backend", None) == "torchvision":
            inputs = self.processor(images=list(uint8), return_tensors="pt", device=image.device)
        else:  # a PIL-backend processor: per image, on the CPU, as its users run it
            inputs = self.processor(images=[u.permute(1, 2, 0).cpu().numpy() for u in uint8], return_tensors="pt")
        return inputs["pixel_values"].to(image.device, self.model.dtype)

    def forward(self, image: torch.Tensor, flip_tta: bool = False) -> torch.Tensor:
        """Depth (B, 1, H, W) metres; ``flip_tta`` only where the model's flip TTA is its own."""
        batch, size = image.shape[0], tuple(image.shape[-2:])
        pixels = self.pixel_values(image)
        flipped = None
        if flip_tta and self.model_flip_tta:
            both = self.model(pixel_values=torch.cat([pixels, pixels.flip(-1)]))
            outputs = type(both)(predicted_depth=both.predicted_depth[:batch])
            flipped = type(both)(predicted_depth=both.predicted_depth[batch:])
        else:
            outputs = self.model(pixel_values=pixels)
        if self._post is None:
            depth = outputs.predicted_depth.unsqueeze(1).float()
            return F.interpolate(depth, size=size, mode="bilinear", align_corners=False)
        extra = {"source_sizes": [size] * batch} if self._source_sizes else {}
        if flipped is not None:
            extra["outputs_flipped"] = flipped
        maps = self._post(outputs, target_sizes=[size] * batch, **extra)
        return torch.stack([m["predicted_depth"] for m in maps]).unsqueeze(1).float()


def load_hf(target: str, spec: str, args: dict) -> tuple[nn.Module, str | None]:
    """Model and image processor from a hub id or a local folder; ``args`` go to the model's
    ``from_pretrained`` (``dtype`` defaults to float32)."""
    try:  # lazy: transformers is the optional extra tiekd[hf]
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation
    except ImportError as e:
        raise TeacherError("hf: teachers need transformers; install it with `pip install 'tiekd[hf]'`") from e
    args = {"dtype": DEFAULT_DTYPE} | args
    try:
        model = AutoModelForDepthEstimation.from_pretrained(target, **args)
        processor = AutoImageProcessor.from_pretrained(target)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TeacherError(
            f"--teacher {spec}: cannot load a depth-estimation model and image processor ({first}); "
            "pass a local folder or make the model reachable"
        ) from e
    return HFDepthTeacher(model, processor), _weights_sha256(target, model)


def _weights_sha256(target: str, model: nn.Module) -> str:
    """SHA-256 of the model folder's one weights file, else of the loaded state dict."""
    weights = sorted(Path(target).glob("*.safetensors")) + sorted(Path(target).glob("*.bin"))
    return file_sha256(weights[0]) if len(weights) == 1 else state_dict_sha256(model)
