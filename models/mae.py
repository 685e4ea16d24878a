"""Masked autoencoder (He et al. 2022), with the mask as an input instead of drawn inside the model.

Stages as in facebookresearch/mae: `patchify` / `unpatchify`, `random_mask` (outside the graph, from the
caller's generator), `forward_encoder` (ViT on the visible patches only), `forward_decoder` (mask tokens +
positions -> a prediction for every patch). Any mask works, including a different number of visible
patches per sample: patches are ordered visible-first, the batch keeps K = the largest visible count, and a
key-padding mask stops a sample's surplus slots (patches it actually masks) from being attended to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.bounds import check_bounds

# Added to attention logits of padding keys. Finite, not -inf: a sample with no visible patch at all then
# gets uniform (ignored) attention instead of NaNs from softmax over an all -inf row.
_NEG = -1e9
# Floor of the visible-pixel std used to standardise an image: a flat visible area (a clear sky) must not
# blow a tiny deviation up into a large input, nor the prediction's scale down to nothing. In [0, 1] units.
_MIN_STD = 0.02


@dataclass
class MAEConfig:
    kind: str = "mae"  # fixed; stored so a config dict names its model
    image_size: int = 64  # square input side in pixels; fixed, because the positional embeddings are
    channels: int = 3  # 1 = gray, 3 = RGB
    patch_size: int = 8  # patch side p; L = (image_size / p)^2 patches
    embed_dim: int = 128  # encoder width E (the embedding the service returns); a multiple of 4 (sin-cos)
    depth: int = 4  # encoder transformer blocks
    num_heads: int = 4  # encoder attention heads; divides embed_dim
    decoder_embed_dim: int = 64  # decoder width; the decoder is light because it only serves pre-training
    decoder_depth: int = 2  # decoder transformer blocks
    decoder_num_heads: int = 4  # decoder attention heads; divides decoder_embed_dim
    mlp_ratio: float = 4.0  # hidden width of each block's MLP relative to its input
    mask_ratio: float = 0.75  # fraction of patches removed in training (the paper's 75%)
    norm_pix_loss: bool = False  # regress per-patch normalised pixels; off so `reconstruct` gives pixels
    # Standardise each image by the mean and std of its *visible* pixels (per channel) before encoding, and
    # predict in that space: a photo darker, bluer or flatter than the training set then costs the model
    # nothing, and "predict 0" is already the mean-fill baseline. Uses only what the caller can see.
    visible_norm: bool = True

    def __post_init__(self) -> None:
        if self.kind != "mae":
            raise ValueError(f"MAEConfig.kind must be 'mae', got {self.kind!r}")
        if self.patch_size <= 0 or self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        check_bounds(
            self,
            positive=("embed_dim", "num_heads", "decoder_embed_dim", "decoder_num_heads", "mlp_ratio"),
            non_negative=("depth", "decoder_depth"),  # 0 blocks: patch embeddings alone, a valid ablation
        )
        for dim, heads in (
            (self.embed_dim, self.num_heads),
            (self.decoder_embed_dim, self.decoder_num_heads),
        ):
            if dim % 4 or dim % heads:
                raise ValueError(f"width {dim} must be a multiple of 4 and of its head count {heads}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")


# The dataclass defaults are the "default" preset (the bundled model); the others list what they change.
PRESETS: dict[str, dict[str, dict]] = {
    "mae": {
        "tiny": dict(image_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2.0,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2),
        "default": {},
        "large": dict(embed_dim=256, depth=8, num_heads=8, decoder_embed_dim=128, decoder_depth=4),
    }
}  # fmt: skip


def _sincos_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2D sine-cosine positional embeddings [grid*grid, dim], row-major; half the channels per axis."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def axis(pos: np.ndarray) -> np.ndarray:
        out = pos.reshape(-1)[:, None] * omega[None, :]  # [L, dim/4]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return torch.from_numpy(np.concatenate([axis(ys), axis(xs)], axis=1)).float()


class _Attention(nn.Module):
    """Multi-head self-attention with an additive key bias, written with matmul/softmax (exports cleanly)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_bias: Tensor | None) -> Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (N, heads, T, d/heads)
        scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(d // self.heads))  # (N, heads, T, T)
        if key_bias is not None:
            scores = scores + key_bias[:, None, None, :]
        out = scores.softmax(dim=-1) @ v  # (N, heads, T, d/heads)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)); x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, key_bias: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), key_bias)
        return x + self.mlp(self.norm2(x))


class MAE(nn.Module):
    """ViT encoder on visible patches + light ViT decoder that predicts the pixels of every patch."""

    kind = "mae"
    pos_embed: Tensor  # [L, E] fixed sin-cos positions of the encoder
    decoder_pos_embed: Tensor  # [L, Ed] fixed sin-cos positions of the decoder

    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.grid = cfg.image_size // cfg.patch_size
        self.num_patches = self.grid * self.grid  # L
        patch_dim = cfg.patch_size * cfg.patch_size * cfg.channels
        self.patch_embed = nn.Linear(patch_dim, cfg.embed_dim)
        self.register_buffer("pos_embed", _sincos_2d(cfg.embed_dim, self.grid), persistent=False)
        self.blocks = nn.ModuleList(
            _Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.decoder_embed = nn.Linear(cfg.embed_dim, cfg.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(cfg.decoder_embed_dim))
        self.register_buffer(
            "decoder_pos_embed", _sincos_2d(cfg.decoder_embed_dim, self.grid), persistent=False
        )
        self.decoder_blocks = nn.ModuleList(
            _Block(cfg.decoder_embed_dim, cfg.decoder_num_heads, cfg.mlp_ratio)
            for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(cfg.decoder_embed_dim)
        self.decoder_pred = nn.Linear(cfg.decoder_embed_dim, patch_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    # --- patches and masks --------------------------------------------------------------------------------
    def patchify(self, x: Tensor) -> Tensor:
        """x [N, C, H, W] -> patches [N, L, p*p*C], row-major patches, each (row, col, channel) flattened."""
        p, g, c = self.config.patch_size, self.grid, self.config.channels
        x = x.reshape(-1, c, g, p, g, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(-1, g * g, p * p * c)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """patches [N, L, p*p*C] -> x [N, C, H, W]; the inverse of `patchify`."""
        p, g, c = self.config.patch_size, self.grid, self.config.channels
        x = patches.reshape(-1, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(-1, c, g * p, g * p)

    def random_mask(self, n: int, ratio: float, generator: torch.Generator | None) -> Tensor:
        """A uniformly random mask [n, L] float32 (1 = remove, 0 = keep) with int(L*(1-ratio)) kept (>= 1)."""
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        length = self.num_patches
        keep = max(1, int(length * (1.0 - ratio)))
        device = generator.device if generator is not None else self.patch_embed.weight.device
        noise = torch.rand(n, length, generator=generator, device=device)
        ranks = noise.argsort(dim=1).argsort(dim=1)  # rank of each patch's noise within its sample
        return (ranks >= keep).float().to(self.patch_embed.weight.device)

    def _visible_stats(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std [N, C, 1, 1] of each image's visible pixels (all pixels if none is visible)."""
        p2c = self.config.patch_size**2 * self.config.channels
        keep = self.unpatchify((1.0 - (mask >= 0.5).float())[:, :, None].expand(-1, -1, p2c))  # (N, C, H, W)
        count = keep.sum((2, 3), keepdim=True)
        keep = torch.where(count > 0, keep, torch.ones_like(keep))
        count = keep.sum((2, 3), keepdim=True)
        mean = (x * keep).sum((2, 3), keepdim=True) / count
        var = (((x - mean) * keep) ** 2).sum((2, 3), keepdim=True) / count
        return mean, var.clamp(min=_MIN_STD**2).sqrt()

    def _standardise(self, x: Tensor, mask: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """x in [0, 1] -> (the encoder's input space: visible-pixel standardised, or [-1, 1]; the visible
        mean and std used, to map a prediction back, or None without visible_norm)."""
        if not self.config.visible_norm:
            return x * 2.0 - 1.0, None
        mean, std = self._visible_stats(x, mask)
        return (x - mean) / std, (mean, std)

    # --- stages -------------------------------------------------------------------------------------------
    def forward_encoder(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible patches of x [N, C, H, W] in [0, 1]; see `_encode`."""
        return self._encode(self._standardise(x, mask)[0], mask)

    def _encode(self, standardised: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible patches.

        standardised [N, C, H, W] (x through `_standardise`); mask [N, L] (1 = remove, 0 = keep). Returns
        latent [N, K, E] (K = the batch's largest visible count), ids_keep [N, K] int64 (the patch index of
        each slot, visible patches first in row-major order) and valid [N, K] bool (False for a slot that
        only pads a sample with fewer visible patches; its latent is meaningless).
        """
        length = self.num_patches
        tokens = self.patch_embed(self.patchify(standardised)) + self.pos_embed  # (N, L, E)
        device = standardised.device
        removed = (mask >= 0.5).float()
        num_visible = (length - removed.sum(1)).long()  # (N,)
        # Keys removed*L + index are all distinct, so a plain argsort gives visible-first, row-major order
        # without relying on a stable sort (ONNX TopK's tie order is not something to lean on).
        order = torch.argsort(
            removed * length + torch.arange(length, device=device, dtype=torch.float32), dim=1
        )
        k = num_visible.max().clamp(min=1)  # a tensor, so the exported graph keeps K data dependent
        ids_keep = order[:, :k]  # (N, K)
        valid = torch.arange(length, device=device)[None, :k] < num_visible[:, None]  # (N, K)
        latent = torch.gather(tokens, 1, ids_keep[:, :, None].expand(-1, -1, tokens.shape[2]))
        key_bias = (~valid).float() * _NEG
        for block in self.blocks:
            latent = block(latent, key_bias)
        return self.norm(latent), ids_keep, valid

    def forward_decoder(self, latent: Tensor, ids_keep: Tensor, valid: Tensor) -> Tensor:
        """latent [N, K, E], ids_keep [N, K], valid [N, K] -> prediction [N, L, p*p*C] for every patch."""
        visible = self.decoder_embed(latent)  # (N, K, Ed)
        n, d = visible.shape[0], visible.shape[2]
        visible = torch.where(valid[:, :, None], visible, self.mask_token.to(visible.dtype))
        full = self.mask_token.to(visible.dtype).expand(n, self.num_patches, d)
        # Padding slots point at patches their sample removes and carry the mask token, so writing them is
        # a no-op: every removed patch gets the mask token, every visible one its encoder output.
        full = full.scatter(1, ids_keep[:, :, None].expand(-1, -1, d), visible) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            full = block(full)
        return self.decoder_pred(self.decoder_norm(full))

    def reconstruct(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [N, C, H, W] in [0, 1], mask [N, L] -> the prediction of every patch, [N, C, H, W] in [0, 1]."""
        if self.config.norm_pix_loss:
            raise ValueError(
                "this MAE predicts per-patch normalised pixels (norm_pix_loss); it cannot reconstruct"
            )
        standardised, stats = self._standardise(x, mask)  # the visible statistics, computed once
        pred = self.unpatchify(self.forward_decoder(*self._encode(standardised, mask)))
        if stats is not None:
            mean, std = stats
            pred = pred * std + mean
        return pred.clamp(0.0, 1.0)

    def embed(self, x: Tensor) -> Tensor:
        """x [N, C, H, W] in [0, 1] -> mean of the encoder's tokens over all patches (no mask), [N, E]."""
        latent, _, _ = self.forward_encoder(x, torch.zeros(x.shape[0], self.num_patches, device=x.device))
        return latent.mean(dim=1)

    def loss(
        self, x: Tensor, *, generator: torch.Generator | None, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Mean squared error on the removed patches only, with a fresh random mask at config.mask_ratio."""
        mask = self.random_mask(x.shape[0], self.config.mask_ratio, generator)
        standardised, stats = self._standardise(x, mask)
        pred = self.forward_decoder(*self._encode(standardised, mask))  # (N, L, P)
        target = self.patchify(standardised if stats is not None else x)
        if self.config.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = F.mse_loss(pred, target, reduction="none").mean(-1)  # (N, L)
        loss = (per_patch * mask).sum() / mask.sum().clamp(min=1.0)
        visible_mse = (per_patch * (1 - mask)).sum() / (1 - mask).sum().clamp(min=1.0)
        return loss, {
            "loss": loss.item(),
            "visible_mse": visible_mse.item(),
            "mask_ratio": mask.mean().item(),
        }
