"""Independent transcription of how BTS writes the NYU Depth v2 official test set from the labeled .mat.

cleinc/bts @ 5e3406b, ``utils/extract_official_train_test_set_from_mat.py`` (README.md l.28-30):
  l.82      depth_raw = f['rawDepths']        (NOT f['depths'], the in-painted one)
  l.86      images = f['images']              (N, 3, 640, 480) uint8 as h5py sees it
  l.90-92   convert_image(i, scene, depth_raw[i, :, :].T, image.T)
            -> depth (480, 640); image.T reverses ALL axes: (3, 640, 480) -> (480, 640, 3), RGB
  l.57-59   img_depth = depth_raw * 1000.0; img_depth.astype(np.uint16) -> sync_depth_%05d.png
            (float32 product, then truncation toward zero; holes stay 0)
  l.60-63   image[:, :, ::-1] (RGB -> BGR for cv2); black = zeros((480, 640, 3), uint8);
            black[7:474, 7:632, :] = image[7:474, 7:632, :]; cv2.imwrite('rgb_%05d.jpg', black)
Evaluation reads depth = png / 1000 (BTS utils/eval_with_pngs.py l.124-136).
Only the depth PNG is lossless; the RGB is compared before the JPEG.
"""

from __future__ import annotations

import numpy as np

BORDER_ROWS = (7, 474)
BORDER_COLS = (7, 632)


def official_depth_mm(raw_depth_h5: np.ndarray) -> np.ndarray:
    """rawDepths[i] as h5py returns it, (640, 480) metres -> (480, 640) uint16 millimetres: the
    product in the array's own dtype (float32), then astype(np.uint16), as l.57-58."""
    d = np.asarray(raw_depth_h5).T
    mm = d * 1000.0  # float32 * Python float stays float32 (NumPy 1.x and 2.x)
    return mm.astype(np.uint16)


def official_rgb(image_h5: np.ndarray) -> np.ndarray:
    """images[i] as h5py returns it, (3, 640, 480) uint8 -> (480, 640, 3) uint8 RGB with the black
    border: the array BTS hands to cv2.imwrite, before the JPEG and back in RGB order."""
    img = np.asarray(image_h5).T
    out = np.zeros((480, 640, 3), dtype=np.uint8)
    r0, r1 = BORDER_ROWS
    c0, c1 = BORDER_COLS
    out[r0:r1, c0:c1, :] = img[r0:r1, c0:c1, :]
    return out
