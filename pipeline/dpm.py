"""Depth bins and Depth Probability Maps (DPMs), method.md sections 2 and 3.

A DPM gives every pixel a probability distribution over K uniform depth bins on
[min_depth, max_depth]. The teacher's DPM is built on the fly from its cached depth map
(:func:`teacher_dpm`); the student's DPM is ``softmax(logits)`` over the bin axis, and its depth
is the expected bin centre (:func:`expected_depth`). :func:`dpm_entropy` measures how spread a
pixel's distribution is, for the explainability pictures.

Two teacher forms are offered:

* ``"paper"`` (default): the mass of N(d_T, sigma) in each bin, renormalised over the K bins.
* ``"code"``: what the authors' released code computes, kept to reproduce their tables: the
  Gaussian *density* at each bin centre, densities below 1e-16 replaced by -1000, then a softmax
  over those values. It is nearly flat over about 27 bins and its mean is biased near the range
  ends (method.md section 3).

Both honour the sigma they are given. A teacher DPM is non-zero only on a few dozen bins around
the depth: :func:`teacher_dpm_window` returns just those (the lean loss works on them),
:func:`teacher_dpm` the dense map (pictures, references). Teacher depth is clamped into the bin
range first.

Shapes: depth maps are (B, 1, H, W) in metres; DPMs and logits are (B, K, H, W).
"""

import math

import torch

DPM_FORMS = ("paper", "code")
"""Teacher DPM forms accepted by :func:`teacher_dpm` (method.md section 3)."""

CODE_FORM_DENSITY_FLOOR = 1e-16
"""Released code: Gaussian densities below this value are replaced by CODE_FORM_FILL."""

CODE_FORM_FILL = -1000.0
"""Released code: the value that replaces densities below CODE_FORM_DENSITY_FLOOR before the softmax."""

PAPER_TAIL_SIGMAS = 9.0
"""The "paper" DPM is taken as 0 beyond this many sigmas from the depth: Phi(-9) = 1.1e-19, far
below anything a float32 loss can see (KL terms of such bins are under 1e-17 nats)."""

RELEASED_CODE_SIGMA = 0.5
"""The sigma the released code uses in its full loss whatever the configuration says (method.md
section 3); the default of the "code" form's full loss (:func:`dpm_sigma`)."""

MAX_N_BINS = 4096
"""Most depth bins a DPM head may have: 16 times the paper's 257, bins of 2 cm over 80 m (finer
than the LiDAR GT). Every bin costs a (B, 1, H, W) map in the forward and the backward pass, so
far larger K only ends in an allocation failure."""


def bin_edges(min_depth: float, max_depth: float, n_bins: int) -> torch.Tensor:
    """Edges e_0..e_K of K uniform depth bins on [min_depth, max_depth], shape (K+1,), metres.

    Computed in float64 and rounded once to float32, so e_0 and e_K are the range ends exactly.
    """
    if n_bins < 1 or not min_depth < max_depth:
        raise ValueError(f"bins need n_bins >= 1 and min_depth < max_depth, got {n_bins}, {min_depth}, {max_depth}")
    return torch.linspace(min_depth, max_depth, n_bins + 1, dtype=torch.float64).float()


def bin_centres(edges: torch.Tensor) -> torch.Tensor:
    """Centres c_i = (e_{i-1} + e_i) / 2 of the bins, shape (K,), metres."""
    return (edges[:-1] + edges[1:]) / 2


def dpm_sigma(sigma: float | None, form: str, *, paper_sigma: float, alpha: float) -> tuple[float, str]:
    """The teacher DPM's sigma (metres) a run uses, and why.

    An explicit ``sigma`` wins. Otherwise the "paper" form takes ``paper_sigma``, the dataset's
    configured value (KITTI 0.8, NYU 0.15). The "code" form follows what the released code did with
    the same loss: the full loss (TIE_KD_loss) builds its L_DPM_loss without a sigma, so 0.5
    (RELEASED_CODE_SIGMA) whatever the config says; the L_DPM-only ablation (``alpha`` 1) builds
    L_DPM_loss with the configured sigma and uses it, so ``paper_sigma``.
    """
    if sigma is not None:
        return float(sigma), "given explicitly (--sigma or the --config file)"
    if form == "code" and alpha == 1:
        return float(paper_sigma), "code form, L_DPM only (alpha 1): the released L_DPM_loss uses the dataset's sigma"
    if form == "code":
        return RELEASED_CODE_SIGMA, "code form: the released TIE_KD_loss always uses 0.5"
    return float(paper_sigma), "paper form: the dataset's configured sigma"


