"""``tiekd export --format executorch``: a .pte (XNNPACK) run by ExecuTorch's runtime equals the checkpoint.

ExecuTorch is the optional ``mobile`` extra (heavy: torchao, coremltools, scikit-learn, pandas) and in
``test``: a clone without it skips the .pte test, CI (which installs ``.[test]``) runs it."""

import importlib.util
import os

import numpy as np
import pytest
import torch

from tiekd.data.kitti import KITTI
from tiekd.pipeline.checkpoint import save_checkpoint
from tiekd.pipeline.students import build_student

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HAS_EXECUTORCH = importlib.util.find_spec("executorch") is not None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_student("test_resnet", **(KITTI.depth_bins | {"n_bins": 16})).eval()
    path = tmp_path_factory.mktemp("mobile") / "dpm.pt"
    save_checkpoint(
        path, {"model": model.state_dict(), "architecture": model.arch, "normalisation": model.normalisation}
    )
    return path


@pytest.mark.slow
@pytest.mark.skipif(
    not HAS_EXECUTORCH and not os.environ.get("CI"),  # CI installs .[test], which has it: fail there, never skip
    reason="the optional executorch package (tiekd[mobile]) is not installed",
)
def test_pte_with_entropy_equals_the_checkpoint(checkpoint, tmp_path, cli):
    from executorch.runtime import Runtime

    from tiekd.pipeline.checkpoint import load_checkpoint, student_from_checkpoint
    from tiekd.pipeline.dpm import dpm_entropy

    out = tmp_path / "s.pte"
    result = cli("export", "--checkpoint", checkpoint, "--out", out, "--format", "executorch", "--input", "32x64",
                 "--with-entropy")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ExecuTorch program (XNNPACK): input 1x3x32x64" in result.output and result.output.rstrip().endswith("OK")
    image = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(3))
    got = Runtime.get().load_program(str(out)).load_method("forward").execute([image])
    model = student_from_checkpoint(load_checkpoint(checkpoint)).eval()
    with torch.no_grad():
        depth, entropy = model.predict_depth(image), dpm_entropy(model(image))
    np.testing.assert_allclose(got[0].numpy(), depth.numpy(), rtol=1e-4)
    np.testing.assert_allclose(got[1].numpy(), entropy.numpy(), atol=1e-4)


def test_dynamic_batch_is_refused(checkpoint, tmp_path, cli):
    result = cli("export", "--checkpoint", checkpoint, "--out", tmp_path / "s.pte", "--format", "executorch",
                 "--dynamic")  # fmt: skip
    assert result.exit_code != 0 and "exports a batch of 1; leave out --dynamic" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "s.pte").exists()
