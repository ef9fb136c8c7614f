"""Stage one end to end: content, resume after kill -9, concurrent shards, refusals, bad input."""

import dataclasses
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image
from support.commands import TEACHER, cache_args, tiekd_command
from support.runs import assert_same_store, store_arrays
from toy_teachers import RowPrior

from tiekd.data.images import read_rgb
from tiekd.data.kitti import kb_crop, read_split
from tiekd.pipeline.errors import TeacherError
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.teachers.load import predict_depth


class TestContent:
    def test_maps_equal_the_teacher_within_quantisation(self, sample, tmp_path, cli):
        result = cli(*cache_args(sample, tmp_path / "s.zarr", sample.test_split, "--gt-root", sample.gt_root))
        assert result.exit_code == 0, result.output
        assert "wrote 4 frames" in result.output and "store complete: 4 frames" in result.output
        cache = TeacherCache.open(tmp_path / "s.zarr")
        records = read_split(sample.test_split)
        assert cache.ids == [r.rgb for r in records] and cache.complete
        for i, record in enumerate(records):  # the None-GT record is cached too
            image = torch.from_numpy(kb_crop(read_rgb(sample.data_root / record.rgb)).copy()).permute(2, 0, 1)
            expected = predict_depth(RowPrior(), image[None].float() / 255)[0, 0].clamp(1e-3, 80).numpy()
            assert np.abs(cache.depth(i) - expected).max() <= 1 / 512 + 1e-4
        attrs = cache.attrs
        assert attrs["teacher_spec"] == TEACHER and attrs["flip_tta"] is True and attrs["crop"] == [352, 1216]
        assert attrs["split_sha256"] and attrs["teacher_sha256"] and attrs["tiekd_version"] and attrs["completed"]

    def test_clipping_is_counted(self, sample, tmp_path, cli):
        result = cli(*cache_args(sample, tmp_path / "s.zarr", sample.test_split, "--teacher-arg", "seed=0"))
        assert result.exit_code == 0 and "clipped" not in result.output
        cache = TeacherCache.open(tmp_path / "s.zarr")
        assert cache.clipped.sum() == 0 and cache.attrs["clipped_pixels"] == 0
        shutil.rmtree(tmp_path / "s.zarr")
        # the toy teacher's rows reach 60 m + colour + column term: with max depth 10 every frame clips
        from tiekd.stages.cache_teacher import CacheTeacherConfig, report, run

        summary = run(
            CacheTeacherConfig(
                teacher=TEACHER,
                data_root=sample.data_root,
                split=sample.test_split,
                out=str(tmp_path / "s.zarr"),
                workers=0,
                max_depth=10.0,
                max_clipped_share=1.0,
            )
        )
        cache = TeacherCache.open(tmp_path / "s.zarr")
        assert (cache.clipped > 0).all() and cache.depth(0).max() == pytest.approx(10.0, abs=1 / 256)
        share = cache.clipped.sum() / (len(cache) * 352 * 1216)  # the run says how much it clipped
        assert summary.clipped_share == pytest.approx(share, rel=1e-12) and 0.5 < share < 1
        assert f"{share:.2%} of its pixels lay outside the depth range and were clipped" in report(summary)

    def test_no_flip_tta_and_teacher_input(self, sample, tmp_path, cli):
        cli(*cache_args(sample, tmp_path / "a.zarr", sample.test_split, "--no-flip-tta"))
        cli(*cache_args(sample, tmp_path / "b.zarr", sample.test_split, "--teacher-input", "176x608"))
        a, b = TeacherCache.open(tmp_path / "a.zarr"), TeacherCache.open(tmp_path / "b.zarr")
        assert a.attrs["flip_tta"] is False and b.attrs["teacher_input"] == [176, 608]
        assert a.depth(0).shape == b.depth(0).shape == (352, 1216)