def check_dpm_options(sigma: float, form: str) -> None:
    """Raise ValueError unless ``form`` is one of DPM_FORMS and ``sigma`` is positive (metres)."""
    if form not in DPM_FORMS:
        raise ValueError(f"unknown DPM form {form!r}; expected one of {DPM_FORMS}")
    if not sigma > 0:
        raise ValueError(f"the DPM sigma must be positive, got {sigma}")


def teacher_dpm(depth: torch.Tensor, edges: torch.Tensor, sigma: float, form: str = "paper") -> torch.Tensor:
    """Teacher DPM from teacher depth: (B, 1, H, W) metres -> (B, K, H, W) probabilities.

    ``edges`` are the K+1 bin edges (metres), ``sigma`` the Gaussian's standard deviation
    (metres), ``form`` "paper" or "code" (see the module docstring). Carries no gradient. The
    result has the dtype of ``depth`` (float32 at least) and lives on its device. Bins outside
    :func:`teacher_dpm_window` hold exactly 0.
    """
    first_bin, window = teacher_dpm_window(depth, edges, sigma, form)
    bins = first_bin + torch.arange(window.shape[1], device=depth.device).view(1, -1, 1, 1)
    dense = window.new_zeros((depth.shape[0], edges.numel() - 1, *depth.shape[2:]))
    return dense.scatter_(1, bins, window)


