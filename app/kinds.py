"""Per-kind adapters: which graphs a kind has, which operations it supports, and the few steps that
differ between kinds. Every operation has one generic path (app/operations.py, app/routes/models.py)
that calls these small methods.

Arrays: images float32 [N, C, H, W] in [0, 1]; VAE latents float32 [N, Z]; VQ-VAE continuous latents
z_e float32 [N, D, H', W'] and tokens int64 [N, H', W']; MAE masks float32 [N, L] (1 = removed).
"""

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from app.manifest import Manifest, ManifestError, positive_int
from app.operations import expand_patch_mask, random_patch_masks

Feeds = dict[str, np.ndarray]


class GraphRunner(Protocol):
    """What an adapter needs from a loaded model: its manifest, codebook and batched graph runs."""

    @property
    def manifest(self) -> Manifest | None: ...

    async def run(self, graph: str, feeds: Feeds) -> Feeds: ...


def manifest_of(model: GraphRunner) -> Manifest:
    """The manifest of a model that is serving (adapters only ever see ready models)."""
    if model.manifest is None:
        raise ValueError("the model has no manifest")
    return model.manifest


def output(outputs: Feeds, name: str) -> np.ndarray:
    """A graph output by its documented name; a single-output graph's only output under any name."""
    if name in outputs:
        return outputs[name]
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    raise KeyError(f"the graph has no output {name!r} (outputs: {sorted(outputs)})")


@dataclass(frozen=True)
class Score:
    values: np.ndarray  # float [N], one per image
    method: str  # what was computed, for the response
    unit: str


def per_image_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared error per image of two [N, ...] arrays, float64 [N]."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    return np.asarray((diff**2).reshape(len(a), -1).mean(axis=1))


