"""Losses of TIE-KD and of its baselines, method.md section 5.

* :func:`tiekd_loss` / :func:`tiekd_loss_terms`: the TIE-KD loss
  ``10 * (alpha * L_DPM + (1 - alpha) * (1 - SSIM(depth_S, depth_T)))`` from the student's DPM logits
  and the teacher's depth map. L_DPM is the mean over pixels of KL(DPM_T || DPM_S) with the
  released code's ``log(p_S + 1e-7)``.
* :func:`ssim` / :func:`ssim_map`: SSIM on depth maps in metres (11x11 Gaussian window, zero padding),
  "paper" (plain, float64) or "code" (the released ``ssim.py``: abs() variances, float32; see
  :data:`SSIM_PRECISION` for why each form keeps its precision).
* :data:`RESPONSE_LOSSES` / :func:`response_loss`: the response-KD baselines (student depth against
  teacher depth, with either SSIM form), and :func:`supervised_si_loss`, the supervised baseline on
  sparse LiDAR ground truth.

The TIE-KD loss is lean. Written naively (teacher DPM tensor, softmax, elementwise KL, autograd)
its forward and backward hold about seven to nine tensors the size of the student logits, GBs
for a batch of KITTI crops. Here one autograd function, :class:`_DpmDistillation`, walks the map
a few rows at a time: it builds the teacher DPM of each chunk on the fly, and only on the bins
where it is not zero (:func:`~tiekd.pipeline.dpm.teacher_dpm_window`, about 51 of 257 on
KITTI), keeps per-pixel KL, expected depth and log-normaliser, and in backward recomputes the
chunk and writes the exact gradient straight into the gradient of the logits. Nothing the size
of the logits is saved beyond the logits themselves (bench/bench_loss.py: about 0.2x the naive
form's peak memory and 0.35x its time, same value). Every loss is computed in float32 at least,
also under autocast.

Shapes: depth maps and masks (B, 1, H, W) (metres, bool); logits (B, K, H, W); losses are
scalar tensors.
"""

import math

import torch
import torch.nn.functional as F

from tiekd.pipeline.dpm import bin_centres, check_dpm_options, teacher_dpm_window

TIEKD_SCALE = 10.0
"""method.md section 5: L = 10 * (alpha * L_DPM + (1 - alpha) * L_Depth)."""

RELEASED_ABLATION_SCALE = 1.0
"""The released single-term ablations have no x10: L_DPM only is the mean KL (the depther's
``_parse_losses`` averages L_DPM_loss's map), L_Depth only is 1 - SSIM (``l_depth_loss.py`` l.46).
It matters: gradients are clipped at norm 35 either way. :func:`tiekd.pipeline.methods.loss_scale`
gives it to the code form's alpha 0 and 1."""

TIEKD_ALPHA = 0.1
"""method.md section 5: weight of L_DPM in the TIE-KD loss."""

KL_EPSILON = 1e-7
"""method.md section 5 (released code): KL uses log(p_S + 1e-7)."""

SSIM_WINDOW_SIZE = 11
"""method.md section 5: side of the Gaussian SSIM window, pixels (zero padding of 5)."""

SSIM_WINDOW_SIGMA = 1.5
"""method.md section 5: standard deviation of the Gaussian SSIM window, pixels."""

SSIM_C1 = 0.01**2
"""method.md section 5: SSIM luminance stabiliser, (0.01 * L)**2 with L = 1 as in the authors' code."""

SSIM_C2 = 0.03**2
"""method.md section 5: SSIM contrast stabiliser, (0.03 * L)**2 with L = 1."""

SSIM_FORMS = ("paper", "code")
"""SSIM forms: plain SSIM in float64, or the released ``ssim.py`` (abs() variances, float32)."""

SSIM_PRECISION = {"paper": torch.float64, "code": torch.float32}
"""Precision of SSIM's moments per form. Paper: float64, since on depths in metres E[x^2] - E[x]^2
in float32 loses about 4e-4 m^2 at 80 m, half of C2: SSIM of far flat regions is off by several
hundredths (1 cm noise at 60 m: 0.97 exact; 0.91-0.96 in float32, by summation order). Code:
float32 in the released order of operations, as the authors trained (issue 17, item 10): the same
op on the same backend gives their value; across backends only the size of the error is alike."""

SI_LOG_EPSILON = 1e-3
"""Authors' SigLoss (after AdaBins): g = ln(pred + 1e-3) - ln(target + 1e-3)."""

