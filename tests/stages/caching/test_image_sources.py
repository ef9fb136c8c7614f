"""``cache-teacher --images``: any images and videos cached, what they were made from recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.commands import error_line
from support.own_images import write_description, write_images, write_video

from tiekd.pipeline.store.cache import TeacherCache

TEACHER = "python:toy_teachers:indoor_prior"


@pytest.fixture
def sources(tmp_path):
    """Three 48x64 and one 96x128 image in a folder tree, a 6-frame video, a description file."""
    write_images(tmp_path / "imgs" / "a", range(3))
    write_images(tmp_path / "imgs" / "b", [3], size=(96, 128))
    write_video(tmp_path / "v.mp4", 6)
    write_description(tmp_path / "rover.yaml")
    return tmp_path


def cache(cli, sources, *extra):
    return cli("cache-teacher", "--teacher", TEACHER, "--out", sources / "s.zarr", "--dataset",
               sources / "rover.yaml", "--workers", "0", *extra)  # fmt: skip


def test_folder_and_video_cached_with_their_sources_recorded(cli, sources):
    result = cache(cli, sources, "--images", sources / "imgs", "--images", sources / "v.mp4", "--every", "2")
    assert result.exit_code == 0, result.output
    store = TeacherCache.open(sources / "s.zarr")
    assert store.complete and store.depth_shape == (7, 48, 64) and store.location.endswith("indoor_prior/imgs")
    recorded = store.sources
    assert [r["frame"] for r in recorded] == [None] * 4 + [0, 2, 4]
    assert [tuple(r["size"]) for r in recorded][3:5] == [(96, 128), (48, 64)]
    assert store.ids == [r["id"] for r in recorded]
    info = cli("cache", "info", sources / "s.zarr")
    assert f"{sources / 'v.mp4'}: frames 0, 2, 4 (48x64)" in info.output
    assert "made from 4 image(s) and 3 frame(s) of 1 video(s), fit whole" in info.output
    listed = json.loads(cli("cache", "info", "--json", sources / "s.zarr").output)["caches"][0]
    assert listed["source_frames"] == recorded and listed["sources"]["every"] == 2


def test_the_teacher_sees_the_whole_image_resized(cli, sources, tmp_path):
    """The 96x128 image's map is the 48x64 map of the same picture resized (teacher from row, colour, column)."""
    from PIL import Image

    big = np.asarray(Image.open(sources / "imgs" / "b" / "003.png"))
    small = np.asarray(Image.fromarray(big).resize((64, 48), Image.Resampling.BILINEAR))
    Image.fromarray(small).save(tmp_path / "small.png")
    assert (
        cache(
            cli, sources, "--images", sources / "imgs" / "b" / "003.png", "--images", tmp_path / "small.png"
        ).exit_code
        == 0
    )
    store = TeacherCache.open(sources / "s.zarr")
    np.testing.assert_array_equal(store.depth(0), store.depth(1))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "imgs" / "a" / "x.png").write_bytes(b"not a png"), "is not a readable image"),
        (lambda d: (d / "v.mp4").write_bytes(b"\0" * 500), "cannot be"),
        (lambda d: (d / "imgs" / "list.txt").write_text("a/000.png\na/gone.png\n"), "missing file"),
    ],
)
def test_bad_sources_are_one_line_and_keep_what_is_stored(cli, sources, make, message):
    assert cache(cli, sources, "--images", sources / "imgs" / "a", "--name", "kept").exit_code == 0
    make(sources)
    target = sources / "imgs" / "list.txt" if message == "missing file" else sources / "imgs"
    extra = ["--images", sources / "v.mp4"] if message == "cannot be" else []
    line = error_line(cache(cli, sources, "--images", target, *extra))
    assert message in line
    assert TeacherCache.open(sources / "s.zarr", "kept").complete


def test_another_shape_is_refused_unless_a_crop_is_asked_for(cli, sources):
    write_images(sources / "wide", [0], size=(48, 128))
    line = error_line(cache(cli, sources, "--images", sources / "wide"))
    assert "is 48x128, another shape than the 48x64 maps" in line and "--fit crop" in line
    assert cache(cli, sources, "--images", sources / "wide", "--fit", "crop").exit_code == 0


def test_split_and_images_are_exclusive(cli, sources):
    line = error_line(cache(cli, sources))
    assert "give either --split (with --data-root) or --images" in line
