"""Metric functions and baselines against answers known in closed form."""

import math

import numpy as np
import pytest

from training import baselines, metrics


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- image fidelity ---------------------------------------------------------------------------------


def test_psnr_of_known_mse() -> None:
    x = np.full((2, 3, 16, 16), 0.5, dtype=np.float32)
    y = x.copy()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    y[1] -= 0.01  # MSE 1e-4 -> 40 dB
    np.testing.assert_allclose(metrics.psnr_per_image(x, y), [20.0, 40.0], atol=1e-4)


def test_psnr_of_identical_images_is_capped_not_infinite() -> None:
    x = _rng().random((2, 1, 8, 8)).astype(np.float32)
    assert np.array_equal(metrics.psnr_per_image(x, x), [metrics.PSNR_CAP_DB] * 2)
    mask = np.ones((2, 1, 8, 8), dtype=np.float32)
    assert np.array_equal(metrics.masked_psnr_per_image(x, x, mask), [metrics.PSNR_CAP_DB] * 2)


def test_ssim_is_one_for_identical_images_and_lower_for_noise() -> None:
    x = _rng().random((2, 3, 16, 16)).astype(np.float32)
    assert metrics.ssim_per_image(x, x) == pytest.approx([1.0, 1.0])
    noisy = np.clip(x + 0.2 * _rng(1).standard_normal(x.shape), 0, 1).astype(np.float32)
    assert np.all(metrics.ssim_per_image(x, noisy) < 0.9)


def test_gray_images_are_scored_too() -> None:
    x = _rng().random((1, 1, 16, 16)).astype(np.float32)
    assert metrics.ssim_per_image(x, x)[0] == pytest.approx(1.0)
    assert metrics.psnr_per_image(x, np.clip(x + 0.1, 0, 1)).shape == (1,)


def test_masked_psnr_ignores_visible_pixels() -> None:
    x = np.zeros((1, 3, 8, 8), dtype=np.float32)
    y = x.copy()
    mask = np.zeros((1, 1, 8, 8), dtype=np.float32)
    mask[..., :4, :] = 1
    y[..., :4, :] = 0.1  # error 0.1 on the masked half -> 20 dB there
    y[..., 4:, :] = 0.9  # large error where visible: must not count
    assert metrics.masked_psnr_per_image(x, y, mask)[0] == pytest.approx(20.0, abs=1e-4)


def test_patch_mask_to_pixels_is_row_major() -> None:
    mask = np.array([[0, 1, 0, 0]], dtype=np.float32)  # 2x2 patches of 4x4 pixels: top-right removed
    pixels = metrics.patch_mask_to_pixels(mask, 8, 8, 4)
    assert pixels.shape == (1, 1, 8, 8)
    assert pixels[0, 0, :4, 4:].min() == 1 and pixels.sum() == 16


# --- codebook -------------------------------------------------------------------------------------


def test_usage_and_perplexity_of_known_histograms() -> None:
    uniform = metrics.code_histogram(np.arange(8).reshape(2, 2, 2), 16)  # 8 of 16 codes, once each
    assert metrics.codebook_usage(uniform) == 0.5
    assert metrics.perplexity(uniform) == pytest.approx(8.0)
    one_code = metrics.code_histogram(np.full((3, 4, 4), 5), 16)
    assert metrics.codebook_usage(one_code) == 1 / 16
    assert metrics.perplexity(one_code) == pytest.approx(1.0)
    skewed = np.array([3, 1], dtype=np.int64)  # p = (3/4, 1/4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert metrics.perplexity(skewed) == pytest.approx(math.exp(h))


def test_code_histogram_rejects_out_of_range_tokens() -> None:
    with pytest.raises(ValueError):
        metrics.code_histogram(np.array([0, 16]), 16)


# --- MIG ------------------------------------------------------------------------------------------


def _factors(n: int = 4000, seed: int = 0) -> np.ndarray:
    # five independent factors with as many values as shapes has few of: shape 3, scale 6, others 10
    sizes = (3, 6, 10, 10, 10)
    rng = _rng(seed)
    return np.stack([rng.integers(0, k, n) for k in sizes], axis=1)


def test_mutual_info_matches_entropy_and_independence() -> None:
    y = np.repeat(np.arange(4), 250)
    assert metrics.mutual_info(y, y) == pytest.approx(math.log(4))
    x = np.tile(np.arange(2), 500)  # independent of y by construction
    assert metrics.mutual_info(x, y) == pytest.approx(0.0, abs=1e-12)


def test_histogram_discretize_uses_twenty_bins_over_each_range() -> None:
    x = np.linspace(0, 1, 101)
    codes = np.stack([x, 4 * x], axis=1)  # an exact rescaling (power of two)
    d = metrics.histogram_discretize(codes)
    assert d.min() == 1 and d.max() == 20
    assert np.array_equal(d[:, 0], d[:, 1])  # same relative positions -> same bins
    assert np.all(np.abs(np.bincount(d[:, 0])[1:] - 5) <= 1)  # equal-width bins over the range


def test_mig_of_perfectly_disentangled_code_is_one() -> None:
    f = _factors()
    codes = f.astype(np.float64) * 0.37 + 1.0  # latent j = factor j, rescaled
    score, gaps = metrics.mig(codes, f)
    assert score > 0.98 and gaps.shape == (5,)


def test_mig_of_random_code_is_near_zero() -> None:
    f = _factors()
    score, _ = metrics.mig(_rng(1).standard_normal((f.shape[0], 10)), f)
    assert score < 0.02


