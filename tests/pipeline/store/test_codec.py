"""The 2-D prediction filter: against an independent int64 reference, through zarr-python, and
found by zarr-python through the setup.cfg entry point alone."""

import configparser
import json
import subprocess
import sys

import numpy as np
import pytest
import zarr
from support.paths import SETUP_CFG

from tiekd.pipeline.store.codec import CODEC_NAME, Predict2D, predict_2d_decode, predict_2d_encode, undo_prediction
from tiekd.pipeline.store.formats import FORMAT_CODECS


def reference_residuals(values: np.ndarray) -> np.ndarray:
    """v - (left + up - upper_left) modulo 2**16 in int64, with 0 outside the frame."""
    v = np.pad(values.astype(np.int64), [(0, 0)] * (values.ndim - 2) + [(1, 0), (1, 0)])
    prediction = v[..., 1:, :-1] + v[..., :-1, 1:] - v[..., :-1, :-1]
    return ((v[..., 1:, 1:] - prediction) % 2**16).astype(np.uint16)


@pytest.mark.parametrize("offset", [0, 128, 65535])
@pytest.mark.parametrize("shape", [(3, 17, 29), (1, 352, 40), (5, 7), (1, 48, 3), (1, 1)])
def test_residuals_equal_the_reference_and_decode_back_including_wrap_around(shape, offset):
    """White noise over the whole range wraps in both directions."""
    values = np.random.default_rng(0).integers(0, 2**16, shape, dtype=np.uint16)
    residuals = predict_2d_encode(values, offset)
    np.testing.assert_array_equal(residuals, (reference_residuals(values).astype(np.int64) + offset) % 2**16)
    np.testing.assert_array_equal(predict_2d_decode(residuals, offset), values)
    np.testing.assert_array_equal(predict_2d_decode(residuals.astype(">u2"), offset), values)  # any byte order


def test_the_kernel_joins_byte_planes_and_scales_in_the_same_pass():
    """undo_prediction reads the low and high bytes from separate planes, as store format 4 keeps them."""
    values = np.random.default_rng(3).integers(0, 2**16, (9, 13), dtype=np.uint16)
    residuals = predict_2d_encode(values, 128)
    low, high = (residuals & 0xFF).astype(np.uint8), (residuals >> 8).astype(np.uint8)
    out = np.empty_like(values)
    undo_prediction(low, high, 128, np.uint16(1), out)
    np.testing.assert_array_equal(out, values)
    metres = np.empty(values.shape, np.float32)
    undo_prediction(low, high, 128, np.float32(1 / 256), metres)
    np.testing.assert_array_equal(metres, values.astype(np.float64) / 256)


def test_small_residuals_of_either_sign_have_a_zero_high_byte_with_offset_128():
    values = np.array([[1000, 1127, 1000, 872]], np.uint16)  # residuals 1000, +127, -127, -128
    assert (predict_2d_encode(values, 128)[0, 1:] >> 8).tolist() == [0, 0, 0]


def test_a_plane_leaves_only_the_first_row_and_column():
    rows, cols = np.mgrid[0:16, 0:24]
    residuals = predict_2d_encode((1000 + 7 * rows + 3 * cols).astype(np.uint16))
    assert np.count_nonzero(residuals[1:, 1:]) == 0 and residuals[0, 0] == 1000


def array_with_codec(path, values, store_format=4):
    filters, compressors = FORMAT_CODECS[store_format]
    array = zarr.create_array(
        path, shape=values.shape, dtype="uint16", chunks=(1, *values.shape[1:]), shards=values.shape,
        filters=filters, compressors=compressors, fill_value=0,
    )
    array[:] = values
    return array


@pytest.mark.parametrize("store_format, configuration", [(3, None), (4, {"offset": 128})])
def test_zarr_round_trip_and_metadata(tmp_path, store_format, configuration):
    """Format 3 metadata has no configuration (as tiekd wrote it before the offset existed)."""
    values = np.random.default_rng(1).integers(1, 2**16, (4, 16, 24), dtype=np.uint16)
    array_with_codec(tmp_path / "a.zarr", values, store_format)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr", mode="r")[:], values)
    meta = json.loads((tmp_path / "a.zarr/zarr.json").read_text())
    codec = meta["codecs"][0]["configuration"]["codecs"][0]
    assert codec == {"name": CODEC_NAME, **({"configuration": configuration} if configuration else {})}


def test_only_uint16_and_offsets_that_fit_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="needs uint16"):
        zarr.create_array(tmp_path / "b.zarr", shape=(4, 4), dtype="uint8", filters=(Predict2D(),))
    with pytest.raises(ValueError, match=r"offset must be in \[0, 65535\]"):
        Predict2D(offset=65536)


READ_WITHOUT_TIEKD = """
import sys, numpy, zarr
assert not any(name.startswith("tiekd") for name in sys.modules)
numpy.save(sys.argv[2], zarr.open_array(sys.argv[1], mode="r")[:])
assert "tiekd.pipeline.store.codec" in sys.modules  # loaded by zarr, through the entry point
"""


def test_zarr_python_finds_the_codec_through_the_entry_point_alone(tmp_path):
    """The entry point as setup.cfg declares it, installed as a distribution's metadata would be."""
    values = np.random.default_rng(2).integers(1, 2**16, (2, 8, 8), dtype=np.uint16)
    array_with_codec(tmp_path / "a.zarr", values)
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    dist_info = tmp_path / "site/tiekd_codec_probe-0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiekd-codec-probe\nVersion: 0\n")
    (dist_info / "entry_points.txt").write_text(f"[zarr.codecs]\n{config['options.entry_points']['zarr.codecs']}\n")
    package_parent = SETUP_CFG.parents[1]  # the folder holding the tiekd package, as PYTHONPATH has it
    env = {"PYTHONPATH": f"{tmp_path / 'site'}:{package_parent}", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", READ_WITHOUT_TIEKD, str(tmp_path / "a.zarr"), str(tmp_path / "v.npy")],
                   env=env, check=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), values)