class TestResumeAndShards:
    @pytest.mark.slow
    def test_kill_9_then_resume_equals_uninterrupted(self, sample, tmp_path, cli, subprocess_env):
        cli(*cache_args(sample, tmp_path / "whole.zarr"))
        args = cache_args(sample, tmp_path / "s.zarr", None, "--teacher-arg", "delay=0.4")
        process = subprocess.Popen(
            tiekd_command(*args), env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.2)
            try:
                if TeacherCache.open(tmp_path / "s.zarr").done.sum() >= 2:
                    break
            except Exception:
                continue
        process.send_signal(signal.SIGKILL)
        process.wait()
        partial = TeacherCache.open(tmp_path / "s.zarr").done
        assert 2 <= partial.sum() < len(partial), "the kill must land mid-run"
        result = cli(*cache_args(sample, tmp_path / "s.zarr"))
        assert result.exit_code == 0, result.output
        assert f"wrote {len(partial) - partial.sum()} frames" in result.output
        assert_same_store(tmp_path / "s.zarr", tmp_path / "whole.zarr")

    @pytest.mark.slow
    def test_two_concurrent_shard_processes_equal_one(self, sample, tmp_path, cli, subprocess_env):
        cli(*cache_args(sample, tmp_path / "whole.zarr"))
        processes = [
            subprocess.Popen(
                tiekd_command(*cache_args(sample, tmp_path / "s.zarr", None, "--shard", f"{i}/2")),
                env=subprocess_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for i in range(2)
        ]
        outputs = [p.communicate(timeout=300)[0].decode() for p in processes]
        assert [p.returncode for p in processes] == [0, 0], outputs
        assert sum("wrote 4 frames" in o for o in outputs) == 2
        assert_same_store(tmp_path / "s.zarr", tmp_path / "whole.zarr")
        assert TeacherCache.open(tmp_path / "s.zarr").complete


    @pytest.mark.slow
    def test_two_teachers_into_one_group_at_once_one_is_refused(self, sample, tmp_path, cli, subprocess_env):
        """Started together, two runs of different teachers (seeds 0 and 1) into one group: one
        fills it, the other is refused with the differences; the group holds the winner's maps."""
        for attempt in range(2):
            store = tmp_path / f"s{attempt}.zarr"
            processes = [
                subprocess.Popen(
                    tiekd_command(*cache_args(sample, store, sample.test_split, "--teacher-arg", f"seed={seed}")),
                    env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                )  # fmt: skip
                for seed in (0, 1)
            ]
            outputs = [p.communicate(timeout=300)[0].decode() for p in processes]
            codes = [p.returncode for p in processes]
            assert sorted(codes) == [0, 1], outputs
            loser = outputs[codes.index(1)]
            assert "was made differently" in loser and "Traceback" not in loser, loser
            winner = cli(*cache_args(sample, tmp_path / f"w{attempt}.zarr", sample.test_split,
                                     "--teacher-arg", f"seed={codes.index(0)}"))  # fmt: skip
            assert winner.exit_code == 0
            assert_same_store(store, tmp_path / f"w{attempt}.zarr")


def test_a_split_file_name_a_group_cannot_hold_gives_a_valid_group_name(sample, tmp_path, cli):
    """``_my split.txt`` -> group ``my_split``, found again by the split file; no blame on --split-name."""
    split = tmp_path / "_my split.txt"
    shutil.copy(sample.test_split, split)
    result = cli(*cache_args(sample, tmp_path / "s.zarr", split))
    assert result.exit_code == 0, result.output
    assert TeacherCache.open_for_split(tmp_path / "s.zarr", None, None, split).location.endswith("row_prior/my_split")


class TestRefusals:
    def test_other_teacher_refused_store_untouched_then_overwrite(self, sample, tmp_path, cli):
        store = tmp_path / "s.zarr"
        cli(*cache_args(sample, store, sample.test_split))
        before = store_arrays(store)
        result = cli(*cache_args(sample, store, sample.test_split, "--no-flip-tta"))
        assert result.exit_code == 1
        assert "was made differently (flip_tta: True in the store vs False now)" in result.output
        assert "Traceback" not in result.output
        np.testing.assert_array_equal(store_arrays(store)["depth"], before["depth"])
        assert cli(*cache_args(sample, store, sample.test_split, "--no-flip-tta", "--overwrite")).exit_code == 0
        assert TeacherCache.open(store).attrs["flip_tta"] is False

    def test_overwrite_with_shards_refused(self, sample, tmp_path, cli):
        result = cli(*cache_args(sample, tmp_path / "s.zarr", None, "--overwrite", "--shard", "0/2"))
        assert result.exit_code == 1 and "--overwrite with --shard" in result.output


def broken_copy(sample, tmp_path, mutate):
    """A copy of the sample's test data whose first image ``mutate(path)`` damages."""
    root = tmp_path / "raw"
    shutil.copytree(sample.data_root, root)
    first = read_split(sample.test_split)[0]
    mutate(root / first.rgb)
    return root, first


class TestBadInput:
    @pytest.mark.parametrize(
        "damage, fragment",
        [
            (lambda p: p.unlink(), "is not under --data-root"),
            (lambda p: p.write_bytes(b"garbage"), "is not a readable image"),
            (lambda p: Image.new("RGB", (1216, 300)).save(p), "smaller than the 352x1216 crop"),
            (lambda p: Image.fromarray(np.full((375, 1242), 40000, np.uint16)).save(p), "is not an 8-bit image"),
        ],
    )
    def test_damaged_image_names_it_and_keeps_the_store(self, sample, tmp_path, cli, damage, fragment):
        store = tmp_path / "s.zarr"
        assert cli(*cache_args(sample, store, sample.test_split)).exit_code == 0
        before = store_arrays(store)
        root, first = broken_copy(sample, tmp_path, damage)
        args = cache_args(sample, store, sample.test_split, "--overwrite")
        args[args.index("--data-root") + 1] = root
        result = cli(*args)
        assert result.exit_code == 1 and fragment in result.output and "Traceback" not in result.output
        [error] = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert error.count(first.rgb) == 1
        if "smaller" not in fragment and "readable" not in fragment and "8-bit" not in fragment:
            np.testing.assert_array_equal(store_arrays(store)["depth"], before["depth"])

    @pytest.mark.parametrize(
        "teacher, fragment",
        [
            ("python:toy_teachers:nan_teacher", "contains NaN or inf"),
            ("python:toy_teachers:two_channel_teacher", "expected (B, 1, H, W) or (B, H, W)"),
            ("bogus:x", "is not KIND:TARGET"),
            ("export:/missing/teacher.pt2", "does not exist"),
        ],
    )
    def test_bad_teachers(self, sample, tmp_path, cli, teacher, fragment):
        args = cache_args(sample, tmp_path / "s.zarr", sample.test_split)
        args[args.index("--teacher") + 1] = teacher
        result = cli(*args)
        assert result.exit_code == 1 and fragment in result.output and "Traceback" not in result.output

    @pytest.mark.parametrize(
        "teacher, extra, fragment",
        [
            ("negative_teacher", (), "100.0% of the teacher's depth for {first} lies outside [0.001, 80] m"),
            ("small_map_teacher", (), "returned 10x10 depth for a 352x1216 input"),
            ("raising_teacher", (), "raising_teacher failed on the batch starting at {first} (RuntimeError: the teacher broke)"),
            ("row_prior", ("--teacher-input", "100000x100000"), "--teacher-input 100000x100000 is larger than 4x"),
        ],
    )
    def test_teacher_faults_are_one_line(self, sample, tmp_path, cli, teacher, extra, fragment):
        args = cache_args(sample, tmp_path / "s.zarr", sample.test_split, *extra)
        args[args.index("--teacher") + 1] = f"python:toy_teachers:{teacher}"
        result = cli(*args)
        first = read_split(sample.test_split)[0].rgb
        assert result.exit_code == 1 and "Traceback" not in result.output
        [error] = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert fragment.format(first=first) in error

    def test_clipping_limit_keeps_stored_frames(self, sample, tmp_path):
        """A refused frame stops the run; frames stored before stay; a higher limit completes it."""
        from tiekd.stages.cache_teacher import CacheTeacherConfig, run

        cfg = CacheTeacherConfig(
            teacher=TEACHER, data_root=sample.data_root, split=sample.test_split, out=str(tmp_path / "s.zarr"),
            workers=0, batch_size=1, frames_per_shard=2, max_depth=40.0, max_clipped_share=1.0, shard=(0, 2),
        )
        run(cfg)  # frames 0 and 1, clipped rows above 40 m counted
        before = store_arrays(tmp_path / "s.zarr")
        with pytest.raises(TeacherError, match=r"% of the teacher's depth for .* lies outside \[0.001, 40\] m"):
            run(dataclasses.replace(cfg, shard=(0, 1), max_clipped_share=0.02))
        after = store_arrays(tmp_path / "s.zarr")
        for name in ("depth", "done", "clipped"):
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
        run(dataclasses.replace(cfg, shard=(0, 1)))
        cache = TeacherCache.open(tmp_path / "s.zarr")
        assert before["done"].tolist() == [True, True, False, False]
        assert cache.complete and (cache.clipped > 0).all()

    def test_nan_names_the_sample(self, sample, tmp_path, cli):
        args = cache_args(sample, tmp_path / "s.zarr", sample.test_split)
        args[args.index("--teacher") + 1] = "python:toy_teachers:nan_teacher"
        assert read_split(sample.test_split)[1].rgb in cli(*args).output

    def test_roots_split_and_target(self, sample, tmp_path, cli):
        def run(**change):
            args = cache_args(sample, tmp_path / "s.zarr", sample.test_split)
            for flag, value in change.items():
                args[args.index(f"--{flag.replace('_', '-')}") + 1] = value
            return cli(*args)

        assert "--data-root /nope is not an existing directory" in run(data_root="/nope").output
        assert "split file /nope.txt does not exist" in run(split="/nope.txt").output
        bad_split = tmp_path / "bad.txt"
        bad_split.write_text("a.png None 721\nonly_two fields\n")
        assert f"{bad_split}:2: expected" in run(split=bad_split).output
        escaping = tmp_path / "escape.txt"
        escaping.write_text("../../etc/passwd None 721\n")
        assert "escapes its root" in run(split=escaping).output
        result = run(out="/proc/tiekd.zarr")
        assert result.exit_code == 1 and "choose a writable" in result.output
        missing_gt = cache_args(sample, tmp_path / "s.zarr", sample.test_split, "--gt-root", tmp_path)
        assert "is not under --gt-root" in cli(*missing_gt).output

    def test_verbose_shows_the_traceback(self, sample, tmp_path, cli):
        result = cli("--verbose", *cache_args(sample, tmp_path / "s.zarr", "/nope.txt"))
        assert result.exit_code == 1 and "Traceback" in result.output


def _unshare_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-rm", "true"]).returncode == 0


FULL_DISK_BYTES = 600_000
"""A tmpfs of this size holds the store's metadata and its first 2-frame shard (~415 kB), not the second."""


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm to mount a small tmpfs")
def test_disk_full_is_one_line_and_keeps_the_stored_frames(sample, tmp_path, subprocess_env):
    """A real full disk: a tiny tmpfs mounted in a private mount namespace."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f'mount -t tmpfs -o size={FULL_DISK_BYTES} none "$1" && shift && "$@"; echo "exit $?"; '
        f'{" ".join(tiekd_command("cache", "info", disk / "s.zarr"))}'
    )
    args = tiekd_command(*cache_args(sample, disk / "s.zarr", sample.test_split))
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(disk), *args],
        env=subprocess_env, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert "exit 1" in output and "Traceback" not in output, output
    [error] = [line for line in output.splitlines() if line.startswith("Error:")]
    assert "failed (No space left on device); free space" in error
    assert "row_prior/test: 2/4 frames" in output  # the first shard stayed done


def test_fsspec_url_store(sample, cli):
    """Any fsspec URL works as --out; memory:// keeps the store in this process."""
    url = f"memory://tiekd-test/{time.time_ns()}/s.zarr"
    result = cli(*cache_args(sample, url, sample.test_split))
    assert result.exit_code == 0, result.output
    cache = TeacherCache.open(url)
    assert cache.complete and len(cache) == 4 and cache.depth(3).shape == (352, 1216)
    assert "remote" in cli("cache", "info", url).output
