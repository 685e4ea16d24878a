"""VQ-VAE (van den Oord et al. 2017) with an EMA codebook, k-means initialisation and dead-code restarts.

Optionally (`normalize`) the lookup is on the unit sphere: z_e and every code are l2-normalised, so the
nearest code is the one of highest cosine similarity. With a small code_dim this is the factorised,
l2-normalised lookup of Yu et al. (2022, "Vector-quantized image modeling with improved VQGAN"), which
spreads the codes over the sphere and keeps far more of the codebook in use than a Euclidean lookup.

Fully convolutional: an image whose sides are multiples of 4 encodes to a token grid a quarter its size.
Quantisation (`quantize`) is a pure function of z_e and the codebook; the codebook only changes inside
`loss` in training mode, where the randomness it needs (k-means seeds, restart picks) comes from the
caller's generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from models.bounds import check_bounds

DOWNSAMPLE = 4  # two stride-2 convolutions, as in the paper


@dataclass
class VQVAEConfig:
    kind: str = "vqvae"  # fixed; stored so a config dict names its model
    image_size: int = 64  # training side in pixels; the model itself takes any multiple of 4
    channels: int = 3  # 1 = gray, 3 = RGB
    hidden_channels: int = 64  # width of the conv stacks (the paper uses 256 on ImageNet)
    num_residual_blocks: int = 2  # residual blocks after the down-convs and before the up-convs
    codebook_size: int = 512  # K, number of code vectors (tokens take values 0..K-1)
    code_dim: int = 64  # D, size of each code vector and of z_e's channel axis
    # l2-normalise z_e and the codes: a cosine-similarity lookup on the unit sphere. False (the paper's
    # Euclidean lookup) is the field's default so checkpoints saved before it existed load unchanged.
    normalize: bool = False
    commitment: float = 0.25  # beta of the commitment loss ||z_e - sg[e]||^2, the paper's value
    ema_decay: float = 0.99  # EMA of code counts and sums; lower adapts faster but is noisier
    ema_epsilon: float = 1e-5  # Laplace smoothing of the EMA counts, so an unused code never divides by 0
    dead_code_threshold: float = 1.0  # a code whose EMA count (vectors per batch) falls below is re-seeded
    kmeans_iters: int = 10  # Lloyd iterations of the k-means initialisation on the first training batch
    # Codebook-entropy regulariser (0 = off): adds weight * (log K - H(mean soft assignment over the batch))
    # to the loss, a soft assignment being softmax(-squared distance / temperature) over the codes. It
    # pushes the encoder to spread a batch over the whole codebook (a flatter code distribution).
    entropy_weight: float = 0.0
    entropy_temperature: float = 0.05

    def __post_init__(self) -> None:
        if self.kind != "vqvae":
            raise ValueError(f"VQVAEConfig.kind must be 'vqvae', got {self.kind!r}")
        if self.image_size <= 0 or self.image_size % DOWNSAMPLE:
            raise ValueError(f"image_size must be a positive multiple of {DOWNSAMPLE}, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.codebook_size < 2 or self.code_dim < 1:
            raise ValueError("codebook_size must be >= 2 and code_dim >= 1")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.hidden_channels < 2:  # the first down-conv is hidden_channels // 2 wide
            raise ValueError(f"hidden_channels must be >= 2, got {self.hidden_channels}")
        check_bounds(
            self,
            positive=("ema_epsilon", "entropy_temperature"),
            non_negative=(
                "num_residual_blocks", "commitment", "dead_code_threshold", "kmeans_iters", "entropy_weight",
            ),
        )  # fmt: skip


# The presets use the factorised, normalised lookup (an 8-dim unit-sphere code kept 91.8% of the codebook in
# use on held-out photographs against 89.5% for the paper's 64-dim Euclidean one, at a higher PSNR), the
# codebook-entropy regulariser (which took held-out usage to 99%) and restarts below 4 vectors per batch
# (artifacts/vqvae/README.md). The dataclass defaults are the paper's layout.
_SPHERE = dict(code_dim=8, normalize=True, dead_code_threshold=4.0, entropy_weight=0.01)
PRESETS: dict[str, dict[str, dict]] = {
    "vqvae": {
        "tiny": dict(image_size=16, hidden_channels=8, num_residual_blocks=1, codebook_size=16, code_dim=4,
                     normalize=True, kmeans_iters=3),
        "default": _SPHERE,
        "large": dict(_SPHERE, hidden_channels=128, codebook_size=1024),
    }
}  # fmt: skip


class _Residual(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), the paper's residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def _sample_rows(flat: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """n rows of flat [M, D] drawn from `generator`, without replacement when M >= n.

    Distinct picks matter: two equal codes tie in every distance, and torch and ONNX Runtime may break a
    tie that their matmuls round differently in different ways.
    """
    m = flat.shape[0]
    gen_device = generator.device if generator is not None else flat.device
    if m >= n:
        idx = torch.randperm(m, generator=generator, device=gen_device)[:n]
    else:
        idx = torch.randint(m, (n,), generator=generator, device=gen_device)
    return flat[idx.to(flat.device)]


def squared_distances(flat: Tensor, embed: Tensor) -> Tensor:
    """Squared distances ||z||^2 - 2 z.e + ||e||^2 of flat [M, D] to the codes [K, D]: [M, K]."""
    return (flat**2).sum(1, keepdim=True) - 2.0 * flat @ embed.t() + (embed**2).sum(1)[None, :]


class VectorQuantizer(nn.Module):
    """Nearest-code lookup in a codebook [K, D] kept by exponential moving averages (no gradient)."""

    embed: Tensor  # [K, D] the code vectors
    ema_count: Tensor  # [K] EMA of how many vectors each code got per batch
    ema_sum: Tensor  # [K, D] EMA of the sum of those vectors
    initialized: Tensor  # bool scalar; saved, so a loaded model never re-runs k-means

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = config
        k, d = config.codebook_size, config.code_dim
        # Buffers, not parameters: the optimizer never touches the codebook; only `update` moves it.
        # The random start is a placeholder for eval before training; k-means replaces it on the first batch.
        self.register_buffer("embed", torch.randn(k, d) * 0.1)
        self.register_buffer("ema_count", torch.zeros(k))
        self.register_buffer("ema_sum", torch.zeros(k, d))
        self.register_buffer("initialized", torch.tensor(False))

    def nearest(self, flat: Tensor) -> Tensor:
        """flat [M, D] -> index of the nearest code [M] int64, squared distances computed in fp32.

        ||z||^2 - 2 z.e + ||e||^2 rather than torch.cdist: it exports to ONNX as MatMul + ReduceSum, and
        autocast is switched off so a half-precision matmul can never flip the argmin. With `normalize`,
        flat is l2-normalised first (the codes already are), so any vector, not only an encoder output,
        finds the code of highest cosine similarity.
        """
        with torch.autocast(device_type=flat.device.type, enabled=False):
            return squared_distances(self.project(flat.float()), self.embed.float()).argmin(dim=1)

    def project(self, v: Tensor) -> Tensor:
        """v [..., D] onto the unit sphere when the lookup is normalised; unchanged otherwise."""
        return F.normalize(v, dim=-1) if self.config.normalize else v

    @torch.no_grad()
    def initialize(self, flat: Tensor, generator: torch.Generator | None) -> None:
        """k-means (spherical when normalised) on encoder outputs flat [M, D]; seeds codebook and EMA."""
        flat = self.project(flat.float())
        k = self.config.codebook_size
        self.embed.copy_(_sample_rows(flat, k, generator))
        for _ in range(self.config.kmeans_iters):
            idx = self.nearest(flat)
            counts = torch.bincount(idx, minlength=k).float()
            sums = torch.zeros_like(self.embed).index_add_(0, idx, flat)
            used = counts > 0  # empty clusters keep their seed; the dead-code restart handles them later
            self.embed[used] = self.project(sums[used] / counts[used, None])
        counts = torch.bincount(self.nearest(flat), minlength=k).float()
        self.ema_count.copy_(counts)
        self.ema_sum.copy_(self.embed * counts[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def seed_statistics(self, vectors_per_step: float) -> None:
        """Seed the EMA statistics for the codebook as it is, in place of k-means: for codes read from an
        exported artifact, whose graphs hold the codes but not their statistics.

        Every code gets the same count: the average share of `vectors_per_step` (the global batch's encoder
        vectors), but at least enough to stay above the restart threshold for one EMA time constant
        (1 / (1 - ema_decay) steps) without being used, so the statistics learn each code's real use before
        a restart can take it, whatever the batch size.
        """
        cfg = self.config
        grace = cfg.dead_code_threshold * cfg.ema_decay ** (-1.0 / (1.0 - cfg.ema_decay))
        count = max(vectors_per_step / cfg.codebook_size, grace)
        self.ema_count.fill_(count)
        self.ema_sum.copy_(self.embed * count)
        self.initialized.fill_(True)

    @torch.no_grad()
    def update(self, flat: Tensor, tokens: Tensor, generator: torch.Generator | None) -> int:
        """One EMA step from flat [M, D] and its tokens [M]; then re-seeds dead codes. Returns how many."""
        cfg = self.config
        flat = self.project(flat.float())
        counts = torch.bincount(tokens, minlength=cfg.codebook_size).float()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, tokens, flat)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # data parallel: the EMA follows the whole global batch, not one rank's share of it
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.ema_count.mul_(cfg.ema_decay).add_(counts, alpha=1 - cfg.ema_decay)
        self.ema_sum.mul_(cfg.ema_decay).add_(sums, alpha=1 - cfg.ema_decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + cfg.ema_epsilon) / (n + cfg.codebook_size * cfg.ema_epsilon) * n
        self.embed.copy_(self.project(self.ema_sum / smoothed[:, None]))
        dead = (self.ema_count < cfg.dead_code_threshold).nonzero().squeeze(1)
        if dead.numel():
            # Re-seed on encoder outputs of this batch, so a dead code lands where the data is; it starts with
            # the threshold's count and gets one EMA-decay's grace before it can be restarted again.
            picks = _sample_rows(flat, dead.numel(), generator)
            self.embed[dead] = picks
            self.ema_count[dead] = cfg.dead_code_threshold
            self.ema_sum[dead] = picks * cfg.dead_code_threshold
        return int(dead.numel())


class VQVAE(nn.Module):
    """Encoder x -> z_e [N, D, H/4, W/4]; quantiser -> tokens; decoder tokens/z_q -> image in [0, 1]."""

    kind = "vqvae"

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = config
        c, h, d = config.channels, config.hidden_channels, config.code_dim
        res = [_Residual(h) for _ in range(config.num_residual_blocks)]
        self.encoder = nn.Sequential(
            nn.Conv2d(c, h // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(h // 2, h, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1),
            *res,
            nn.ReLU(),
            nn.Conv2d(h, d, 1),
        )
        res = [_Residual(h) for _ in range(config.num_residual_blocks)]
        self.decoder = nn.Sequential(
            nn.Conv2d(d, h, 3, padding=1),
            *res,
            nn.ReLU(),
            nn.ConvTranspose2d(h, h // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(h // 2, c, 4, stride=2, padding=1),
        )
        self.quantizer = VectorQuantizer(config)

    @property
    def codebook(self) -> Tensor:
        """The code vectors, [K, D]."""
        return self.quantizer.embed

    # --- stages -------------------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """x [N, C, H, W] in [0, 1], H and W multiples of 4 -> z_e [N, D, H/4, W/4] (unit vectors along D
        when the lookup is normalised)."""
        z_e = self.encoder(x * 2.0 - 1.0)  # centre inside the graph so callers feed [0, 1]
        return F.normalize(z_e, dim=1) if self.config.normalize else z_e

    def quantize(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """z_e [N, D, h, w] -> (z_q [N, D, h, w], the nearest code vectors; tokens [N, h, w] int64)."""
        n, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # [N*h*w, D]
        tokens = self.quantizer.nearest(flat).reshape(n, h, w)
        return self.lookup(tokens), tokens

    def lookup(self, tokens: Tensor) -> Tensor:
        """tokens [N, h, w] int64 -> code vectors z_q [N, D, h, w]."""
        return F.embedding(tokens, self.codebook).permute(0, 3, 1, 2)

    def decode(self, z_q: Tensor) -> Tensor:
        """z_q [N, D, h, w] -> image [N, C, 4h, 4w] in [0, 1]."""
        return torch.sigmoid(self.decoder(z_q))

    def decode_tokens(self, tokens: Tensor) -> Tensor:
        """tokens [N, h, w] int64 -> image [N, C, 4h, 4w] in [0, 1]."""
        return self.decode(self.lookup(tokens))

    def decode_continuous(self, z_e: Tensor) -> tuple[Tensor, Tensor]:
        """z_e [N, D, h, w] -> (image [N, C, 4h, 4w] in [0, 1], tokens [N, h, w]): quantise, then decode."""
        z_q, tokens = self.quantize(z_e)
        return self.decode(z_q), tokens

    # --- training -----------------------------------------------------------------------------------------
    def _entropy_gap(self, z_e: Tensor) -> Tensor:
        """log K - entropy of the batch's mean soft code assignment: 0 when the batch uses every code
        equally (differentiable in z_e; the codebook is a buffer)."""
        cfg = self.config
        flat = self.quantizer.project(z_e.permute(0, 2, 3, 1).reshape(-1, cfg.code_dim).float())
        embed = self.codebook.detach().float().clone()  # the EMA step updates the buffer in place later
        mean = torch.softmax(-squared_distances(flat, embed) / cfg.entropy_temperature, dim=1).mean(0)
        entropy = -(mean * torch.log(mean.clamp(min=1e-10))).sum()
        return math.log(cfg.codebook_size) - entropy

    def loss(
        self, x: Tensor, *, generator: torch.Generator | None, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        """MSE reconstruction + commitment * ||z_e - sg[z_q]||^2 (per-element means).

        In training mode the codebook is k-means-initialised on the first call and EMA-updated after the
        lookup (codes do not get gradients); in eval mode it is left as it is.
        """
        cfg = self.config
        z_e = self.encode(x)
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, cfg.code_dim)
        if self.training and not bool(self.quantizer.initialized):
            self.quantizer.initialize(flat, generator)
        z_q, tokens = self.quantize(z_e)
        z_st = (
            z_e + (z_q - z_e).detach()
        )  # straight-through: decoder gradient passes to the encoder unchanged
        recon = self.decode(z_st)
        mse = F.mse_loss(recon, x)
        commit = F.mse_loss(z_e.float(), z_q.detach().float())
        loss = mse + cfg.commitment * commit
        if cfg.entropy_weight > 0 and self.training:
            loss = loss + cfg.entropy_weight * self._entropy_gap(z_e)
        counts = torch.bincount(tokens.flatten(), minlength=cfg.codebook_size).float()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs.clamp(min=1e-10))).sum())
        restarted = self.quantizer.update(flat, tokens.flatten(), generator) if self.training else 0
        logs = {
            "loss": loss.item(),
            "mse": mse.item(),
            "commitment": commit.item(),
            "perplexity": perplexity.item(),
            "codebook_usage": (counts > 0).float().mean().item(),
            "dead_restarts": float(restarted),
        }
        return loss, logs
