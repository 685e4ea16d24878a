"""`python -m training evaluate`: measure a model on held-out data, as a checkpoint or as the served artifact.

    python -m training evaluate CHECKPOINT            [--data SPEC] [--report DIR] [--n N] [--seed S]
    python -m training evaluate --artifact DIR        [...]   (also writes manifest metrics + model card)
    python -m training evaluate --compare A B [...]   [...]   (reconstructions side by side, sharpness)

Held-out data is always the validation split: shapes' held-out indices, photos' held-out photographs,
a folder's val files. The JSON result goes to stdout, progress to stderr, figures to the report folder.

What is measured, per kind (docs/ARTIFACT.md names the manifest keys):
- every kind: PSNR and SSIM (skimage, data_range 1), mean over the held-out images;
- vae, beta_vae: negative ELBO in bits/dim with one eps per image from a seeded generator; on shapes
  also MIG (disentanglement_lib's recipe, see `training.metrics.mig`), with the latent x factor
  mutual-information table behind it (`mig_matrix`) and, in the report, that table and each active
  latent's mean code against each factor, which show why a factor scores low (shared, or folded);
- vqvae: codebook usage and perplexity over every token of the held-out set; on photographs, the
  tokens as a codec against JPEG and WebP at the same byte count;
- mae: PSNR on the removed patches at 75 % masking against mean-fill and Telea inpainting on the very
  same masks; a linear probe of `shape` on shapes from frozen features, trained vs random init.
For the MAE, `psnr`/`ssim` score the composed image (visible pixels kept, removed ones predicted).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training import baselines, metrics, report
from training.backends import Backend, ModelInfo, OnnxBackend, TorchBackend
from training.errors import OneLineParser, UserError, check_folder_path

if TYPE_CHECKING:
    from training.data import ShapesDataset

MANIFEST_METRIC_KEYS = (
    "psnr", "ssim", "elbo_bits_per_dim", "codebook_usage", "perplexity", "mig", "masked_psnr",
    "mean_fill_masked_psnr", "telea_masked_psnr", "linear_probe_acc", "linear_probe_acc_random_init",
)  # fmt: skip
SHAPES_FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")
FIGURES_HEADING = "## Figures"


@dataclass
class Settings:
    """How much to evaluate. The defaults keep a run to a minute or two on 2 CPU cores."""

    n: int = 1000  # held-out images for PSNR, SSIM, ELBO, codebook and inpainting figures
    # picks the held-out images (shapes, a folder; photos are the fixed stream of validation crops, the
    # same for every seed), the VAE's eps, the MAE's masks and the random-init MAE
    seed: int = 0
    mig_n: int = 10_000  # shapes points for MIG (the disentanglement_lib default is 10,000)
    probe_n: int = 2000  # shapes images for the linear probe: 3/4 fit the probe, 1/4 test it
    mask_ratio: float = 0.75  # MAE: fraction of patches removed, the paper's 75 %
    batch_size: int = 100  # images per forward pass
    grid_n: int = 8  # images per figure row


@dataclass
class HeldOut:
    """The held-out images a run scores, with what identifies them."""

    images: np.ndarray  # float32 [N, C, H, W] in [0, 1]
    spec: str
    description: str


@dataclass
class Result:
    """Everything one evaluation found; `as_json()` is what the CLI prints."""

    metrics: dict[str, float] = field(default_factory=dict)  # manifest keys only
    details: dict[str, Any] = field(default_factory=dict)  # everything else measured, with its setting
    figures: dict[str, str] = field(default_factory=dict)  # caption -> file name in the report folder


def log(message: str) -> None:
    print(f"[evaluate] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# Loading


def open_backend(path: Path, *, artifact: bool | None = None) -> Backend:
    """An artifact folder (has manifest.json) through ONNX Runtime, anything else as a torch checkpoint."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if artifact or (artifact is None and (path / "manifest.json").is_file()):
        return OnnxBackend(path)
    return TorchBackend.from_checkpoint(path)


