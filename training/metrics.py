"""Metric functions for evaluation: image fidelity, codebook statistics, MIG, a linear probe, sharpness.

Every function takes numpy arrays (images float `[N, C, H, W]` in `[0, 1]`, the artifact's layout) and
returns plain Python floats, so the same code scores a torch model and an ONNX Runtime session. Sums run
in float64: a mean over thousands of images in float32 loses the last digits that a 0.01 dB check needs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# ---------------------------------------------------------------------------------------------------
# Image fidelity

# Per-image PSNR is capped here: an exactly right image (a blank shapes background that Telea or the MAE
# fills perfectly) has PSNR = inf, and one such image would make the mean over the set infinite.
PSNR_CAP_DB = 100.0


def psnr_per_image(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """PSNR in dB of each image pair, with skimage and `data_range=1`, capped at PSNR_CAP_DB.

    original, reconstruction: `[N, C, H, W]` in `[0, 1]`. Returns float64 `[N]`.
    """
    _check_pair(original, reconstruction)
    a, b = original.astype(np.float64), reconstruction.astype(np.float64)
    with np.errstate(divide="ignore"):  # identical images: skimage divides by a zero MSE
        psnr = np.array([peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b, strict=True)])
    return np.minimum(psnr, PSNR_CAP_DB)


def ssim_per_image(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """SSIM of each image pair, with skimage (`data_range=1`, channels last, default 7x7 window).

    original, reconstruction: `[N, C, H, W]` in `[0, 1]`, H and W at least 7. Returns float64 `[N]`.
    """
    _check_pair(original, reconstruction)
    a = np.moveaxis(original.astype(np.float64), 1, -1)  # skimage wants [H, W, C]
    b = np.moveaxis(reconstruction.astype(np.float64), 1, -1)
    return np.array(
        [structural_similarity(x, y, data_range=1.0, channel_axis=-1) for x, y in zip(a, b, strict=True)]
    )


def masked_psnr_per_image(original: np.ndarray, filled: np.ndarray, pixel_mask: np.ndarray) -> np.ndarray:
    """PSNR in dB over the masked pixels only (all channels), one value per image.

    original, filled: `[N, C, H, W]` in `[0, 1]`; pixel_mask: `[N, 1, H, W]` or `[N, H, W]`, 1 where the
    pixel was removed. Returns float64 `[N]`, capped at PSNR_CAP_DB. MSE = mean over masked pixels and
    channels; data range 1.
    """
    _check_pair(original, filled)
    m = pixel_mask.reshape(original.shape[0], 1, *original.shape[2:]).astype(np.float64)
    err = (original.astype(np.float64) - filled.astype(np.float64)) ** 2 * m
    count = m.sum(axis=(1, 2, 3)) * original.shape[1]
    if np.any(count == 0):
        raise ValueError("masked_psnr needs at least one masked pixel per image")
    mse = err.sum(axis=(1, 2, 3)) / count
    with np.errstate(divide="ignore"):
        return np.minimum(10.0 * np.log10(1.0 / mse), PSNR_CAP_DB)


def patch_mask_to_pixels(mask: np.ndarray, height: int, width: int, patch: int) -> np.ndarray:
    """Expand a patch mask `[N, L]` (row-major patches, 1 = removed) to pixels `[N, 1, H, W]` float32."""
    n = mask.shape[0]
    grid = mask.reshape(n, height // patch, width // patch)
    pixels = np.repeat(np.repeat(grid, patch, axis=1), patch, axis=2)
    return pixels[:, None].astype(np.float32)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two [N, C, H, W] arrays of one shape, got {a.shape} and {b.shape}")


# ---------------------------------------------------------------------------------------------------
# VQ-VAE codebook statistics


def code_histogram(tokens: np.ndarray, codebook_size: int) -> np.ndarray:
    """Counts of each code over every position of every token grid. tokens: int `[...]`; returns `[K]`."""
    flat = np.asarray(tokens).reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= codebook_size):
        raise ValueError(f"token outside [0, {codebook_size})")
    return np.bincount(flat, minlength=codebook_size).astype(np.int64)


def codebook_usage(histogram: np.ndarray) -> float:
    """Fraction in [0, 1] of the K codes used at least once (the manifest stores this fraction)."""
    return float(np.count_nonzero(histogram) / histogram.size)


def perplexity(histogram: np.ndarray) -> float:
    """exp(entropy in nats) of the code distribution: K when all codes are equally used, 1 for one code."""
    p = histogram.astype(np.float64) / histogram.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


# ---------------------------------------------------------------------------------------------------
# MIG (Chen et al. 2018), computed the way google-research/disentanglement_lib does


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Discretize each latent into `num_bins` equal-width bins over its own range.

    codes: `[N, Z]` float. Returns int64 `[N, Z]` with values 1..num_bins, as disentanglement_lib's
    `np.digitize(x, np.histogram(x, num_bins)[1][:-1])` gives (the maximum falls in the last bin).
    """
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins=num_bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def mutual_info(x: np.ndarray, y: np.ndarray) -> float:
    """Mutual information in nats of two discrete labelings `[N]`, from their contingency table.

    The same quantity as sklearn.metrics.mutual_info_score (sklearn is not installed here; this is
    our own numpy version): sum over cells of p(x,y) * log(p(x,y) / (p(x) p(y))).
    """
    _, xi = np.unique(x, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    table = np.zeros((xi.max() + 1, yi.max() + 1), dtype=np.float64)
    np.add.at(table, (xi, yi), 1.0)
    pxy = table / table.sum()
    px, py = pxy.sum(axis=1, keepdims=True), pxy.sum(axis=0, keepdims=True)
    nz = pxy > 0
    return float((pxy[nz] * (np.log(pxy[nz]) - np.log((px @ py)[nz]))).sum())


def mutual_info_matrix(
    codes: np.ndarray, factors: np.ndarray, num_bins: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Mutual information of every latent with every factor, as MIG measures it.

    codes: `[N, Z]` float (discretized here into `num_bins` bins per latent); factors: int `[N, F]`.
    Returns (MI `[Z, F]` in nats, each factor's entropy `[F]` in nats). MI / entropy is the share of a
    factor's information that a latent carries: the table behind MIG's gaps.
    """
    if codes.ndim != 2 or factors.ndim != 2 or codes.shape[0] != factors.shape[0]:
        raise ValueError(f"expected codes [N, Z] and factors [N, F], got {codes.shape} and {factors.shape}")
    discrete = histogram_discretize(codes, num_bins)
    mi = np.array([[mutual_info(discrete[:, j], factors[:, k]) for k in range(factors.shape[1])]
                   for j in range(codes.shape[1])])  # fmt: skip
    entropy = np.array([mutual_info(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])
    return mi, entropy


def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> tuple[float, np.ndarray]:
    """Mutual Information Gap of a representation against ground-truth factors.

    codes: `[N, Z]` (the encoder mean); factors: int `[N, F]` (factor values as class indices).
    For each factor k: (largest MI over latents - second largest) / H(factor k). Returns the mean over
    factors and the per-factor gaps `[F]`. A factor with a single value (entropy 0) has no gap to
    measure: it gets NaN and is left out of the mean.
    """
    if codes.ndim == 2 and codes.shape[1] < 2:
        raise ValueError("MIG needs at least two latents")
    mi, entropy = mutual_info_matrix(codes, factors, num_bins)
    top2 = np.sort(mi, axis=0)[::-1][:2]  # [2, F]
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = np.where(entropy > 0, (top2[0] - top2[1]) / entropy, np.nan)
    return float(np.nanmean(gaps)), gaps


# ---------------------------------------------------------------------------------------------------
# Linear probe


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    l2: float = 1e-3,
    max_iter: int = 500,
) -> float:
    """Test accuracy in [0, 1] of a multinomial logistic regression fit on frozen features.

    train_x `[N, E]`, train_y int `[N]` (classes 0..C-1), likewise for test. Features are standardized
    with the training statistics (so the L2 strength means the same for any encoder's scale); the convex
    loss (mean cross-entropy + l2 * |W|^2) is minimized with scipy's L-BFGS in float64 from zero
    weights: deterministic, no seed needed.
    """
    mean = train_x.mean(axis=0, dtype=np.float64)
    std = train_x.std(axis=0, dtype=np.float64) + 1e-8
    xtr = np.hstack([(train_x - mean) / std, np.ones((len(train_x), 1))])  # last column: the bias
    xte = np.hstack([(test_x - mean) / std, np.ones((len(test_x), 1))])
    ytr = np.asarray(train_y, dtype=np.int64)
    classes = int(max(ytr.max(), np.max(test_y)) + 1)
    onehot = np.eye(classes)[ytr]  # [N, K]
    shape = (xtr.shape[1], classes)
    decay = np.ones(shape)
    decay[-1] = 0.0  # the bias is not penalized

    def loss_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(shape)
        logits = xtr @ w
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -(onehot * log_p).sum() / len(xtr) + l2 * (decay * w**2).sum()
        grad = xtr.T @ (np.exp(log_p) - onehot) / len(xtr) + 2 * l2 * decay * w
        return float(loss), grad.ravel()

    fit = optimize.minimize(loss_and_grad, np.zeros(np.prod(shape)), jac=True, method="L-BFGS-B",
                            options={"maxiter": max_iter})
    pred = (xte @ fit.x.reshape(shape)).argmax(axis=1)
    return float(np.mean(pred == np.asarray(test_y)))


# ---------------------------------------------------------------------------------------------------
# Sharpness


def high_frequency_energy(images: np.ndarray) -> float:
    """Mean squared Laplacian (4-neighbour, per channel, reflected borders) over a batch `[N, C, H, W]`.

    A blurred image has less of it; the ratio reconstruction / original is the sharpness figure.
    """
    x = images.astype(np.float64)
    # second differences along the two spatial axes only (not across images or channels)
    lap = sum(ndimage.correlate1d(x, [1.0, -2.0, 1.0], axis=axis, mode="reflect") for axis in (2, 3))
    return float(np.mean(lap**2))


def sharpness_ratio(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """High-frequency energy of the reconstructions over that of the originals (1 = as sharp, <1 blurrier)."""
    _check_pair(original, reconstruction)
    return high_frequency_energy(reconstruction) / high_frequency_energy(original)
