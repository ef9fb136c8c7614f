"""Independent NumPy transcriptions of the two colour augmentations, for tests.

1. :func:`color_aug_released`: the authors' released ``ColorAug``, HPC-Lab-KOREATECH/TIE-KD @ 989ec03,
   ``depth/datasets/pipelines/transforms_kd2.py`` l.397-459 (the baselines' ``ColorAug_Base``,
   ``transforms_base.py`` l.335-396, has the same body). The image reaching it is HxWx3 **uint8 BGR**:
   ``LoadImageFromFile`` (``loading.py`` l.377-411) keeps ``to_float32=False`` and decodes with cv2,
   and the crops, ``mmcv.imrotate`` and ``mmcv.imflip`` before it keep uint8. ``__call__`` l.429-454::

       aug = np.random.rand() < prob
       gamma = np.random.uniform(min, max);       image_aug = image ** gamma         (float64)
       brightness = np.random.uniform(min, max);  image_aug = image_aug * brightness
       colors = np.random.uniform(min, max, size=3)
       image_aug *= stack([ones(H, W) * colors[i] for i in 0..2], axis=2)   (colors[0] on BLUE)
       image_aug = np.clip(image_aug, 0, 255)                                  (no rounding)

   Then ``Normalize`` (l.43) = ``mmcv.imnormalize(img, mean, std, to_rgb=True)``: float32, BGR->RGB,
   (img - mean) * (1 / std) with mean (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375).

2. :func:`color_aug_bts`: BTS, cleinc/bts @ 5e3406b, ``pytorch/bts_dataloader.py`` l.127 (float32 RGB
   / 255) and ``augment_image`` l.216-235: ``image ** gamma`` in float32, ``* brightness``,
   ``image_aug *= color_image`` (in place: float64 factors, the array stays float32), clip to [0, 1];
   ``colors[i]`` multiplies RGB channel i.

Ranges (both codes): gamma and colour U(0.9, 1.1); brightness U(0.9, 1.1) on KITTI, U(0.75, 1.25) on
NYU (the authors' ``*_kd_with_b8_*.py`` l.16, BTS l.222-225). Transcribed from reading the code, not
copied; checked against the originals extracted from the snapshots (max |diff| 0).
"""

from __future__ import annotations

import numpy as np

MMCV_MEAN_RGB = np.array([123.675, 116.28, 103.53])
MMCV_STD_RGB = np.array([58.395, 57.12, 57.375])


def color_aug_released(image_uint8: np.ndarray, gamma: float, brightness: float, colors) -> np.ndarray:
    """The released ``ColorAug`` with given draws on an HxWx3 uint8 image in the pipeline's channel
    order (BGR: ``colors[0]`` multiplies blue). Returns float64 HxWx3 in [0, 255], unrounded."""
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8:
        raise TypeError("the released ColorAug receives uint8 (LoadImageFromFile to_float32=False)")
    colors = np.asarray(colors, dtype=np.float64).reshape(3)
    # uint8 ** Python float is float64 in NumPy 1.x and 2.x; made explicit here.
    out = image.astype(np.float64) ** float(gamma)
    out = out * float(brightness)
    out = out * colors[None, None, :]
    return np.clip(out, 0.0, 255.0)


def mmcv_normalize(image_bgr: np.ndarray) -> np.ndarray:
    """What ``Normalize`` (mmcv.imnormalize, to_rgb=True) makes of the image: float32 HxWx3 RGB.
    cv2 computes in float32 too; this may differ from it by 1 ulp."""
    img = np.asarray(image_bgr).astype(np.float32)[..., ::-1]
    mean = MMCV_MEAN_RGB.astype(np.float32)
    stdinv = (1.0 / MMCV_STD_RGB).astype(np.float32)
    return ((img - mean) * stdinv).astype(np.float32)


def color_aug_bts(image01: np.ndarray, gamma: float, brightness: float, colors) -> np.ndarray:
    """BTS's ``augment_image`` with given draws on a float32 RGB image in [0, 1]; float32 HxWx3 in
    [0, 1], ``colors[i]`` on RGB channel i."""
    image = np.asarray(image01, dtype=np.float32)
    out = image ** np.float32(gamma)
    out = out * np.float32(brightness)
    out = (out * np.asarray(colors, dtype=np.float64).reshape(1, 1, 3)).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
