"""``sample-data --unlabelled N``: images without GT of scenes of their own, listed for
``cache-teacher --images``; never a training or test scene, the same seed the same bytes."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tiekd.cli import main
from tiekd.data import kitti
from tiekd.data.images import read_rgb
from tiekd.data.sample import kitti as sample
from tiekd.data.sample import nyu as nyu_sample
from tiekd.data.sources.fit import content_sha256
from tiekd.data.sources.listing import list_sources

N_TRAIN, N_TEST, N_UNLABELLED = 3, 2, 6


def _hashes(paths) -> set[str]:
    return {content_sha256(read_rgb(Path(p))) for p in paths}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_kitti_unlabelled_images_are_new_scenes_without_gt(tmp_path):
    dataset = sample.write_sample_dataset(tmp_path, n_train=N_TRAIN, n_test=N_TEST, n_unlabelled=N_UNLABELLED)
    frames = list_sources([str(dataset.unlabelled)])
    assert len(frames) == N_UNLABELLED
    assert all(Path(f.path).is_relative_to(dataset.unlabelled_root) for f in frames)
    for frame in frames:  # each at its recording date's real size, as a KITTI camera frame
        date = Path(frame.path).relative_to(dataset.unlabelled_root).parts[0]
        assert frame.size == kitti.IMAGE_SIZES[date]
    labelled = kitti.read_split(dataset.train_split) + kitti.read_split(dataset.test_split)
    labelled_hashes = _hashes(dataset.data_root / r.rgb for r in labelled)
    unlabelled_hashes = {f.sha256 for f in frames}
    assert len(unlabelled_hashes) == N_UNLABELLED and not unlabelled_hashes & labelled_hashes
    test_drives = {r.rgb.split("/")[1] for r in kitti.read_split(dataset.test_split)}
    assert not {Path(f.path).parts[-4] for f in frames} & test_drives
    # no depth of any kind was written for them: the GT folders hold the labelled frames only
    n_gt = sum(r.gt is not None for r in labelled)
    assert len(list(dataset.dense_gt_root.rglob("*.png"))) == n_gt
    assert len(list(dataset.gt_root.rglob("*.png"))) == n_gt


def test_kitti_same_seed_same_bytes_and_labelled_frames_unchanged(tmp_path):
    with_unlabelled = sample.write_sample_dataset(tmp_path / "a", n_train=1, n_test=2, n_unlabelled=3)
    sample.write_sample_dataset(tmp_path / "b", n_train=1, n_test=2, n_unlabelled=3)
    plain = sample.write_sample_dataset(tmp_path / "c", n_train=1, n_test=2)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    labelled = {k: v for k, v in _files(tmp_path / "a").items() if "unlabelled" not in k}
    assert labelled == _files(tmp_path / "c")  # asking for unlabelled images changes no other file
    assert not plain.unlabelled.exists() and with_unlabelled.unlabelled.exists()
    other_seed = sample.write_sample_dataset(tmp_path / "d", n_train=1, n_test=2, n_unlabelled=3, seed=1)
    assert _files(other_seed.unlabelled_root).keys() == _files(with_unlabelled.unlabelled_root).keys()
    assert _files(other_seed.unlabelled_root) != _files(with_unlabelled.unlabelled_root)


def test_nyu_unlabelled_rooms_are_new_and_fit_whole(tmp_path):
    dataset = nyu_sample.write_sample_dataset(tmp_path, n_train=2, n_test=1, n_unlabelled=2)
    frames = list_sources([str(dataset.unlabelled)])
    assert [f.size for f in frames] == [(480, 640)] * 2
    train = [dataset.data_root / line.split()[0].lstrip("/") for line in dataset.train_split.read_text().splitlines()]
    test_images = list(nyu_sample.official_test_folder(tmp_path).rglob("rgb_*.jpg"))
    assert len({f.sha256 for f in frames}) == 2
    assert not {f.sha256 for f in frames} & _hashes(train + test_images)
    assert not list(dataset.unlabelled_root.rglob("*.png"))  # no depth


def test_cli_writes_them_and_says_how_to_cache_them(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["sample-data", str(tmp_path), "--train", "1", "--test", "2", "--unlabelled", "2"])
    assert result.exit_code == 0, result.output
    assert "and 2 unlabelled images" in result.output
    assert f"--images {tmp_path / 'splits' / 'unlabelled.txt'} --fit crop" in result.output
    assert len((tmp_path / "splits" / "unlabelled.txt").read_text().splitlines()) == 2
    refused = runner.invoke(main, ["sample-data", str(tmp_path / "x"), "--unlabelled", "-1"])
    assert refused.exit_code != 0 and "--unlabelled" in refused.output
