"""Kind-independent arithmetic of the operations: latent paths, prior samples, traversals, patch
masks, inpainting composition and error figures. Pure NumPy; randomness comes in as a Generator.
"""

import numpy as np


def interpolate(za: np.ndarray, zb: np.ndarray, steps: int, method: str) -> np.ndarray:
    """`steps` latents from za to zb inclusive, [steps, *za.shape]; method "lerp" or "slerp".

    slerp treats each latent as one flattened vector and falls back to lerp when the two are
    (anti)parallel or zero, where the great circle is undefined.
    """
    t = np.linspace(0.0, 1.0, steps)
    a, b = za.reshape(-1).astype(np.float64), zb.reshape(-1).astype(np.float64)
    if method == "slerp":
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na > 0 and nb > 0:
            omega = np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))
            if 1e-6 < omega < np.pi - 1e-6:
                wa = np.sin((1 - t) * omega) / np.sin(omega)
                wb = np.sin(t * omega) / np.sin(omega)
                path = wa[:, None] * a + wb[:, None] * b
                return path.reshape(steps, *za.shape).astype(np.float32)
    path = (1 - t)[:, None] * a + t[:, None] * b
    return path.reshape(steps, *za.shape).astype(np.float32)


def sample_prior(n: int, z_dim: int, rng: np.random.Generator) -> np.ndarray:
    """n latents from the standard normal prior, float32 [n, z_dim]."""
    return rng.standard_normal((n, z_dim)).astype(np.float32)


def reparameterize(mean: np.ndarray, logvar: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) from the seeded generator; [N, Z]."""
    eps = rng.standard_normal(mean.shape).astype(np.float32)
    return (mean + np.exp(logvar / 2) * eps).astype(np.float32)


def traverse(z0: np.ndarray, low: float, high: float, steps: int) -> np.ndarray:
    """Sweep each dimension of z0 [Z] over linspace(low, high, steps), the others fixed.

    Returns [Z * steps, Z]: row d*steps + s holds dimension d at its s-th value (one grid row per
    dimension).
    """
    values = np.linspace(low, high, steps, dtype=np.float32)
    zdim = z0.shape[0]
    grid = np.tile(z0.astype(np.float32), (zdim * steps, 1))
    for d in range(zdim):
        grid[d * steps : (d + 1) * steps, d] = values
    return grid


def random_patch_masks(n: int, num_patches: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """n masks [n, L] with round(ratio * L) patches removed (1) each, chosen by the seeded generator."""
    k = int(round(ratio * num_patches))
    masks = np.zeros((n, num_patches), np.float32)
    for i in range(n):
        masks[i, rng.permutation(num_patches)[:k]] = 1.0
    return masks


def patch_mask_from_pixels(missing: np.ndarray, patch: int) -> np.ndarray:
    """Patch mask [L] from a boolean pixel mask [H, W] (True = missing): any patch it touches is removed."""
    h, w = missing.shape
    grid = missing.reshape(h // patch, patch, w // patch, patch).any(axis=(1, 3))
    return grid.reshape(-1).astype(np.float32)


def expand_patch_mask(masks: np.ndarray, height: int, width: int, patch: int) -> np.ndarray:
    """Patch masks [N, L] (row-major patches) -> pixel masks [N, H, W]."""
    n = len(masks)
    grid = masks.reshape(n, height // patch, width // patch)
    return np.repeat(np.repeat(grid, patch, axis=1), patch, axis=2)


def compose_inpaint(x: np.ndarray, prediction: np.ndarray, masks: np.ndarray, patch: int) -> np.ndarray:
    """Visible pixels from the original x, missing patches from the prediction; [N, C, H, W]."""
    pixel = expand_patch_mask(masks, x.shape[2], x.shape[3], patch)[:, None].astype(np.float32)
    return (x * (1 - pixel) + prediction * pixel).astype(np.float32)


def per_patch_mse(x: np.ndarray, prediction: np.ndarray, patch: int) -> np.ndarray:
    """Mean squared error of every patch, [N, L] (row-major), over channels and pixels."""
    n, c, h, w = x.shape
    sq = ((prediction.astype(np.float64) - x) ** 2).reshape(n, c, h // patch, patch, w // patch, patch)
    return np.asarray(sq.mean(axis=(1, 3, 5)).reshape(n, -1))


def mse_psnr(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """MSE and PSNR (dB, peak 1.0) of one image pair; PSNR is inf for identical images."""
    mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
    return mse, psnr