def held_out(spec: str, backend: Backend, n: int, seed: int) -> HeldOut:
    """`n` validation images of data set `spec` at the model's size and channel count, chosen by `seed`."""
    from training.data import FolderDataset, PhotosDataset

    info = backend.info
    if info.height != info.width:
        raise UserError(f"the data sets make square images; this model takes {info.height}x{info.width}")
    rng = np.random.default_rng([seed, 0])
    if spec == "photos":  # a fixed stream of held-out crops, the first n of them
        photos = PhotosDataset("val", image_size=info.height, channels=info.channels, length=n)
        images = torch.stack([photos[i] for i in range(n)]).numpy()
        return HeldOut(images, spec, f"photos val: {n} crops of {', '.join(photos.names)}")
    if spec == "shapes":
        shapes = _shapes_val(info)
        chosen = np.sort(rng.choice(shapes.indices, size=min(n, len(shapes)), replace=False))
        images = _render(shapes, chosen, 500)
        return HeldOut(images, spec, f"shapes val: {len(chosen)} of {len(shapes)} held-out indices")
    folder = FolderDataset(Path(spec).expanduser(), "val", image_size=info.height, channels=info.channels)
    picks = np.sort(rng.choice(len(folder), size=min(n, len(folder)), replace=False))
    images = torch.stack([folder[int(i)] for i in picks]).numpy()
    return HeldOut(images, spec, f"folder {spec} val: {len(picks)} of {len(folder)} images")


def _shapes_val(info: ModelInfo) -> ShapesDataset:
    """The shapes validation split rendered at the model's size (gray repeated to 3 channels if needed)."""
    from training.data import ShapesDataset

    return ShapesDataset("val", image_size=info.height, channels=info.channels)