def test_mig_is_zero_for_a_factor_copied_into_two_latents() -> None:
    f = _factors()
    codes = np.concatenate([f, f[:, :1]], axis=1).astype(np.float64)  # factor 0 in latents 0 and 5
    _, gaps = metrics.mig(codes, f)
    assert gaps[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(gaps[1:] > 0.98)


def test_mutual_info_matrix_finds_the_latent_that_carries_each_factor() -> None:
    f = _factors()
    codes = np.concatenate([f[:, ::-1], _rng(4).standard_normal((f.shape[0], 1))], axis=1).astype(float)
    mi, entropy = metrics.mutual_info_matrix(codes, f)
    assert mi.shape == (6, 5) and entropy.shape == (5,)
    share = mi / entropy
    assert np.allclose(np.diag(share[::-1][1:]), 1.0)  # latent 4 - k holds factor k whole
    assert share[5].max() < 0.05  # the noise latent holds next to nothing


def test_mig_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        metrics.mig(np.zeros((10, 4)), np.zeros((9, 5), dtype=np.int64))


# --- linear probe and sharpness ---------------------------------------------------------------------


def test_linear_probe_separates_separable_classes_and_not_noise() -> None:
    rng = _rng(2)
    y = rng.integers(0, 3, 600)
    centers = rng.standard_normal((3, 16)) * 4
    x = centers[y] + rng.standard_normal((600, 16))
    assert metrics.linear_probe_accuracy(x[:400], y[:400], x[400:], y[400:]) > 0.95
    noise = rng.standard_normal((600, 16))
    assert metrics.linear_probe_accuracy(noise[:400], y[:400], noise[400:], y[400:]) < 0.5


def test_blurred_images_have_sharpness_ratio_below_one() -> None:
    x = _rng(3).random((2, 3, 32, 32)).astype(np.float32)
    blurred = (x + np.roll(x, 1, axis=2) + np.roll(x, 1, axis=3) + np.roll(x, (1, 1), axis=(2, 3))) / 4
    assert metrics.sharpness_ratio(x, x) == pytest.approx(1.0)
    assert metrics.sharpness_ratio(x, blurred) < 0.5


# --- baselines ------------------------------------------------------------------------------------


def test_mean_fill_on_a_constant_image_is_exact() -> None:
    x = np.empty((2, 3, 8, 8), dtype=np.float32)
    x[:, 0], x[:, 1], x[:, 2] = 0.2, 0.5, 0.9  # constant per channel
    mask = metrics.patch_mask_to_pixels(np.array([[1, 0, 1, 1], [0, 1, 1, 1]], np.float32), 8, 8, 4)
    np.testing.assert_allclose(baselines.mean_fill(x, mask), x, atol=1e-7)


def test_mean_fill_uses_visible_pixels_only() -> None:
    x = np.zeros((1, 1, 8, 8), dtype=np.float32)
    x[..., :, 4:] = 1.0  # right half white
    mask = np.zeros((1, 1, 8, 8), dtype=np.float32)
    mask[..., :4, :4] = 1  # top-left quarter removed: visible mean = 32 white / 48 visible
    filled = baselines.mean_fill(x, mask)
    assert filled[0, 0, 0, 0] == pytest.approx(32 / 48)
    assert np.array_equal(filled[mask == 0], x[mask == 0])


def test_telea_sees_nothing_of_the_pixels_it_must_fill() -> None:
    """The baseline may use the visible pixels only: changing what lies under the mask changes nothing
    (OpenCV's Telea reads not-yet-filled neighbours, so the hidden pixels are blanked first)."""
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 64, 64)).astype(np.float32)
    mask = (rng.random((4, 1, 8, 8)) < 0.75).astype(np.float32).repeat(8, 2).repeat(8, 3)  # MAE's patches
    other = np.where(mask > 0, rng.random(x.shape).astype(np.float32), x)
    assert np.array_equal(baselines.telea_fill(x, mask), baselines.telea_fill(other, mask))


def test_telea_fills_a_hole_in_a_smooth_image_closely() -> None:
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))
    x = np.stack([ramp, ramp.T, 1 - ramp])[None]
    mask = np.zeros((1, 1, 32, 32), dtype=np.float32)
    mask[..., 12:20, 12:20] = 1
    filled = baselines.telea_fill(x, mask)
    telea = metrics.masked_psnr_per_image(x, filled, mask)[0]
    assert telea > 25
    assert telea > metrics.masked_psnr_per_image(x, baselines.mean_fill(x, mask), mask)[0] + 3
    assert np.array_equal(filled[:, :, mask[0, 0] == 0], np.rint(x * 255)[:, :, mask[0, 0] == 0] / 255)


@pytest.mark.parametrize("codec", ["jpeg", "webp"])
def test_codec_stays_within_budget_and_quality_grows_with_it(codec: str) -> None:
    ramp = np.linspace(0, 1, 64, dtype=np.float32)
    smooth = np.stack([np.add.outer(ramp, ramp) / 2, np.outer(ramp, ramp), np.tile(ramp, (64, 1))])
    img = np.clip(smooth + 0.05 * _rng(4).standard_normal(smooth.shape), 0, 1).astype(np.float32)
    small = baselines.encode_at_budget(img, codec, 1200)
    large = baselines.encode_at_budget(img, codec, 4000)
    assert small.within_budget and small.bytes <= 1200 and large.bytes <= 4000
    assert large.quality is not None and small.quality is not None and large.quality > small.quality
    assert small.decoded.shape == img.shape
    fid_small = metrics.psnr_per_image(img[None], small.decoded[None])[0]
    fid_large = metrics.psnr_per_image(img[None], large.decoded[None])[0]
    assert fid_large > fid_small


def test_codec_reports_an_unreachable_budget() -> None:
    img = _rng(5).random((3, 32, 32)).astype(np.float32)
    r = baselines.encode_at_budget(img, "jpeg", 10)
    assert not r.within_budget and r.bytes > 10
