"""Image sources of stage one: folders, globs, list files, videos; fitting images of any size."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image
from support.own_images import picture, write_images, write_video

from tiekd.data.kitti import kb_crop_box
from tiekd.data.sources import listing
from tiekd.data.sources.fit import content_sha256, fit_image
from tiekd.data.sources.listing import list_sources
from tiekd.data.sources.samples import FrameDecoder
from tiekd.pipeline.errors import DataError


def pixel_sha256(path) -> str:
    """The content hash written out independently: size, then the RGB bytes."""
    image = np.asarray(Image.open(path).convert("RGB"))
    return hashlib.sha256(f"{image.shape[0]}x{image.shape[1]}:".encode() + image.tobytes()).hexdigest()


def test_a_folder_is_listed_recursively_in_path_order_with_sizes_and_hashes(tmp_path):
    paths = write_images(tmp_path / "f" / "b", [2, 3]) + write_images(tmp_path / "f" / "a", [1], size=(24, 32))
    (tmp_path / "f" / "notes.md").write_text("not an image, not listed")
    frames = list_sources([str(tmp_path / "f")])
    assert [f.id for f in frames] == [str(p) for p in sorted(paths)]
    assert [f.size for f in frames] == [(24, 32), (48, 64), (48, 64)]
    assert [f.sha256 for f in frames] == [pixel_sha256(p) for p in sorted(paths)]


def test_globs_and_list_files_name_the_same_images(tmp_path):
    paths = write_images(tmp_path / "f", range(3))
    (tmp_path / "list.txt").write_text("# a comment\nf/002.png\n\nf/000.png\n")
    assert [f.id for f in list_sources([str(tmp_path / "list.txt")])] == [str(paths[2]), str(paths[0])]
    assert [f.id for f in list_sources([str(tmp_path / "**" / "00[01].png")])] == [str(p) for p in paths[:2]]


def test_a_listing_in_parts_is_the_listing_in_order(tmp_path, monkeypatch):
    """Parts (what a cluster's workers list, one a task): each video alone, images in runs of at most
    IMAGES_PER_PART; their frames concatenated in order are the listing, whatever runs the parts."""
    monkeypatch.setattr(listing, "IMAGES_PER_PART", 2)
    images = [p.resolve() for p in write_images(tmp_path / "f", range(5))]
    write_video(tmp_path / "v.mp4", 3)
    (tmp_path / "list.txt").write_text("f/000.png\nf/001.png\nf/002.png\nv.mp4\nf/003.png\nf/001.png\n")
    inputs = [str(tmp_path / "list.txt"), str(tmp_path / "f" / "004.png")]
    parts = listing.listing_parts(inputs)
    video = (tmp_path / "v.mp4").resolve()
    assert parts == [images[:2], images[2:3], [video], [images[3], images[4]]]
    frames = list_sources(inputs, map=lambda function, items: [function(p) for p in reversed(items)][::-1])
    assert [f.id for f in frames] == [str(p) for p in images[:3]] + [f"{video}#{i}" for i in range(3)] + [
        str(images[3]), str(images[4])]  # fmt: skip
    assert frames == list_sources(inputs)


def test_video_frames_every_nth_in_a_time_range(tmp_path):
    """10 frames a second: [0.25, 0.75) s holds frames 3..7; every second one of them: 3, 5, 7."""
    write_video(tmp_path / "v.mp4", 10)
    frames = list_sources([str(tmp_path / "v.mp4")], every=2, start=0.25, end=0.75)
    assert [f.frame for f in frames] == [3, 5, 7]
    assert [f.seconds for f in frames] == pytest.approx([0.3, 0.5, 0.7])
    assert frames[0].id == f"{tmp_path / 'v.mp4'}#3"


def test_a_video_frame_is_found_again_in_any_order(tmp_path):
    written = write_video(tmp_path / "v.mp4", 12)
    frames = list_sources([str(tmp_path / "v.mp4")])
    decoder = FrameDecoder()
    for frame in [frames[9], frames[2], frames[3], frames[11], frames[0]]:
        image = decoder.decoded(frame)  # checks the content hash too
        assert content_sha256(image) == frame.sha256
        # lossy video: near what was written (random texture, 4:2:0 chroma)
        assert np.abs(image.astype(int) - written[frame.frame]).mean() < 20


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "bad.png").write_bytes(b"no png"), "is not a readable image"),
        (lambda d: (d / "bad.mp4").write_bytes(b"no video" * 100), "cannot be"),
        (lambda d: (d / "l.txt").write_text("000.png\nmissing.png\n"), r"names 1 missing file\(s\)"),
    ],
)
def test_bad_sources_are_one_data_error(tmp_path, make, message):
    write_images(tmp_path, [0])
    make(tmp_path)
    target = tmp_path / "l.txt" if message.startswith("names") else tmp_path
    with pytest.raises(DataError, match=message):
        list_sources([str(target)])


def test_whole_fit_resizes_and_refuses_another_shape():
    image = picture(0, 96, 128)
    expected = np.asarray(Image.fromarray(image).resize((64, 48), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(fit_image(image, (48, 64), fit="whole", place=kb_crop_box, what="x"), expected)
    with pytest.raises(DataError, match="x is 720x1280, another shape than the 352x1216 maps"):
        fit_image(picture(0, 720, 1280), (352, 1216), fit="whole", place=kb_crop_box, what="x")


def test_crop_fit_takes_the_datasets_placement():
    """KITTI's placement on a 720x1280 frame: the bottom 371 rows (1280 x 352/1216), centred across."""
    image = picture(0, 720, 1280)
    fitted = fit_image(image, (352, 1216), fit="crop", place=kb_crop_box, what="x")
    region = image[720 - 371 :, :]
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(region)).resize((1216, 352), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(fitted, expected)


def damaged_video(path, *, cut: bool) -> None:
    """A 30-frame video, cut at 60 % (the container's header intact) or 3000 bytes overwritten mid-way."""
    write_video(path, 30)
    data = bytearray(path.read_bytes())
    if cut:
        del data[int(len(data) * 0.6) :]
    else:
        data[len(data) // 2 : len(data) // 2 + 3000] = np.random.default_rng(0).bytes(3000)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "make, message",
    [
        # FFmpeg conceals damage: the stream just ends early, so 1 or 28 of 30 frames came back without a word
        (lambda d: damaged_video(d / "v.mkv", cut=False), "decodes to 1 of the 30 frames its container declares"),
        (lambda d: damaged_video(d / "v.avi", cut=False), "decodes to 28 of the 30 frames its container declares"),
        (lambda d: damaged_video(d / "v.mkv", cut=True), "decodes to 0 of the 30 frames its container declares"),
        (lambda d: (d / "zero.png").write_bytes(b""), "zero.png is not a readable image"),
        # a 5,000-character name: a traceback (OSError: File name too long) from the list and from --images
        (lambda d: (d / "l.txt").write_text("a" * 5000 + ".png\n"), r"names 1 missing file\(s\) .*\(\d+ characters\)"),
        (lambda d: None, r"--images /b{119}\.\.\. \(5005 characters\) is no folder, file or matching pattern"),
    ],
)
def test_damaged_videos_empty_images_and_overlong_names_are_one_data_error(tmp_path, make, message):
    make(tmp_path)
    target = next(tmp_path.iterdir(), None) if "names" in message or "video" in message else tmp_path
    target = "/" + "b" * 5000 + ".png" if message.startswith("--images") else target
    with pytest.raises(DataError, match=message):
        list_sources([str(target)])


def test_a_symlink_loop_in_a_folder_lists_each_image_once(tmp_path):
    write_images(tmp_path, [0, 1])
    (tmp_path / "up").symlink_to("..")  # a folder that holds itself
    (tmp_path / "self").symlink_to("self")  # a link to itself
    assert [frame.path for frame in list_sources([str(tmp_path)])] == [str(tmp_path / f"00{k}.png") for k in (0, 1)]