def _render(shapes: ShapesDataset, indices: np.ndarray, batch: int) -> np.ndarray:
    """Render flat shapes indices `[N]` in chunks: float32 `[N, C, S, S]`."""
    parts = [shapes.images(c).numpy() for c in np.array_split(indices, max(1, len(indices) // batch))]
    return np.concatenate(parts)


def batched(fn: Callable[..., Any], *arrays: np.ndarray, batch_size: int) -> Any:
    """Run `fn` over aligned slices of `arrays` and concatenate each output along axis 0."""
    outs: list[Any] = []
    for start in range(0, arrays[0].shape[0], batch_size):
        outs.append(fn(*(a[start : start + batch_size] for a in arrays)))
    if isinstance(outs[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))
    if isinstance(outs[0], dict):
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return np.concatenate(outs)


def random_masks(n: int, num_patches: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random patch masks float32 `[n, L]` (1 = removed) keeping max(1, int(L(1-ratio))) patches.

    The same rule as `models.MAE.random_mask`, drawn from numpy so both backends get identical masks.
    """
    keep = max(1, int(num_patches * (1.0 - ratio)))
    ranks = rng.random((n, num_patches)).argsort(axis=1).argsort(axis=1)
    return (ranks >= keep).astype(np.float32)


def reconstruct(
    backend: Backend, x: np.ndarray, *, batch_size: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """The model's reconstruction of `x` `[N, C, H, W]`, the same way for every backend.

    vae/beta_vae: decode the posterior mean; vqvae: decode the tokens; mae: visible pixels of `x`, removed
    ones from the prediction (`mask` `[N, L]` required).
    """
    kind = backend.info.kind
    if kind in ("vae", "beta_vae"):
        return batched(lambda a: backend.decode(backend.encode(a)[0]), x, batch_size=batch_size)
    if kind == "vqvae":
        return batched(lambda a: backend.decode_tokens(backend.encode_tokens(a)[1]), x, batch_size=batch_size)
    if mask is None:
        raise ValueError("the MAE reconstructs through a mask")
    pred = batched(backend.reconstruct_masked, x, mask, batch_size=batch_size)
    info = backend.info
    pixels = metrics.patch_mask_to_pixels(mask, info.height, info.width, int(info.patch_size or 1))
    return (x * (1.0 - pixels) + pred * pixels).astype(np.float32)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values.astype(np.float64)))


# ---------------------------------------------------------------------------------------------------
# Per-kind evaluation


def evaluate(backend: Backend, data: HeldOut, settings: Settings, report_dir: Path | None) -> Result:
    """Score `backend` on `data`; draw the figures into `report_dir` if given."""
    result = Result()
    x = data.images
    result.details["n_images"] = int(x.shape[0])
    result.details["psnr_cap_db"] = metrics.PSNR_CAP_DB  # per-image PSNR cap (see metrics)
    kind = backend.info.kind
    rng = np.random.default_rng([settings.seed, 1])
    mask = None
    if kind == "mae":
        mask = random_masks(x.shape[0], int(backend.info.num_patches or 0), settings.mask_ratio, rng)
    log(f"reconstructing {x.shape[0]} images ({backend.info.source})")
    recon = reconstruct(backend, x, batch_size=settings.batch_size, mask=mask)
    result.metrics["psnr"] = _mean(metrics.psnr_per_image(x, recon))
    result.metrics["ssim"] = _mean(metrics.ssim_per_image(x, recon))
    if report_dir is not None and kind != "mae":
        k = settings.grid_n
        result.figures["reconstructions (top: original, bottom: reconstruction)"] = _figure(
            report_dir,
            "reconstructions.png",
            [x[:k], recon[:k]],
            title=f"{kind}: held-out originals and reconstructions (PSNR {result.metrics['psnr']:.2f} dB)",
            row_labels=["original", "reconstruction"],
        )
    per_kind = {
        "vae": _evaluate_vae,
        "beta_vae": _evaluate_vae,
        "vqvae": _evaluate_vqvae,
        "mae": _evaluate_mae,
    }
    per_kind[kind](_Context(backend, data, settings, report_dir, result, rng, mask, recon))
    return result


@dataclass
class _Context:
    """One evaluation in progress, handed to the per-kind step."""

    backend: Backend
    data: HeldOut
    settings: Settings
    report_dir: Path | None
    result: Result
    rng: np.random.Generator  # continues the stream that drew the MAE masks: eps for the VAE
    mask: np.ndarray | None  # MAE patch masks [N, L]
    recon: np.ndarray  # the reconstructions already scored, [N, C, H, W]


def _figure(report_dir: Path, name: str, rows: list[np.ndarray], **kwargs: Any) -> str:
    report.save_grid(report_dir / name, rows, **kwargs)
    return name


def _evaluate_vae(ctx: _Context) -> None:
    backend, data, settings = ctx.backend, ctx.data, ctx.settings
    report_dir, result = ctx.report_dir, ctx.result
    x = data.images
    mean, logvar = batched(backend.encode, x, batch_size=settings.batch_size)
    eps = ctx.rng.standard_normal(mean.shape).astype(np.float32)  # one sample z = mu + sigma * eps per image
    parts = batched(backend.neg_elbo, x, eps, batch_size=settings.batch_size)
    result.metrics["elbo_bits_per_dim"] = _mean(parts["bits_per_dim"])
    if "kl" in parts:  # torch gives the split; the exported elbo graph only the total
        dims = x[0].size * math.log(2.0)
        result.details["kl_bits_per_dim"] = _mean(parts["kl"] / dims)
        result.details["recon_bits_per_dim"] = (
            result.metrics["elbo_bits_per_dim"] - result.details["kl_bits_per_dim"]
        )
    kl_per_latent = 0.5 * (mean.astype(np.float64) ** 2 + np.exp(logvar) - 1.0 - logvar).mean(axis=0)  # nats
    result.details["kl_per_latent_nats"] = [round(float(v), 4) for v in kl_per_latent]
    mig_codes = _mig(backend, settings, result) if data.spec == "shapes" else None
    if report_dir is None:
        return
    order = np.argsort(-kl_per_latent)[: min(10, mean.shape[1])]  # the most informative latents first
    if mig_codes is not None:
        _factor_figures(ctx, *mig_codes, order, kl_per_latent)
    steps = np.linspace(-3.0, 3.0, 9, dtype=np.float32)  # prior standard deviations
    rows = []
    for j in order:
        z = np.repeat(mean[:1], len(steps), axis=0)
        z[:, j] = steps
        rows.append(backend.decode(z))
    result.figures["latent traversals (rows: latents by KL, columns: -3..3 prior sd)"] = _figure(
        report_dir,
        "traversals.png",
        rows,
        title=f"{backend.info.kind}: traversals of held-out image 0's mean",
        row_labels=[f"z{j} (KL {kl_per_latent[j]:.2f})" for j in order],
        col_labels=[f"{s:+.1f}" for s in steps],
    )
    _interpolations(ctx, mean, backend.decode, "posterior means")


def _interpolations(
    ctx: _Context, latents: np.ndarray, decode: Callable[[np.ndarray], np.ndarray], what: str
) -> None:
    """Rows decoding straight lines between the latents [N, ...] of held-out images 0-1, 2-3, ..."""
    assert ctx.report_dir is not None
    if latents.shape[0] < 2:
        return  # nothing to interpolate between
    ts = np.linspace(0.0, 1.0, ctx.settings.grid_n, dtype=np.float32)
    shape = (-1,) + (1,) * (latents.ndim - 1)  # broadcast t over a latent of any rank
    rows = [
        decode((1 - ts.reshape(shape)) * latents[2 * i] + ts.reshape(shape) * latents[2 * i + 1])
        for i in range(min(4, latents.shape[0] // 2))
    ]
    ctx.result.figures[f"interpolations of {what}"] = _figure(
        ctx.report_dir,
        "interpolations.png",
        rows,
        title=f"linear interpolation of {what} between pairs of held-out images",
        col_labels=[f"{t:.2f}" for t in ts],
    )


def _mig(backend: Backend, settings: Settings, result: Result) -> tuple[np.ndarray, np.ndarray]:
    """MIG on `mig_n` held-out shapes; returns their mean codes `[N, Z]` and factor classes `[N, 5]`."""
    from training.data.shapes import classes_of

    shapes = _shapes_val(backend.info)
    rng = np.random.default_rng([settings.seed, 2])
    chosen = rng.choice(shapes.indices, size=min(settings.mig_n, len(shapes)), replace=False)
    log(f"MIG: encoding {len(chosen)} held-out shapes")
    means = []
    for part in np.array_split(chosen, max(1, len(chosen) // settings.batch_size)):
        means.append(backend.encode(shapes.images(part).numpy())[0])
    codes, classes = np.concatenate(means).astype(np.float64), classes_of(chosen)
    score, gaps = metrics.mig(codes, classes)
    result.metrics["mig"] = score
    result.details["mig_per_factor"] = dict(
        zip(SHAPES_FACTORS, (round(float(g), 4) for g in gaps), strict=True)
    )
    mi, entropy = metrics.mutual_info_matrix(codes, classes)
    # MI / H(factor), [Z][F]: which latents carry each factor (MIG is each column's top two, subtracted)
    result.details["mig_matrix"] = [[round(float(v), 4) for v in row] for row in mi / entropy]
    result.details["mig_n"] = int(len(chosen))
    result.details["mig_method"] = "disentanglement_lib: mean code, 20-bin histograms, numpy MI (nats)"
    return codes, classes


def _factor_figures(
    ctx: _Context, codes: np.ndarray, classes: np.ndarray, order: np.ndarray, kl_per_latent: np.ndarray
) -> None:
    """The MI table as a heat map, and each latent's mean code against each factor (MIG's diagnosis).

    A latent that carries a factor in one monotonic curve scores well; one that folds it (a curve that
    rises then falls) or shares it with another latent scores near zero, which the curves show."""
    assert ctx.report_dir is not None
    labels = [f"z{j} (KL {kl_per_latent[j]:.2f})" for j in order]
    matrix = np.asarray(ctx.result.details["mig_matrix"])[order]
    ctx.result.figures["mutual information / factor entropy (rows: latents by KL)"] = report.save_heatmap(
        ctx.report_dir / "mig_matrix.png",
        matrix,
        row_labels=labels,
        col_labels=list(SHAPES_FACTORS),
        title=f"MI(latent; factor) / H(factor); MIG {ctx.result.metrics['mig']:.3f}",
    ).name
    shown = [j for j in order if kl_per_latent[j] >= 0.05 * kl_per_latent[order[0]]] or list(order[:1])
    curves = []
    for k, name in enumerate(SHAPES_FACTORS):
        values = np.unique(classes[:, k])
        means = np.array([[codes[classes[:, k] == v, j].mean() for v in values] for j in shown])
        curves.append((name, values, means))
    ctx.result.figures["mean code of each active latent against each factor"] = report.save_curves(
        ctx.report_dir / "factor_curves.png",
        curves,
        series_labels=[f"z{j}" for j in shown],
        xlabel="factor class",
        ylabel="mean code",
        title="mean code of the active latents against each factor (other factors averaged out)",
    ).name


def _evaluate_vqvae(ctx: _Context) -> None:
    backend, data, settings = ctx.backend, ctx.data, ctx.settings
    report_dir, result = ctx.report_dir, ctx.result
    k = int(backend.info.codebook_size or 0)
    z_e, tokens = batched(backend.encode_tokens, data.images, batch_size=settings.batch_size)
    # usage over the held-out set: the held-out images (crops) and, where there are any, every whole
    # held-out photograph, so that each of its pixels is seen at its own scale
    crops = metrics.code_histogram(tokens, k)
    photos = _tokenized(backend, _whole_photographs(data.spec, backend.info.channels))
    whole = np.zeros_like(crops)
    for _, photo_tokens in photos:
        whole += metrics.code_histogram(photo_tokens, k)
    hist = crops + whole
    result.metrics["codebook_usage"] = metrics.codebook_usage(hist)
    result.metrics["perplexity"] = metrics.perplexity(hist)
    result.details["codebook_size"] = k
    result.details["tokens_counted"] = int(hist.sum())
    result.details["codebook_usage_held_out_images"] = metrics.codebook_usage(crops)
    if photos:
        result.details["codebook_usage_whole_photographs"] = metrics.codebook_usage(whole)
        result.details["codec"] = _codec(backend, photos, report_dir, result)
    else:
        result.details["codec"] = f"not measured: {data.spec!r} has no whole photographs"
    if report_dir is None:
        return
    _interpolations(ctx, z_e, backend.decode_continuous, "z_e (quantized, then decoded)")


def _whole_photographs(spec: str, channels: int) -> list[np.ndarray]:
    """Held-out photographs at full size, float32 [C, H, W]: photos' val photos or a folder's val files,
    converted as training and the service convert them (app.imaging: EXIF orientation, 16-bit gray
    scaled, transparency on white)."""
    from app import imaging
    from training.data import FolderDataset, PhotosDataset
    from training.data.folder import decode_image

    if spec == "shapes":
        return []
    if spec == "photos":
        pils = [imaging.to_channels(photo, channels) for photo in PhotosDataset("val", length=1).photos]
    else:
        files = FolderDataset(Path(spec).expanduser(), "val", image_size=16).files
        pils = [decode_image(path, channels) for path in files]
    arrays = [np.asarray(pil, dtype=np.float32) / 255.0 for pil in pils]
    return [a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0) for a in arrays]


GRID_HEADER_BYTES = 4


def _tokenized(backend: Backend, photos: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each photograph [C, H, W] as a batch of one cut to multiples of the downsampling factor (what the
    fully convolutional path takes), with its token grid: (x [1, C, H', W'], tokens [1, h, w])."""
    f = int(backend.info.downsample or 4)
    out = []
    for photo in photos:
        _, h, w = photo.shape
        x = photo[None, :, : h // f * f, : w // f * f]
        out.append((x, backend.encode_tokens(x)[1]))
    return out


def _codec(
    backend: Backend, photos: list[tuple[np.ndarray, np.ndarray]], report_dir: Path | None, result: Result
) -> dict[str, Any]:
    """VQ-VAE tokens as a codec (log2 K bits each) vs JPEG and WebP at no more bytes, on whole photographs
    (`_tokenized`)."""
    k = int(backend.info.codebook_size or 2)
    rows: list[dict[str, Any]] = []
    for x, tokens in photos:
        h, w = x.shape[2:]
        decoded = backend.decode_tokens(tokens)
        # what a decoder needs: each token in ceil(log2 K) bits, packed, and the grid's height and width
        # (two 16-bit numbers); the decoder's weights and codebook are the codec, shipped once
        budget = math.ceil(tokens.size * math.ceil(math.log2(k)) / 8) + GRID_HEADER_BYTES
        row: dict[str, Any] = {
            "size": [h, w],
            "tokens": list(tokens.shape[1:]),
            "budget_bytes": round(budget, 1),
            "vqvae_psnr": float(metrics.psnr_per_image(x, decoded)[0]),
        }
        for codec in ("jpeg", "webp"):
            coded = baselines.encode_at_budget(x[0], codec, int(budget))
            row[f"{codec}_bytes"] = coded.bytes
            row[f"{codec}_quality"] = coded.quality
            # None when even quality 1 is over the budget: there is no file of that many bytes to compare
            row[f"{codec}_psnr"] = (
                float(metrics.psnr_per_image(x, coded.decoded[None])[0]) if coded.within_budget else None
            )
        rows.append(row)
        log(f"codec on a {h}x{w} photograph: {budget:.0f} bytes budget")
    summary: dict[str, float | None] = {"vqvae_psnr": float(np.mean([r["vqvae_psnr"] for r in rows]))}
    over: dict[str, int] = {}
    for codec in ("jpeg", "webp"):
        within = [r[f"{codec}_psnr"] for r in rows if r[f"{codec}_psnr"] is not None]
        summary[f"{codec}_psnr"] = float(np.mean(within)) if within else None
        over[codec] = len(rows) - len(within)
    if any(over.values()):  # the VQ-VAE's mean over the photographs every codec could be compared on
        both = [r for r in rows if r["jpeg_psnr"] is not None and r["webp_psnr"] is not None]
        summary["vqvae_psnr_where_all_fit"] = (
            float(np.mean([r["vqvae_psnr"] for r in both])) if both else None
        )
    if report_dir is not None:
        bars = [("VQ-VAE tokens", summary["vqvae_psnr"])] + [
            (f"{name}{f' ({len(rows) - over[c]} of {len(rows)})' if over[c] else ''}", summary[f"{c}_psnr"])
            for c, name in (("jpeg", "JPEG"), ("webp", "WebP"))
            if summary[f"{c}_psnr"] is not None
        ]
        report.save_bars(
            report_dir / "codec.png",
            [label for label, _ in bars],
            [value for _, value in bars if value is not None],
            title=f"{len(rows)} whole held-out photographs at the token budget "
            f"({math.ceil(math.log2(k))} bits per token, 4 bytes for the grid size)"
            + ("; a codec over budget at quality 1 is left out" if any(over.values()) else ""),
            ylabel="PSNR (dB)",
        )
        result.figures["codec: PSNR at equal bytes"] = "codec.png"
    return {
        "photographs": rows,
        "mean": summary,
        "over_budget": over,
        "note": "budget: the tokens packed at ceil(log2 K) bits each plus 4 bytes for the grid's size; "
        "codebook and decoder weights not counted; JPEG/WebP at the highest quality within budget; "
        "a photograph where a codec cannot meet the budget even at quality 1 has no PSNR for it and is left "
        "out of its mean",
    }


def _evaluate_mae(ctx: _Context) -> None:
    backend, data, settings = ctx.backend, ctx.data, ctx.settings
    report_dir, result = ctx.report_dir, ctx.result
    mask, recon = ctx.mask, ctx.recon
    assert mask is not None
    x, info = data.images, backend.info
    pixels = metrics.patch_mask_to_pixels(mask, info.height, info.width, int(info.patch_size or 1))
    mean_fill = baselines.mean_fill(x, pixels)
    log("Telea inpainting baseline")
    telea = baselines.telea_fill(x, pixels)
    result.metrics["masked_psnr"] = _mean(metrics.masked_psnr_per_image(x, recon, pixels))
    result.metrics["mean_fill_masked_psnr"] = _mean(metrics.masked_psnr_per_image(x, mean_fill, pixels))
    result.metrics["telea_masked_psnr"] = _mean(metrics.masked_psnr_per_image(x, telea, pixels))
    result.details["mask_ratio"] = settings.mask_ratio
    _linear_probe(backend, settings, result, report_dir)
    if report_dir is None:
        return
    k = settings.grid_n
    result.figures["inpainting (original / masked / MAE / mean fill / Telea)"] = _figure(
        report_dir,
        "inpainting.png",
        [x[:k], x[:k] * (1 - pixels[:k]) + 0.5 * pixels[:k], recon[:k], mean_fill[:k], telea[:k]],
        title=f"MAE inpainting at {settings.mask_ratio:.0%} masking (removed patches gray in row 2)",
        row_labels=["original", "masked", "MAE", "mean fill", "Telea"],
    )


def _linear_probe(backend: Backend, settings: Settings, result: Result, report_dir: Path | None) -> None:
    from models import build_model, config_from_dict
    from training.data.shapes import classes_of

    info = backend.info
    shapes = _shapes_val(info)
    rng = np.random.default_rng([settings.seed, 3])
    chosen = rng.choice(shapes.indices, size=min(settings.probe_n, len(shapes)), replace=False)
    labels = classes_of(chosen)[:, 0]  # the `shape` factor: 3 classes
    images = _render(shapes, chosen, 500)
    n_fit = len(chosen) * 3 // 4
    log(f"linear probe of `shape` on {len(chosen)} held-out shapes ({n_fit} fit, {len(chosen) - n_fit} test)")

    def probe(b: Backend) -> float:
        feats = batched(b.embed, images, batch_size=settings.batch_size).astype(np.float64)
        return metrics.linear_probe_accuracy(feats[:n_fit], labels[:n_fit], feats[n_fit:], labels[n_fit:])

    result.metrics["linear_probe_acc"] = probe(backend)
    result.details["linear_probe"] = {
        "fit": n_fit,
        "test": len(chosen) - n_fit,
        "classes": 3,
        "chance": float(np.bincount(labels[n_fit:]).max() / (len(chosen) - n_fit)),
    }
    if not info.model_config:
        result.details["linear_probe"]["random_init"] = "not measured: no model config recorded"
        return
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        random_model = build_model("mae", config_from_dict("mae", dict(info.model_config)))
    result.metrics["linear_probe_acc_random_init"] = probe(TorchBackend(random_model, info))
    if report_dir is not None:
        report.save_bars(
            report_dir / "linear_probe.png",
            ["MAE encoder", "random init"],
            [result.metrics["linear_probe_acc"], result.metrics["linear_probe_acc_random_init"]],
            title=f"linear probe of `shape` on frozen features ({len(chosen) - n_fit} held-out test images)",
            ylabel="accuracy",
            reference=result.details["linear_probe"]["chance"],
            reference_label="majority class",
        )
        result.figures["linear probe: MAE encoder vs random init"] = "linear_probe.png"


# ---------------------------------------------------------------------------------------------------
# Compare reconstructions of several models


def compare(paths: list[Path], spec: str | None, settings: Settings, report_dir: Path) -> dict[str, Any]:
    """Reconstruct the same held-out images with each model: a side-by-side grid and a sharpness figure.

    Sharpness = mean squared Laplacian of the reconstructions / that of the originals (1 = as sharp).
    """
    backends = [open_backend(p) for p in paths]
    # The images come at the size of a model with a fixed input size; a fully convolutional one (VQ-VAE)
    # takes them as they are, so a 32-pixel VAE and a 16-pixel-trained VQ-VAE still see the same crops.
    first = next((b.info for b in backends if not b.info.downsample), backends[0].info)
    for b in backends:
        same = (b.info.height, b.info.width) == (first.height, first.width)
        fits = bool(b.info.downsample) and first.height % int(b.info.downsample or 1) == 0
        if b.info.channels != first.channels or not (same or fits):
            raise UserError(
                f"--compare: {b.info.source} takes {b.info.channels}x{b.info.height}x{b.info.width}, "
                f"which cannot see the same images as {first.source}"
            )
    reference = next(b for b in backends if b.info is first)
    spec = spec or first.data or "photos"
    data = held_out(spec, reference, settings.n, settings.seed)
    names = [_model_name(p) for p in paths]
    recons: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    for name, b in zip(names, backends, strict=True):
        mask = None
        if b.info.kind == "mae":  # every MAE gets the same masks (a fresh generator of the same seed)
            masks = np.random.default_rng([settings.seed, 1])
            mask = random_masks(
                data.images.shape[0], int(b.info.num_patches or 0), settings.mask_ratio, masks
            )
        log(f"compare: reconstructing with {name}")
        recon = reconstruct(b, data.images, batch_size=settings.batch_size, mask=mask)
        recons.append(recon)
        rows.append(
            {
                "model": name,
                "kind": b.info.kind,
                "source": b.info.source,
                "psnr": _mean(metrics.psnr_per_image(data.images, recon)),
                "ssim": _mean(metrics.ssim_per_image(data.images, recon)),
                "sharpness_ratio": metrics.sharpness_ratio(data.images, recon),
            }
        )
    k = settings.grid_n
    grid = [
        np.concatenate([data.images[i : i + 1]] + [r[i : i + 1] for r in recons])
        for i in range(min(k, len(data.images)))
    ]
    report.save_grid(
        report_dir / "compare.png",
        grid,
        title=f"{data.description}: original | " + " | ".join(names),
        col_labels=["original", *names],
    )
    report.save_bars(
        report_dir / "sharpness.png",
        names,
        [r["sharpness_ratio"] for r in rows],
        title="high-frequency energy of reconstructions / originals (mean squared Laplacian)",
        ylabel="ratio",
        reference=1.0,
        reference_label="as sharp as the originals",
    )
    return {
        "data": {
            "spec": spec,
            "split": "val",
            "n_images": int(data.images.shape[0]),
            "description": data.description,
            "seed": settings.seed,
        },
        "models": rows,
        "report": str(report_dir),
        "figures": ["compare.png", "sharpness.png"],
    }


def _model_name(path: Path) -> str:
    """A short name for a model folder: the artifact's name, or the run's for RUN/checkpoint."""
    path = Path(path).resolve()
    return path.parent.name if path.name == "checkpoint" else path.name


# ---------------------------------------------------------------------------------------------------
# Writing back into the artifact


def write_artifact_metrics(
    folder: Path, result: Result, report_dir: Path, command: str, data: HeldOut
) -> None:
    """Put the metrics into manifest.json (replacing `metrics`) and the figures section into README.md."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["metrics"] = {
        k: round(float(v), 6) for k, v in result.metrics.items() if k in MANIFEST_METRIC_KEYS
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    card = folder / str(manifest.get("model_card") or "README.md")
    text = card.read_text() if card.is_file() else f"# {manifest.get('name', folder.name)}\n"
    card.write_text(replace_figures_section(text, figures_section(result, report_dir, folder, command, data)))


def figures_section(result: Result, report_dir: Path, folder: Path, command: str, data: HeldOut) -> str:
    """The model card's figures section (markdown), starting with FIGURES_HEADING."""
    # Relative to the card, so the links work wherever the repository (or the artifact) is checked out.
    where = Path(os.path.relpath(report_dir.resolve(), folder.resolve())).as_posix()
    lines = [
        FIGURES_HEADING,
        "",
        f"Measured by `{command}` on {data.description} ({result.details['n_images']} images).",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4g} |" for k, v in result.metrics.items()]
    lines.append("")
    for caption, name in result.figures.items():
        lines += [f"![{caption}]({where}/{name})", ""]
    return "\n".join(lines)


def replace_figures_section(card: str, section: str) -> str:
    """Replace the card's `## Figures` section (up to the next `## ` heading) with `section`, or append it."""
    pattern = re.compile(rf"^{re.escape(FIGURES_HEADING)}\s*$.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(card):
        return pattern.sub(lambda _: section.rstrip("\n") + "\n\n", card, count=1).rstrip("\n") + "\n"
    return card.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m training evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", type=Path, help="a checkpoint folder (torch)")
    p.add_argument("--artifact", type=Path, help="an exported artifact folder (ONNX Runtime)")
    p.add_argument(
        "--compare", type=Path, nargs="+", metavar="MODEL", help="artifacts/checkpoints side by side"
    )
    p.add_argument("--data", help="shapes, photos or a folder (default: the data the model was trained on)")
    p.add_argument(
        "--report", type=Path, help="figures folder (default: <artifact>/report, else reports/<name>)"
    )
    p.add_argument("--n", type=int, default=Settings.n, help="held-out images (default %(default)s)")
    p.add_argument(
        "--seed",
        type=int,
        default=Settings.seed,
        help="image choice (shapes, folders; photos' validation crops are fixed), eps, masks "
        "(default %(default)s)",
    )
    p.add_argument(
        "--mig-n", type=int, default=Settings.mig_n, help="shapes points for MIG (default %(default)s)"
    )
    p.add_argument(
        "--probe-n",
        type=int,
        default=Settings.probe_n,
        help="shapes images for the MAE linear probe (default %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=Settings.batch_size)
    p.add_argument(
        "--no-record",
        action="store_true",
        help="--artifact: measure only, leaving its manifest and model card as they are (by default the "
        "metrics replace the manifest's, which makes a new served version, and the card's figures section)",
    )
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    chosen = sum(x is not None for x in (args.checkpoint, args.artifact, args.compare))
    if chosen != 1:
        raise UserError("evaluate: give exactly one of CHECKPOINT, --artifact DIR or --compare A B ...")
    if args.no_record and args.artifact is None:
        raise UserError("evaluate: --no-record applies to --artifact only (nothing else is written back)")
    for name in ("n", "mig_n", "probe_n", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"evaluate: --{name.replace('_', '-')} must be at least 1")
    if args.report is not None:
        check_folder_path(args.report, "--report")
    settings = Settings(
        n=args.n, seed=args.seed, mig_n=args.mig_n, probe_n=max(args.probe_n, 8), batch_size=args.batch_size
    )
    start = time.perf_counter()
    if args.compare is not None:
        if len(args.compare) < 2:
            raise UserError("evaluate: --compare needs at least two models")
        out = compare(args.compare, args.data, settings, args.report or Path("reports") / "compare")
    else:
        out = run(args, settings)
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out, indent=2))
    return 0


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Evaluate one checkpoint or artifact (as the CLI does) and return the JSON result."""
    target = args.artifact or args.checkpoint
    backend = open_backend(target, artifact=args.artifact is not None)
    if args.artifact is None and isinstance(backend, OnnxBackend):
        raise UserError(f"{target} is an artifact; evaluate it with --artifact {target}")
    spec = args.data or backend.info.data
    if spec is None:
        raise UserError(f"{target} does not record its training data; pass --data SPEC")
    report_dir = args.report or (
        target / "report" if args.artifact else Path("reports") / _model_name(target)
    )
    data = held_out(str(spec), backend, settings.n, settings.seed)
    result = evaluate(backend, data, settings, report_dir)
    if args.artifact is not None and not args.no_record:
        command = shlex.join(
            [
                "python",
                "-m",
                "training",
                "evaluate",
                "--artifact",
                str(args.artifact),
                "--data",
                data.spec,
                "--n",
                str(settings.n),
                "--seed",
                str(settings.seed),
                *(["--report", str(args.report)] if args.report is not None else []),
            ]
        )
        write_artifact_metrics(args.artifact, result, report_dir, command, data)
        log(f"wrote metrics into {args.artifact / 'manifest.json'} and its model card")
    return {
        "model": {"kind": backend.info.kind, "source": backend.info.source, "trained_on": backend.info.data},
        "data": {
            "spec": data.spec,
            "split": "val",
            "n_images": int(data.images.shape[0]),
            "description": data.description,
            "seed": settings.seed,
        },
        "metrics": result.metrics,
        "details": result.details,
        "report": str(report_dir),
        "figures": result.figures,
    }
