"""``tiekd cache pack`` resumed after its source files changed (tiekd.stages.pack_inputs.check_sources): a
frame not packed yet is packed as the file is now, a touched but unchanged file passes, and a packed frame
whose file changed refuses the resume in one line (it would mix frames from before and after the edit)."""

import os

import numpy as np
from PIL import Image
from support.commands import error_line

from tiekd.data.registry import get_dataset
from tiekd.data.sample.kitti import write_sample_dataset
from tiekd.pipeline.store.inputs import PackedInputs


def edit(path):
    """Change one pixel inside the crop of an image file (it stays a valid PNG of the same size)."""
    image = np.array(Image.open(path))
    image[-5, image.shape[1] // 2] = 255 - image[-5, image.shape[1] // 2]
    Image.fromarray(image).save(path)


def test_a_resume_after_a_packed_frame_s_source_changed_is_refused(cli, tmp_path):
    sample = write_sample_dataset(tmp_path / "sample", n_train=8, n_test=4, seed=0)  # files of its own to edit
    kitti, store = get_dataset("kitti"), tmp_path / "s.zarr"
    records = kitti.read_split(sample.train_split)
    args = ["cache", "pack", "--data-root", sample.data_root, "--gt-root", sample.gt_root, "--split",
            sample.train_split, "--out", store, "--frames-per-shard", 2]  # fmt: skip

    def packed_is_file(i):
        full = kitti.read_full_image(sample.data_root, records[i])
        return np.array_equal(PackedInputs.open(str(store), "train").image(i), kitti.crop_to_cache(full))

    assert cli(*args, "--shard", "0/2").exit_code == 0  # frames 0, 1, 4, 5
    edit(sample.data_root / records[2].rgb)  # not packed yet
    os.utime(sample.data_root / records[0].rgb)  # packed, touched, unchanged
    result = cli(*args, "--shard", "1/2")
    assert result.exit_code == 0 and "packed split complete: 8 frames" in result.output, result.output
    assert packed_is_file(2)
    edit(sample.data_root / records[0].rgb)  # packed, then changed
    line = error_line(cli(*args))
    assert f"the source files of packed frame 0 ({records[0].rgb}) changed since it was packed" in line, line
    assert "`tiekd cache pack --overwrite`" in line
    assert not packed_is_file(0) and PackedInputs.open(str(store), "train").done.all(), "the refusal changed the store"
    assert cli(*args, "--overwrite").exit_code == 0
    assert all(packed_is_file(i) for i in range(len(records)))
