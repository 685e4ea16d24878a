"""Variational autoencoder (Kingma & Welling 2014) and beta-VAE (Higgins et al. 2017), one class.

The stages are split so an exported graph never draws randomness: `encode` gives q(z|x) = N(mean, diag(exp
logvar)), the caller supplies eps ~ N(0, I), `decode` maps a latent to the mean image of p(x|z).
`loss` draws eps from the caller's generator and composes the stages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.bounds import check_bounds

LIKELIHOODS = ("bernoulli", "gaussian")

# The Gaussian's log-scale is clamped below: with a learned sigma the NLL rewards sigma -> 0 on pixels the
# decoder gets exactly right (flat backgrounds), which would blow up the loss scale.
_MIN_LOG_SIGMA = -6.0


@dataclass
class VAEConfig:
    kind: str = (
        "vae"  # "vae" (beta = 1) or "beta_vae"; reported by the model so artifacts name the right kind
    )
    image_size: int = 64  # square input side in pixels; a multiple of 16 (four stride-2 convolutions)
    channels: int = 3  # 1 = gray (shapes), 3 = RGB (photos)
    latent_dim: int = 64  # Z, size of the latent vector: ~10 for shapes factors, 32-128 for photos
    hidden_channels: int = 32  # width of the first conv; the last two convs use twice this
    fc_dim: int = 256  # width of the dense layer between the conv stack and the latent
    likelihood: str = (
        "gaussian"  # "bernoulli" for exactly binary images, "gaussian" (learned sigma) for photos
    )
    beta: float = 1.0  # weight of the KL term; 1 is the ELBO, > 1 pushes towards a factorised latent
    capacity_max: float = (
        0.0  # nats; > 0 turns on Burgess et al. (2018) capacity annealing, 0 = plain beta*KL
    )
    capacity_steps: int = 100_000  # steps over which the KL target C rises linearly from 0 to capacity_max
    init_log_sigma: float = -2.0  # start of the Gaussian's learned log-scale (sigma ~ 0.14 on [0, 1] pixels)

    def __post_init__(self) -> None:
        if self.kind not in ("vae", "beta_vae"):
            raise ValueError(f"VAEConfig.kind must be 'vae' or 'beta_vae', got {self.kind!r}")
        if self.image_size <= 0 or self.image_size % 16:
            raise ValueError(f"image_size must be a positive multiple of 16, got {self.image_size}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        check_bounds(
            self,
            positive=("latent_dim", "hidden_channels", "fc_dim", "beta", "capacity_steps"),
            non_negative=("capacity_max",),
        )
        if not math.isfinite(self.init_log_sigma):
            raise ValueError(f"init_log_sigma must be finite, got {self.init_log_sigma}")


# The dataclass defaults are vae's "default" preset (the photos model); the others list what they change.
# beta_vae's default is the shapes model: binary gray images, ~10 latents for the known generative factors.
_TINY = dict(image_size=32, channels=1, latent_dim=4, hidden_channels=4, fc_dim=32, likelihood="bernoulli")
_LARGE = dict(latent_dim=128, hidden_channels=64, fc_dim=512)
_SHAPES = dict(channels=1, latent_dim=10, likelihood="bernoulli", kind="beta_vae", beta=4.0)
PRESETS: dict[str, dict[str, dict]] = {
    "vae": {"tiny": _TINY, "default": {}, "large": _LARGE},
    "beta_vae": {"tiny": dict(_TINY, kind="beta_vae", beta=4.0), "default": _SHAPES,
                 "large": dict(_LARGE, **_SHAPES)},
}  # fmt: skip


class VAE(nn.Module):
    """Conv encoder -> (mean, logvar) [N, Z]; dense + transposed-conv decoder -> parameters of p(x|z)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.kind = config.kind
        c, h, z = config.channels, config.hidden_channels, config.latent_dim
        s = config.image_size // 16  # spatial side after four stride-2 convs
        widths = [c, h, h, 2 * h, 2 * h]
        down: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            down += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(
            *down,
            nn.Flatten(),
            nn.Linear(2 * h * s * s, config.fc_dim),
            nn.ReLU(),
            nn.Linear(config.fc_dim, 2 * z),
        )
        up: list[nn.Module] = []
        rev = widths[::-1]
        for i, (cin, cout) in enumerate(zip(rev[:-1], rev[1:], strict=True)):
            up.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
            if i < len(rev) - 2:
                up.append(nn.ReLU())
        self.decoder = nn.Sequential(
            nn.Linear(z, config.fc_dim),
            nn.ReLU(),
            nn.Linear(config.fc_dim, 2 * h * s * s),
            nn.ReLU(),
            nn.Unflatten(1, (2 * h, s, s)),
            *up,
        )
        # sigma-VAE (Rybkin, Daniilidis & Levine 2021): with a fixed sigma the reconstruction term's scale is
        # arbitrary, so "beta" silently re-weights the KL; learning one scalar sigma makes beta = 1 the ELBO.
        self.log_sigma = nn.Parameter(torch.tensor(float(config.init_log_sigma)))

    # --- stages -------------------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: [N, C, H, W] in [0, 1] -> (mean [N, Z], logvar [N, Z]) of q(z|x)."""
        h = self.encoder(x * 2.0 - 1.0)  # centre the input inside the graph, so callers feed [0, 1]
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # keeps exp(logvar) finite early in training

    def decode(self, z: Tensor) -> Tensor:
        """z: [N, Z] -> mean of p(x|z), [N, C, H, W] in [0, 1].

        Both likelihoods parameterise their mean as sigmoid(decoder output): the Bernoulli's probability, the
        Gaussian's mean (a sigmoid, not a clamp, so the mean stays in [0, 1] with a gradient everywhere).
        """
        return torch.sigmoid(self.decoder(z))

    def reparameterize(self, mean: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
        """z = mean + sigma * eps; eps [N, Z] comes from outside (zeros give the deterministic path)."""
        return mean + torch.exp(0.5 * logvar) * eps

    def sigma(self) -> Tensor:
        """The Gaussian likelihood's scale (scalar), after the lower clamp."""
        return torch.exp(self.log_sigma.clamp(min=_MIN_LOG_SIGMA))

    def neg_elbo(self, x: Tensor, eps: Tensor) -> dict[str, Tensor]:
        """One-sample negative ELBO per image.

        x: [N, C, H, W] in [0, 1]; eps: [N, Z]. Returns `nll` [N] and `kl` [N] in nats (summed over pixels /
        latents) and `bits_per_dim` [N] = (nll + kl) / (D ln 2), D = C*H*W. For the Gaussian on [0, 1]-scaled
        8-bit images, D ln 255 is added to the NLL first: the density of a [0, 1] value times the bin width
        1/255 (pixels are k / 255) approximates the probability of the 8-bit value, which makes the figure
        comparable to discrete models. The Bernoulli is already a probability of the (binary) data, so it
        needs none.
        """
        mean, logvar = self.encode(x)
        z = self.reparameterize(mean, logvar, eps)
        out = self.decoder(z)
        d = x[0].numel()
        if self.config.likelihood == "bernoulli":
            # -log p(x|z) = softplus(l) - x*l, with softplus written out stably: the exported form of
            # binary_cross_entropy_with_logits takes log(sigmoid(l)), which is -inf once a confident
            # decoder's logits pass about +-90, where this stays exact.
            softplus = F.relu(out) + torch.log1p(torch.exp(-out.abs()))
            nll = (softplus - x * out).flatten(1).sum(1)
            nll_discrete = nll
        else:
            log_sigma = self.log_sigma.clamp(min=_MIN_LOG_SIGMA)
            sq = ((x - torch.sigmoid(out)) / torch.exp(log_sigma)) ** 2
            nll = (0.5 * sq + log_sigma + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
            nll_discrete = nll + d * math.log(255.0)
        kl = 0.5 * (mean**2 + torch.exp(logvar) - 1.0 - logvar).sum(1)
        bits_per_dim = (nll_discrete + kl) / (d * math.log(2.0))
        return {"nll": nll, "kl": kl, "bits_per_dim": bits_per_dim}

    def capacity(self, step: int) -> float:
        """KL target C(step) in nats, rising linearly from 0 to capacity_max (0 when annealing is off)."""
        cfg = self.config
        return cfg.capacity_max * min(1.0, step / cfg.capacity_steps)

    def loss(
        self, x: Tensor, *, generator: torch.Generator | None, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Batch-mean of nll + beta*KL (or nll + beta*|KL - C(step)| with capacity annealing)."""
        n, z = x.shape[0], self.config.latent_dim
        gen_device = generator.device if generator is not None else x.device
        eps = torch.randn(n, z, generator=generator, device=gen_device).to(x.device)
        parts = self.neg_elbo(x, eps)
        nll, kl = parts["nll"].mean(), parts["kl"].mean()
        if self.config.capacity_max > 0:
            c = self.capacity(step)
            loss = nll + self.config.beta * (kl - c).abs()
        else:
            c = 0.0
            loss = nll + self.config.beta * kl
        logs = {
            "loss": loss.item(),
            "nll": nll.item(),
            "kl": kl.item(),
            "capacity": c,
            "bits_per_dim": parts["bits_per_dim"].mean().item(),
        }
        if self.config.likelihood == "gaussian":
            logs["sigma"] = self.sigma().item()
        return loss, logs