class KindAdapter:
    """Defaults shared by every kind; subclasses set the class attributes and override what differs."""

    kind: ClassVar[str]
    graphs: ClassVar[tuple[str, ...]]
    operations: ClassVar[tuple[str, ...]]
    fully_convolutional: ClassVar[bool] = False
    latent_input: ClassVar[str | None] = None  # the decode request's field
    files: ClassVar[tuple[str, ...]] = ()  # extra artifact files (manifest "files") the kind needs
    # Graphs served when the manifest has them; artifacts exported before they existed still load.
    optional_graphs: ClassVar[tuple[str, ...]] = ()

    def served_graphs(self, m: Manifest) -> tuple[str, ...]:
        """The required graphs, then the optional ones this artifact has."""
        return (*self.graphs, *(g for g in self.optional_graphs if g in m.graphs))

    def image_feed(self, m: Manifest) -> np.ndarray:
        return np.zeros((1, m.channels, m.height, m.width), np.float32)

    def warmup_feeds(self, m: Manifest, graph: str) -> Feeds:
        """A batch-1 input per graph at the manifest's size, run once before the service is ready."""
        raise NotImplementedError

    def check(self, m: Manifest) -> None:
        """Refuse (ManifestError) a manifest that lacks or mistypes a field this kind's operations read."""

    def latent_shape(self, m: Manifest, height: int, width: int) -> tuple[int, ...]:
        """The continuous latent of one image of this size (no batch axis)."""
        raise NotImplementedError

    def pixels(self, m: Manifest, input_name: str, shape: list[int]) -> int:
        """Image pixels (height x width, summed over the batch) that one graph input of this shape
        stands for: what the request limits (AESERVE_MAX_PIXELS) are checked against before running."""
        return shape[0] * m.height * m.width

    def spatial_problem(self, m: Manifest, input_name: str, shape: list[int]) -> str | None:
        """Why a graph input of this shape cannot run, for the sides a fixed-size graph does not pin
        (None when it can): the Open Inference Protocol route's check before ONNX Runtime sees it."""
        return None

    def feeds_problem(self, m: Manifest, feeds: Feeds) -> str | None:
        """Why these graph inputs, each well formed, hold values the graph was not made for (None when
        they do not): checked by the Open Inference Protocol route, whose clients build raw tensors."""
        return None

    async def to_latent(self, model: GraphRunner, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    async def from_latent(self, model: GraphRunner, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    async def reconstruct(self, model: GraphRunner, x: np.ndarray) -> np.ndarray:
        if "reconstruct" in self.optional_graphs and "reconstruct" in manifest_of(model).graphs:
            # the fused graph: one batched run instead of an encoder run and a decoder run
            return (await model.run("reconstruct", {"image": x}))["reconstruction"]
        return await self.from_latent(model, await self.to_latent(model, x))

    async def encode(self, model: GraphRunner, x: np.ndarray) -> Feeds:
        raise NotImplementedError

    async def score(self, model: GraphRunner, x: np.ndarray, *, samples: int, seed: int) -> Score:
        recon = await self.reconstruct(model, x)
        return Score(per_image_mse(x, recon), "reconstruction MSE against the fitted input", "mse")


class VAEAdapter(KindAdapter):
    kind = "vae"
    graphs = ("encoder", "decoder", "elbo")
    optional_graphs = ("reconstruct",)
    operations = ("reconstruct", "encode", "decode", "interpolate", "sample", "traverse", "score")
    latent_input = "latent"

    def z_dim(self, m: Manifest) -> int:
        return int(m.latent["shape"][0])

    def check(self, m: Manifest) -> None:
        shape = m.latent.get("shape")
        if not isinstance(shape, list) or len(shape) != 1:
            raise ManifestError(f"manifest.json: latent.shape must be [Z] for a {self.kind}, not {shape!r}")
        positive_int(shape[0], "latent.shape[0]")

    def warmup_feeds(self, m: Manifest, graph: str) -> Feeds:
        z = np.zeros((1, self.z_dim(m)), np.float32)
        return {
            "encoder": {"image": self.image_feed(m)},
            "decoder": {"latent": z},
            "elbo": {"image": self.image_feed(m), "eps": z},
            "reconstruct": {"image": self.image_feed(m)},
        }[graph]

    def latent_shape(self, m: Manifest, height: int, width: int) -> tuple[int, ...]:
        return (self.z_dim(m),)

    async def to_latent(self, model: GraphRunner, x: np.ndarray) -> np.ndarray:
        return (await model.run("encoder", {"image": x}))["mean"]

    async def from_latent(self, model: GraphRunner, z: np.ndarray) -> np.ndarray:
        return (await model.run("decoder", {"latent": z.astype(np.float32)}))["image"]

    async def encode(self, model: GraphRunner, x: np.ndarray) -> Feeds:
        out = await model.run("encoder", {"image": x})
        return {"mean": out["mean"], "logvar": out["logvar"]}

    async def score(self, model: GraphRunner, x: np.ndarray, *, samples: int, seed: int) -> Score:
        n, zdim = len(x), self.z_dim(manifest_of(model))
        if samples == 0:
            eps = np.zeros((n, zdim), np.float32)
            bpd = (await model.run("elbo", {"image": x, "eps": eps}))["bits_per_dim"]
            return Score(bpd.astype(np.float64), "negative ELBO with eps=0 (z = mean)", "bits/dim")
        # All samples in one run: the batch holds `samples` copies of every image. Every image gets the
        # same `samples` draws, so its score does not depend on the other images in the request.
        draws = np.random.default_rng(seed).standard_normal((samples, zdim)).astype(np.float32)
        eps = np.repeat(draws, n, axis=0)  # row s * n + i: draw s for image i, as np.tile lays out x
        bpd = (await model.run("elbo", {"image": np.tile(x, (samples, 1, 1, 1)), "eps": eps}))["bits_per_dim"]
        mean = bpd.astype(np.float64).reshape(samples, n).mean(axis=0)
        return Score(mean, f"negative ELBO averaged over {samples} seeded samples (seed {seed})", "bits/dim")


class BetaVAEAdapter(VAEAdapter):
    kind = "beta_vae"


class VQVAEAdapter(KindAdapter):
    kind = "vqvae"
    graphs = ("encoder", "decoder", "decoder_continuous")
    optional_graphs = ("reconstruct",)
    operations = ("reconstruct", "encode", "decode", "interpolate", "tokens", "codebook", "score")
    fully_convolutional = True
    latent_input = "tokens"
    files = ("codebook",)

    def downsample(self, m: Manifest) -> int:
        return int(m.latent.get("downsample") or m.spatial_multiple or 1)

    def code_dim(self, m: Manifest) -> int:
        return int(m.latent.get("code_dim") or m.latent["shape"][0])

    def check(self, m: Manifest) -> None:
        positive_int(m.latent.get("codebook_size"), "latent.codebook_size")
        shape = m.latent.get("shape")
        if m.latent.get("code_dim") is not None:
            positive_int(m.latent["code_dim"], "latent.code_dim")
        elif isinstance(shape, list) and shape:
            positive_int(shape[0], "latent.shape[0]")
        else:
            raise ManifestError("manifest.json: a vqvae needs latent.code_dim or latent.shape [D, h, w]")
        if m.latent.get("downsample") is not None:
            positive_int(m.latent["downsample"], "latent.downsample")

    def token_grid(self, m: Manifest, height: int, width: int) -> tuple[int, int]:
        d = self.downsample(m)
        return height // d, width // d

    def warmup_feeds(self, m: Manifest, graph: str) -> Feeds:
        h, w = self.token_grid(m, m.height, m.width)
        return {
            "encoder": {"image": self.image_feed(m)},
            "decoder": {"tokens": np.zeros((1, h, w), np.int64)},
            "decoder_continuous": {"z_e": np.zeros((1, self.code_dim(m), h, w), np.float32)},
            "reconstruct": {"image": self.image_feed(m)},
        }[graph]

    def latent_shape(self, m: Manifest, height: int, width: int) -> tuple[int, ...]:
        return (self.code_dim(m), *self.token_grid(m, height, width))

    def pixels(self, m: Manifest, input_name: str, shape: list[int]) -> int:
        # Fully convolutional: the size comes from the input. Grids (tokens [N, h, w], z_e [N, D, h, w])
        # decode to images `downsample` times larger on each side.
        h, w = shape[-2], shape[-1]
        scale = 1 if input_name == "image" else self.downsample(m) ** 2
        return shape[0] * h * w * scale

    def spatial_problem(self, m: Manifest, input_name: str, shape: list[int]) -> str | None:
        h, w = shape[-2], shape[-1]
        if input_name == "image":
            d = self.downsample(m)
            if h < d or w < d or h % d or w % d:
                return f"image sides must be positive multiples of {d}, got {h}x{w}"
        elif h < 1 or w < 1:
            return f"a {input_name} grid needs at least one row and one column, got {h}x{w}"
        return None

    async def to_latent(self, model: GraphRunner, x: np.ndarray) -> np.ndarray:
        return (await model.run("encoder", {"image": x}))["z_e"]

    async def from_latent(self, model: GraphRunner, z: np.ndarray) -> np.ndarray:
        return (await model.run("decoder_continuous", {"z_e": z.astype(np.float32)}))["image"]

    async def encode(self, model: GraphRunner, x: np.ndarray) -> Feeds:
        out = await model.run("encoder", {"image": x})
        return {"tokens": out["tokens"], "z_e": out["z_e"]}  # tokens first: the main array

    async def decode_tokens(self, model: GraphRunner, tokens: np.ndarray) -> np.ndarray:
        return (await model.run("decoder", {"tokens": tokens.astype(np.int64)}))["image"]


class MAEAdapter(KindAdapter):
    kind = "mae"
    graphs = ("reconstruct", "encoder")
    operations = ("reconstruct", "encode", "inpaint", "score")
    score_mask_ratio: ClassVar[float] = 0.75

    def feeds_problem(self, m: Manifest, feeds: Feeds) -> str | None:
        mask = feeds.get("mask")
        if mask is not None and not np.all((mask == 0) | (mask == 1)):
            return "input 'mask' must hold 0 (visible patch) or 1 (hidden patch) only"
        return None

    def check(self, m: Manifest) -> None:
        patch = positive_int(m.patch_size, "patch_size")
        if m.height % patch or m.width % patch:
            raise ManifestError(f"manifest.json: patch_size {patch} does not divide {m.height}x{m.width}")
        if m.num_patches is not None and m.num_patches != (m.height // patch) * (m.width // patch):
            raise ManifestError(f"manifest.json: num_patches {m.num_patches} is not the image's patch count")

    def num_patches(self, m: Manifest) -> int:
        return int(m.num_patches or (m.height // self.patch(m)) * (m.width // self.patch(m)))

    def patch(self, m: Manifest) -> int:
        if not m.patch_size:
            raise ValueError("an MAE manifest needs patch_size")
        return m.patch_size

    def warmup_feeds(self, m: Manifest, graph: str) -> Feeds:
        mask = np.zeros((1, self.num_patches(m)), np.float32)
        return {
            "reconstruct": {"image": self.image_feed(m), "mask": mask},
            "encoder": {"image": self.image_feed(m)},
        }[graph]

    async def predict(self, model: GraphRunner, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The decoder's prediction of every patch, [N, C, H, W]; mask [N, L] (1 = removed)."""
        return output(await model.run("reconstruct", {"image": x, "mask": mask.astype(np.float32)}), "image")

    async def reconstruct(self, model: GraphRunner, x: np.ndarray) -> np.ndarray:
        """What an MAE is trained to do: 75% of the patches removed (a fixed seeded mask, so the answer is
        reproducible), the visible ones kept, the removed ones predicted. An unmasked pass would show
        the decoder's guesses for patches it was never trained to return; `/inpaint` takes any mask."""
        m = manifest_of(model)
        one = random_patch_masks(1, self.num_patches(m), self.score_mask_ratio, np.random.default_rng(0))
        masks = np.repeat(one, len(x), axis=0)  # the same mask for every image, wherever it sits in the batch
        pred = await self.predict(model, x, masks)
        removed = expand_patch_mask(masks, m.height, m.width, self.patch(m))[:, None] > 0.5
        return np.where(removed, pred, x).astype(np.float32)

    async def encode(self, model: GraphRunner, x: np.ndarray) -> Feeds:
        return {"embedding": (await model.run("encoder", {"image": x}))["embedding"]}

    async def score(self, model: GraphRunner, x: np.ndarray, *, samples: int, seed: int) -> Score:
        if samples == 0:
            return await super().score(model, x, samples=0, seed=seed)
        m = manifest_of(model)
        n, length, p = len(x), self.num_patches(m), self.patch(m)
        # the same `samples` masks for every image (row s * n + i: mask s), so a score does not depend on
        # the other images in the request
        drawn = random_patch_masks(samples, length, self.score_mask_ratio, np.random.default_rng(seed))
        masks = np.repeat(drawn, n, axis=0)
        tiled = np.tile(x, (samples, 1, 1, 1))
        pred = await self.predict(model, tiled, masks)
        pixel_mask = expand_patch_mask(masks, m.height, m.width, p)[:, None]  # [S*N, 1, H, W]
        err = ((pred.astype(np.float64) - tiled) ** 2 * pixel_mask).reshape(samples * n, -1).sum(axis=1)
        per_mask = err / (pixel_mask.reshape(samples * n, -1).sum(axis=1) * x.shape[1])
        values = per_mask.reshape(samples, n).mean(axis=0)
        method = (
            f"masked-patch MSE averaged over {samples} seeded {self.score_mask_ratio:.0%} masks (seed {seed})"
        )
        return Score(values, method, "mse")


ADAPTERS: dict[str, KindAdapter] = {
    "vae": VAEAdapter(),
    "beta_vae": BetaVAEAdapter(),
    "vqvae": VQVAEAdapter(),
    "mae": MAEAdapter(),
}