SI_MEAN_WEIGHT = 0.15
"""Authors' SigLoss: sqrt(Var(g) + 0.15 * mean(g)^2), i.e. SILog with lambda = 1 - 0.15 = 0.85."""

SI_VARIANCE_CORRECTION = 1
"""Authors' SigLoss uses torch.var's default, the unbiased variance (divides by N - 1)."""

RESPONSE_SSIM_WEIGHT = 1.5
"""method.md section 5 (authors' configs, loss_weight=1.5): SSIM term 1.5 * (1 - SSIM)."""

CHUNK_ELEMENTS = 2**21
"""Logit elements the lean DPM loss handles at once (8 MiB in float32): its temporaries stay a few
percent of KITTI-sized logits, and per-chunk overhead does not show (measured with bench/bench_loss.py)."""


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float32, or float64 when the input is float64 (half precision is never used for losses)."""
    return torch.promote_types(tensor.dtype, torch.float32)


def _masked_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (B, 1, H, W) over pixels where ``valid`` is true (all when None); 0 if none are."""
    if valid is None:
        return values.mean()
    valid = valid.expand_as(values)
    return torch.where(valid, values, 0).sum() / valid.sum().clamp(min=1)


def _window_mean(maps: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted local means of (B, C, H, W) maps, zero padding; the 2-D window is separable."""
    radius = SSIM_WINDOW_SIZE // 2
    offsets = torch.arange(SSIM_WINDOW_SIZE, device=maps.device, dtype=maps.dtype) - radius
    profile = torch.exp(-(offsets**2) / (2 * SSIM_WINDOW_SIGMA**2))
    profile = profile / profile.sum()
    channels = maps.shape[1]
    vertical = profile.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    horizontal = profile.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    maps = F.conv2d(maps, vertical, padding=(radius, 0), groups=channels)
    return F.conv2d(maps, horizontal, padding=(0, radius), groups=channels)


def ssim_map(x: torch.Tensor, y: torch.Tensor, *, form: str = "paper") -> torch.Tensor:
    """Per-pixel SSIM of two depth maps (B, 1, H, W) metres -> (B, 1, H, W), in the input's dtype.

    ``form`` "paper": plain SSIM, moments in float64; "code": the released ``ssim.py``
    (:func:`_released_ssim_map`). Differentiable in both inputs.
    """
    if form not in SSIM_FORMS:
        raise ValueError(f"unknown SSIM form {form!r}; expected one of {SSIM_FORMS}")
    dtype = _compute_dtype(x)
    precision = SSIM_PRECISION[form] if x.device.type != "mps" else torch.float32  # MPS has no float64
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.to(precision), y.to(precision)
        if form == "code":
            return _released_ssim_map(x, y).to(dtype)
        moments = _window_mean(torch.cat([x, y, x * x, y * y, x * y], dim=1))
        mean_x, mean_y, mean_xx, mean_yy, mean_xy = moments.split(1, dim=1)
        var_x = mean_xx - mean_x**2
        var_y = mean_yy - mean_y**2
        cov = mean_xy - mean_x * mean_y
        luminance = (2 * mean_x * mean_y + SSIM_C1) / (mean_x**2 + mean_y**2 + SSIM_C1)
        structure = (2 * cov + SSIM_C2) / (var_x + var_y + SSIM_C2)
        return (luminance * structure).to(dtype)


def _released_ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM map as the released ``_ssim`` computes it (TIE-KD ``depth/models/losses/ssim.py``
    l.14-44): one 2-D 11x11 window convolution per moment, abs() of both variances and the
    covariance, its order of operations; (B, 1, H, W) -> (B, 1, H, W) in the inputs' dtype."""
    radius = SSIM_WINDOW_SIZE // 2
    profile = torch.tensor(
        [math.exp(-((i - radius) ** 2) / (2 * SSIM_WINDOW_SIGMA**2)) for i in range(SSIM_WINDOW_SIZE)], dtype=x.dtype
    )
    profile = (profile / profile.sum()).unsqueeze(1)
    window = profile.mm(profile.t()).view(1, 1, SSIM_WINDOW_SIZE, SSIM_WINDOW_SIZE).to(x.device)

    def local_mean(maps):
        return F.conv2d(maps, window, padding=radius)

    mean_x, mean_y = local_mean(x), local_mean(y)
    mean_x_sq, mean_y_sq, mean_xy = mean_x.pow(2), mean_y.pow(2), mean_x * mean_y
    var_x = (local_mean(x * x) - mean_x_sq).abs()
    var_y = (local_mean(y * y) - mean_y_sq).abs()
    cov = (local_mean(x * y) - mean_xy).abs()
    numerator = (2 * mean_xy + SSIM_C1) * (2 * cov + SSIM_C2)
    return numerator / ((mean_x_sq + mean_y_sq + SSIM_C1) * (var_x + var_y + SSIM_C2))


def ssim(x: torch.Tensor, y: torch.Tensor, *, form: str = "paper", valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM of depth maps x (prediction) and y (target), (B, 1, H, W) metres, over the map or
    over ``valid`` pixels.

    With ``valid``, y outside it (a missing target: a rotated-in corner, no LiDAR) is replaced by x,
    detached, before the windows are taken: the 11x11 windows of valid pixels near the edge see
    agreement there instead of whatever fills the hole (0, e_0), which would pull x towards it.
    So the gradient at valid pixels does not depend on y's values outside ``valid``.
    """
    if valid is not None:
        y = torch.where(valid, y, x.detach())
    return _masked_mean(ssim_map(x, y, form=form), valid)


def _row_chunks(logits: torch.Tensor) -> list[slice]:
    """Slices of rows of (B, K, H, W) logits holding about CHUNK_ELEMENTS elements each."""
    batch, bins, height, width = logits.shape
    rows = max(1, CHUNK_ELEMENTS // max(1, batch * bins * width))
    return [slice(start, min(start + rows, height)) for start in range(0, height, rows)]


def _forward_chunk(
    logits: torch.Tensor, window: tuple[torch.Tensor, torch.Tensor], centres: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KL(t || s), depth_S and log sum_i exp(z_i) of one chunk of logits (B, K, h, W), each (B, 1, h, W).

    ``window`` is (bins, t) of the teacher window, ``centres`` (1, K, 1, 1). s = w / sum_i w_i with
    w = exp(z - max_i z_i), read from the strided chunk without a contiguous copy. Sums are
    elementwise rather than a matmul, which TF32 on a GPU would round to centimetres.
    """
    peak = logits.amax(dim=1, keepdim=True).to(dtype)
    weights = torch.sub(logits, peak).exp_()
    normaliser = weights.sum(dim=1, keepdim=True)
    depth = (weights * centres).sum(dim=1, keepdim=True) / normaliser
    window_bins, teacher = window
    ratio = teacher / (weights.gather(1, window_bins) / normaliser + KL_EPSILON)
    kl = torch.special.xlogy(teacher, ratio).sum(dim=1, keepdim=True)
    return kl, depth, peak + normaliser.log()


def _teacher_chunk(
    teacher_depth: torch.Tensor, edges: torch.Tensor, sigma: float, form: str, rows: slice
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bins (B, N, h, W) of the teacher DPM window of rows ``rows`` and its probabilities there."""
    first_bin, window = teacher_dpm_window(teacher_depth[:, :, rows], edges, sigma, form)
    offsets = torch.arange(window.shape[1], device=window.device).view(1, -1, 1, 1)
    return first_bin + offsets, window


class _DpmDistillation(torch.autograd.Function):
    """Per-pixel KL(DPM_T || DPM_S) and student depth from logits, a chunk of rows at a time.

    Forward: (logits (B, K, H, W), teacher depth (B, 1, H, W) m, edges (K+1,), sigma, form) ->
    (kl (B, 1, H, W) nats, depth_S (B, 1, H, W) m). With s = softmax(z), t the teacher DPM,
    kl = sum_i t_i log(t_i / (s_i + eps)) and depth_S = sum_i s_i c_i. The sum in kl runs over the
    teacher's window only (:func:`teacher_dpm_window`): every other t_i is 0 and adds nothing.
    Saved for backward: the logits, the teacher depth, depth_S and log sum_i exp(z_i) per pixel.
    """

    @staticmethod
    def forward(ctx, logits, teacher_depth, edges, sigma, form):
        dtype = _compute_dtype(logits)
        centres = bin_centres(edges).to(device=logits.device, dtype=dtype).view(1, -1, 1, 1)
        batch, _, height, width = logits.shape
        kl = logits.new_empty((batch, 1, height, width), dtype=dtype)
        depth, log_normaliser = torch.empty_like(kl), torch.empty_like(kl)
        for rows in _row_chunks(logits):
            window = _teacher_chunk(teacher_depth, edges, sigma, form, rows)
            kl[:, :, rows], depth[:, :, rows], log_normaliser[:, :, rows] = _forward_chunk(
                logits[:, :, rows], window, centres, dtype
            )
        ctx.save_for_backward(logits, teacher_depth, edges, depth, log_normaliser)
        ctx.sigma, ctx.form = sigma, form
        return kl, depth

    @staticmethod
    def backward(ctx, grad_kl, grad_depth):
        """Exact gradient, recomputed chunk by chunk straight into the gradient of the logits."""
        logits, teacher_depth, edges, depth, log_normaliser = ctx.saved_tensors
        dtype = _compute_dtype(logits)
        centres = bin_centres(edges).to(device=logits.device, dtype=dtype).view(1, -1, 1, 1)
        grad_logits = torch.empty_like(logits)
        for rows in _row_chunks(logits):
            out = grad_logits[:, :, rows]
            work = out if out.dtype == dtype else torch.empty(out.shape, dtype=dtype, device=out.device)
            torch.sub(logits[:, :, rows], log_normaliser[:, :, rows], out=work).exp_()
            window = _teacher_chunk(teacher_depth, edges, ctx.sigma, ctx.form, rows)
            gradients = grad_kl[:, :, rows], grad_depth[:, :, rows], depth[:, :, rows]
            _logit_gradient_(work, window, gradients, centres)
            if work is not out:
                out.copy_(work)
        return grad_logits, None, None, None, None


def _logit_gradient_(
    student: torch.Tensor,
    window: tuple[torch.Tensor, torch.Tensor],
    gradients: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    centres: torch.Tensor,
) -> None:
    """Overwrite s = softmax(z) (B, K, h, W) with dL/dz for one chunk.

    ``window`` is (bins, t) of the teacher window, ``gradients`` (gk, gd, depth_S) the incoming
    gradients of kl and depth_S and depth_S itself, each (B, 1, h, W); ``centres`` (1, K, 1, 1).
    For one pixel, kl = const - sum_i t_i log(s_i + eps) and ds_i/dz_j = s_i (delta_ij - s_j), so
    with r_i = t_i s_i / (s_i + eps) (non-zero on the window only):
    dkl/dz_j = -sum_i t_i / (s_i + eps) * s_i (delta_ij - s_j) = -r_j + s_j sum_i r_i, and
    ddepth/dz_j = s_j (c_j - depth_S). (With eps = 0 the first is the familiar s - t.) So
    dL/dz = s * (gk * sum_i r_i - gd * depth_S + gd * c) - gk * r.
    """
    window_bins, teacher = window
    g_kl, g_depth, depth = gradients
    window_student = student.gather(1, window_bins)
    weighted = teacher * window_student / (window_student + KL_EPSILON)
    per_pixel = g_kl * weighted.sum(dim=1, keepdim=True) - g_depth * depth
    student.mul_(torch.addcmul(per_pixel, g_depth, centres))
    student.scatter_add_(1, window_bins, -g_kl * weighted)


def dpm_distillation_maps(
    student_logits: torch.Tensor, teacher_depth: torch.Tensor, edges: torch.Tensor, *, sigma: float, form: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel KL(DPM_T || DPM_S) in nats and student depth in metres, both (B, 1, H, W).

    Lean (see the module docstring); gradients flow into ``student_logits`` only.
    """
    check_dpm_options(sigma, form)
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        return _DpmDistillation.apply(student_logits, teacher_depth.detach(), edges, sigma, form)


def tiekd_loss_terms(
    student_logits: torch.Tensor,
    teacher_depth: torch.Tensor,
    edges: torch.Tensor,
    *,
    alpha: float = TIEKD_ALPHA,
    sigma: float,
    form: str = "paper",
    valid: torch.Tensor | None = None,
    scale: float = TIEKD_SCALE,
) -> dict[str, torch.Tensor]:
    """TIE-KD loss and its two terms: {"total", "dpm", "depth"}, scalar tensors (float32 at least).

    student_logits (B, K, H, W); teacher_depth (B, 1, H, W) metres, given no gradient; edges the
    K+1 bin edges; ``valid`` (B, 1, H, W) bool restricts both terms to those pixels (all when
    None). Teacher depth outside ``valid`` may be anything (0, NaN): the DPM reads it as e_0 (and
    leaves those pixels out of the mean), SSIM windows reaching there see the student's own depth
    (:func:`ssim`). "dpm" is the mean KL(DPM_T || DPM_S), "depth" is
    1 - SSIM(depth_S, depth_T) in the SSIM form of the same name (:func:`ssim_map`), and
    total = scale * (alpha * dpm + (1 - alpha) * depth), scale 10 in the paper (the released
    single-term ablations have none: scale 1, see :data:`RELEASED_ABLATION_SCALE`).
    """
    teacher_depth = teacher_depth.detach()
    if valid is not None:
        teacher_depth = torch.where(valid, teacher_depth, edges[0].to(teacher_depth))
    kl, student_depth = dpm_distillation_maps(student_logits, teacher_depth, edges, sigma=sigma, form=form)
    dpm_term = _masked_mean(kl, valid)
    similarity = ssim(student_depth, teacher_depth.to(student_depth.dtype), form=form, valid=valid)
    depth_term = 1 - similarity
    total = scale * (alpha * dpm_term + (1 - alpha) * depth_term)
    return {"total": total, "dpm": dpm_term, "depth": depth_term}


def tiekd_loss(
    student_logits: torch.Tensor,
    teacher_depth: torch.Tensor,
    edges: torch.Tensor,
    *,
    alpha: float = TIEKD_ALPHA,
    sigma: float,
    form: str = "paper",
    valid: torch.Tensor | None = None,
    scale: float = TIEKD_SCALE,
) -> torch.Tensor:
    """The TIE-KD loss, a scalar tensor; arguments as for :func:`tiekd_loss_terms`."""
    terms = tiekd_loss_terms(
        student_logits, teacher_depth, edges, alpha=alpha, sigma=sigma, form=form, valid=valid, scale=scale
    )
    return terms["total"]


def mse_loss(pred: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared depth difference (m^2) over the map or the ``valid`` pixels."""
    dtype = _compute_dtype(pred)
    return _masked_mean((pred.to(dtype) - teacher.detach().to(dtype)) ** 2, valid)


def si_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Scale-invariant log loss sqrt(Var(g) + 0.15 * mean(g)^2), g = ln(pred + 1e-3) - ln(target + 1e-3).

    Over the map or the ``valid`` pixels; Var is the unbiased variance, as in the authors' code.
    """
    dtype = _compute_dtype(pred)
    pred, target = pred.to(dtype), target.detach().to(dtype)
    if valid is not None:
        valid = valid.expand_as(pred)
        pred, target = pred[valid], target[valid]
    g = torch.log(pred + SI_LOG_EPSILON) - torch.log(target + SI_LOG_EPSILON)
    return torch.sqrt(g.var(correction=SI_VARIANCE_CORRECTION) + SI_MEAN_WEIGHT * g.mean() ** 2)


def ssim_loss(pred: torch.Tensor, teacher: torch.Tensor, valid=None, *, form: str = "paper") -> torch.Tensor:
    """Response-KD SSIM loss 1.5 * (1 - SSIM(pred, teacher)), SSIM in ``form`` (:func:`ssim_map`)."""
    return RESPONSE_SSIM_WEIGHT * (1 - ssim(pred, teacher.detach(), form=form, valid=valid))


RESPONSE_LOSSES = {
    "res-mse": ("mse",),
    "res-si": ("si",),
    "res-ssim": ("ssim",),
    "res-ssim-mse": ("ssim", "mse"),
    "res-ssim-si": ("ssim", "si"),
}
"""Response-KD baselines and the terms each sums (:func:`response_loss`). As released: MSE has no
weight (the released MSE_loss ignores its loss_weight), SI and MSE are added at weight 1 to
1.5 * (1 - SSIM), SI's variance is the unbiased one."""


def response_loss(
    method: str, pred: torch.Tensor, teacher: torch.Tensor, *, valid: torch.Tensor | None = None, form: str = "paper"
) -> torch.Tensor:
    """The response-KD loss ``method`` (a RESPONSE_LOSSES key) of depth pred against teacher depth,
    (B, 1, H, W) metres, over the map or the ``valid`` pixels; its SSIM term in ``form``."""
    terms = {
        "mse": lambda: mse_loss(pred, teacher, valid),
        "si": lambda: si_loss(pred, teacher, valid),
        "ssim": lambda: ssim_loss(pred, teacher, valid, form=form),
    }
    return sum(terms[name]() for name in RESPONSE_LOSSES[method])


def supervised_si_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Supervised baseline: SI loss of depth (B, 1, H, W) m against sparse LiDAR GT, pixels with gt > 0."""
    return si_loss(pred, gt, valid=gt > 0)
