"""The deployed form of a student (pipeline/deploy/export.py): bins on the last axis, one softmax, the
same numbers as the checkpoint's form; every student family the README offers exports to ONNX.

The families are tiny random-weight members (timm's test models, or a family's own model with a few
small blocks through a preset), so no weights are downloaded."""

import math

import numpy as np
import onnx
import pytest
import torch

from tiekd.data.kitti import KITTI
from tiekd.pipeline import students
from tiekd.pipeline.deploy.export import (
    VERIFY_TOLERANCE,
    DeployedStudent,
    checkpoint_outputs,
    entropy_difference,
    export_onnx,
    relative_difference,
    run_onnx,
)
from tiekd.pipeline.dpm import bin_centres, bin_edges, depth_from_bins_last

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_FAMILIES = {
    # name: preset options (a timm test model needs none)
    "test_resnet": None,
    "test_vit": None,
    "tiny_deit": dict(model="deit_tiny_distilled_patch16_224", embed_dim=16, depth=3, num_heads=1),
    "tiny_swin": dict(model="swin_tiny_patch4_window7_224", embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1,) * 4),
}
"""One tiny member of every family the README offers: a CNN (the others need nothing a ResNet does not:
no size-specific code), ViT, DeiT, Swin."""

SIZE = (40, 72)
"""Export size: not a multiple of 16 or 32, so the padded input (ViT position embeddings) is tested too."""

BINS = KITTI.depth_bins | {"n_bins": 33}


def tiny_student(name, monkeypatch, head="dpm"):
    if TINY_FAMILIES[name] is not None:
        monkeypatch.setitem(students.STUDENTS, name, TINY_FAMILIES[name])
    torch.manual_seed(0)
    return students.build_student(name, head=head, **BINS).eval()


def test_bins_last_readout_equals_the_float64_definition():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, BINS["n_bins"], generator=generator) * 6
    logits[0, 0, 0, 3] = 200.0  # a one-bin pixel: every other probability underflows, entropy 0
    centres = bin_centres(bin_edges(BINS["min_depth"], BINS["max_depth"], BINS["n_bins"]))
    depth, entropy = depth_from_bins_last(logits, centres, with_entropy=True)
    x = logits.double().numpy()
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want_entropy = -(p * np.log(np.where(p > 0, p, 1))).sum(-1, keepdims=True)
    np.testing.assert_allclose(depth.numpy(), p @ centres.double().numpy()[:, None], rtol=1e-5)
    np.testing.assert_allclose(entropy.numpy(), want_entropy, atol=1e-5)
    assert abs(entropy[0, 0, 0, 0].item()) < 1e-6 and entropy.max().item() <= math.log(BINS["n_bins"]) + 1e-5
    torch.testing.assert_close(depth_from_bins_last(logits, centres), depth)


@pytest.mark.parametrize("head", ["dpm", "regression"])
def test_deployed_form_equals_the_checkpoint_form(monkeypatch, head):
    student = tiny_student("test_resnet", monkeypatch, head=head)
    image = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with_entropy = head == "dpm"
    want = checkpoint_outputs(student, image, with_entropy=with_entropy)
    with torch.no_grad():
        got = DeployedStudent(student, with_entropy=with_entropy, input_size=SIZE)(image)
    got = [g.numpy() for g in (got if with_entropy else (got,))]
    assert [g.shape for g in got] == [w.shape for w in want] == [(2, 1, *SIZE)] * len(want)
    assert relative_difference(got[0], want[0]) < 1e-5
    if with_entropy:
        assert entropy_difference(got[1], want[1], BINS["n_bins"]) < 1e-5


@pytest.mark.parametrize("name", sorted(TINY_FAMILIES))
def test_every_family_exports_to_onnx_and_equals_its_checkpoint(monkeypatch, tmp_path, name):
    student = tiny_student(name, monkeypatch)
    model = DeployedStudent(student, with_entropy=True, input_size=SIZE)
    export_onnx(model, tmp_path / "s.onnx", SIZE, dynamic_batch=False)
    image = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(2))
    want = checkpoint_outputs(student, image, with_entropy=True)
    got = run_onnx(tmp_path / "s.onnx", image)
    heads = [n.op_type for n in onnx.load(str(tmp_path / "s.onnx")).graph.node if n.op_type == "LogSoftmax"]
    assert heads == ["LogSoftmax"]  # one (attention has softmaxes of its own); its exp is the DPM
    assert relative_difference(got[0], want[0]) <= VERIFY_TOLERANCE
    assert entropy_difference(got[1], want[1], BINS["n_bins"]) <= VERIFY_TOLERANCE
    # The checkpoint's own student is untouched (a ViT's embeddings are resampled on a copy).
    torch.testing.assert_close(torch.from_numpy(checkpoint_outputs(student, image, with_entropy=False)[0]),
                               torch.from_numpy(want[0]))  # fmt: skip


def test_depth_only_graph_has_one_softmax_over_the_last_axis(monkeypatch, tmp_path):
    model = DeployedStudent(tiny_student("test_resnet", monkeypatch), input_size=SIZE)
    export_onnx(model, tmp_path / "s.onnx", SIZE, dynamic_batch=False)
    softmaxes = [n for n in onnx.load(str(tmp_path / "s.onnx")).graph.node if "Softmax" in n.op_type]
    assert [n.op_type for n in softmaxes] == ["Softmax"]
    assert [a.i for a in softmaxes[0].attribute if a.name == "axis"] in ([-1], [3])