def teacher_dpm_window(
    depth: torch.Tensor, edges: torch.Tensor, sigma: float, form: str = "paper"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher DPM on the N consecutive bins around each pixel's depth that can hold mass.

    Returns ``first_bin`` (B, 1, H, W) int64 and ``window`` (B, N, H, W): bin ``first_bin + n``
    has probability ``window[:, n]``; every other bin has 0 ("code" form: exactly, the released
    code's softmax gives them exp(-1000) = 0; "paper" form: their mass is below Phi(-9) = 1e-19).
    N = :func:`dpm_window_size`. Depth is clamped into [e_0, e_K] first (the authors' cached
    teacher maps cannot leave that range either); arguments as for :func:`teacher_dpm`.
    """
    check_dpm_options(sigma, form)
    dtype = torch.promote_types(depth.dtype, torch.float32)
    with torch.no_grad():
        edges = edges.to(device=depth.device, dtype=dtype)
        depth = depth.to(dtype).clamp(edges[0], edges[-1])
        size = dpm_window_size(edges, sigma, form)
        n_bins = edges.numel() - 1
        depth_bin = (torch.searchsorted(edges, depth.contiguous(), right=True) - 1).clamp_(0, n_bins - 1)
        first_bin = (depth_bin - size // 2).clamp_(0, n_bins - size)
        if form == "paper":
            window_edges = _take(edges, first_bin, size + 1)
            return first_bin, _paper_dpm(depth, window_edges, depth_bin - first_bin, edges[[0, -1]], sigma)
        return first_bin, _code_dpm(depth, _take(bin_centres(edges), first_bin, size), sigma)


def _take(values: torch.Tensor, first: torch.Tensor, count: int) -> torch.Tensor:
    """values[first + n] for n < count: (B, 1, H, W) start indices -> (B, count, H, W)."""
    index = first + torch.arange(count, device=first.device).view(1, -1, 1, 1)
    return values.index_select(0, index.view(-1)).view(index.shape)


def dpm_window_size(edges: torch.Tensor, sigma: float, form: str) -> int:
    """Number N of consecutive bins that holds every teacher DPM's mass (see teacher_dpm_window).

    The window reaches PAPER_TAIL_SIGMAS * sigma ("paper") or the released code's density floor
    ("code") on both sides of the depth's bin. All K bins when that is no fewer, and for a "code"
    sigma so small that a depth's own bin centre can fall below the floor (then the released code
    spreads the pixel uniformly over all K bins).
    """
    n_bins = edges.numel() - 1
    widths = edges[1:] - edges[:-1]
    if form == "paper":
        reach = PAPER_TAIL_SIGMAS * sigma
    else:
        peak_density = 1 / math.sqrt(2 * math.pi * sigma**2)
        if peak_density <= CODE_FORM_DENSITY_FLOOR:
            return n_bins
        reach = sigma * math.sqrt(2 * math.log(peak_density / CODE_FORM_DENSITY_FLOOR))
        if reach < widths.max().item() / 2:
            return n_bins
    side = math.ceil(reach / widths.min().item()) + 1
    return min(n_bins, 2 * side + 1)


def _paper_dpm(
    depth: torch.Tensor, window_edges: torch.Tensor, depth_slot: torch.Tensor, range_ends: torch.Tensor, sigma: float
) -> torch.Tensor:
    """p_i = Phi((e_i - d)/sigma) - Phi((e_{i-1} - d)/sigma) on a window, renormalised over all K bins.

    ``window_edges`` (B, N+1, H, W) are the window's bin edges, ``depth_slot`` (B, 1, H, W) the
    window position of the bin holding d, ``range_ends`` (2,) e_0 and e_K.
    Phi is written with the tail mass T(u) = Phi(-|u|) = erfc(|u| / sqrt 2) / 2, so bins far from
    d keep their relative precision instead of being the difference of two numbers near one: a bin
    on one side of d holds |T(a) - T(b)|, the bin holding d holds 1 - T(a) - T(b), and the range
    [e_0, e_K] holds 1 - T(u_0) - T(u_K) (at least about one half, d being inside it).
    """
    scale = 1 / (sigma * math.sqrt(2))
    tails = torch.special.erfc((window_edges - depth).mul_(scale).abs_())
    lower, upper = tails[:, :-1], tails[:, 1:]
    mass = (lower - upper).abs_()
    mass.scatter_(1, depth_slot, 2 - lower.gather(1, depth_slot) - upper.gather(1, depth_slot))
    range_tails = torch.special.erfc((range_ends.view(1, -1, 1, 1) - depth).abs_().mul_(scale))
    return mass.div_(2 - range_tails.sum(dim=1, keepdim=True))


def _code_dpm(depth: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """Released code: softmax_i of v_i = N(c_i; d, sigma), with v_i < 1e-16 replaced by -1000.

    ``centres`` (B, N, H, W) are the centres of the window's bins.
    """
    density = torch.exp(-((centres - depth) ** 2) / (2 * sigma**2)) / math.sqrt(2 * math.pi * sigma**2)
    values = torch.where(density < CODE_FORM_DENSITY_FLOOR, CODE_FORM_FILL, density)
    return torch.softmax(values, dim=1)


def expected_depth(logits: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Depth as the expected bin centre of softmax(logits): (B, K, H, W) -> (B, 1, H, W) metres.

    Computed in float32 at least (also under autocast); differentiable.
    """
    probabilities = torch.softmax(logits, dim=1, dtype=torch.promote_types(logits.dtype, torch.float32))
    weights = centres.to(device=logits.device, dtype=probabilities.dtype).view(1, -1, 1, 1)
    return (probabilities * weights).sum(dim=1, keepdim=True)


def dpm_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per pixel, in nats: (B, K, H, W) -> (B, 1, H, W).

    0 for a one-bin distribution, log K for a flat one. Uses log_softmax, so it stays finite for
    bins whose probability underflows to zero.
    """
    log_p = torch.log_softmax(logits, dim=1, dtype=torch.promote_types(logits.dtype, torch.float32))
    return -(log_p.exp() * log_p).sum(dim=1, keepdim=True)


def depth_from_bins_last(logits: torch.Tensor, centres: torch.Tensor, *, with_entropy: bool = False):
    """:func:`expected_depth` (and :func:`dpm_entropy`) for logits with the bins on the LAST axis.

    (B, H, W, K) -> depth (B, H, W, 1) in metres [, entropy (B, H, W, 1) in nats]. The deployed form
    (:mod:`tiekd.pipeline.deploy.export`): one softmax (with the entropy one log-softmax, whose exp
    is the softmax) over contiguous bins, and the expected centre as a matrix product, which
    runtimes such as onnxruntime compute several times faster than a softmax over the channel axis
    of (B, K, H, W) (bench/bench_student.py). Float32 logits; no gradient needed.
    """
    weights = centres.to(device=logits.device, dtype=logits.dtype).view(-1, 1)
    if not with_entropy:
        return torch.softmax(logits, dim=-1) @ weights
    log_p = torch.log_softmax(logits, dim=-1)
    probabilities = log_p.exp()
    return probabilities @ weights, -(probabilities * log_p).sum(dim=-1, keepdim=True)
