"""VQ-VAE: shapes, nearest-code lookup, round trips by index, the EMA codebook and its upkeep."""

import pytest
import torch

import models
from models.vqvae import VQVAE


def _model(**overrides: object) -> VQVAE:
    torch.manual_seed(0)
    model = models.build_model("vqvae", models.make_config("vqvae", "tiny", **overrides))
    assert isinstance(model, VQVAE)
    return model


def _images(n: int = 4, h: int = 16, w: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _trained_once(model: VQVAE) -> VQVAE:
    """One training-mode loss call: k-means initialises the codebook on that batch."""
    model.train()
    model.loss(_images(), generator=torch.Generator().manual_seed(0), step=0)
    return model.eval()


def test_shapes_and_ranges() -> None:
    model = _model().eval()
    cfg = model.config
    x = _images(2)
    with torch.no_grad():
        z_e = model.encode(x)
        z_q, tokens = model.quantize(z_e)
        image = model.decode_tokens(tokens)
    assert z_e.shape == z_q.shape == (2, cfg.code_dim, 4, 4)
    assert tokens.shape == (2, 4, 4) and tokens.dtype == torch.int64
    assert int(tokens.min()) >= 0 and int(tokens.max()) < cfg.codebook_size
    assert image.shape == x.shape
    assert image.min().item() >= 0.0 and image.max().item() <= 1.0
    assert model.codebook.shape == (cfg.codebook_size, cfg.code_dim)


def test_euclidean_nearest_code_matches_brute_force() -> None:
    model = _model(codebook_size=37, code_dim=5, normalize=False)
    g = torch.Generator().manual_seed(3)
    flat = torch.randn(500, 5, generator=g)
    brute = torch.stack([((model.codebook - v) ** 2).sum(1).argmin() for v in flat])
    assert torch.equal(model.quantizer.nearest(flat), brute)


def test_lookup_stays_fp32_under_autocast() -> None:
    model = _model(codebook_size=256, code_dim=32)
    flat = torch.randn(2000, 32, generator=torch.Generator().manual_seed(4))
    expected = model.quantizer.nearest(flat)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = model.quantizer.nearest(flat)  # a bf16 matmul here would round distances and flip some
    assert torch.equal(tokens, expected)


def test_lookup_by_index_round_trips() -> None:
    model = _trained_once(_model())
    with torch.no_grad():
        z_e = model.encode(_images(2, seed=5))
        z_q, tokens = model.quantize(z_e)
        assert torch.equal(model.lookup(tokens), z_q)
        assert torch.equal(z_q[0, :, 1, 2], model.codebook[tokens[0, 1, 2]])
        torch.testing.assert_close(model.decode_tokens(tokens), model.decode(z_q))
        image, tokens2 = model.decode_continuous(z_e)
    assert torch.equal(tokens2, tokens)
    torch.testing.assert_close(image, model.decode(z_q))


@pytest.mark.parametrize(("h", "w"), [(16, 16), (32, 24), (8, 12)])
def test_token_grid_is_proportional_to_the_image(h: int, w: int) -> None:
    model = _model().eval()
    with torch.no_grad():
        z_e = model.encode(_images(1, h, w))
        _, tokens = model.quantize(z_e)
        image = model.decode_tokens(tokens)
    assert tokens.shape == (1, h // 4, w // 4)
    assert image.shape == (1, 3, h, w)


def test_first_training_batch_initialises_the_codebook_by_kmeans() -> None:
    model = _model(normalize=False)  # plain k-means: every centroid lies among the data
    assert not bool(model.quantizer.initialized)
    before = model.codebook.clone()
    model.train()
    _, logs = model.loss(_images(), generator=torch.Generator().manual_seed(0), step=0)
    assert bool(model.quantizer.initialized)
    assert not torch.equal(model.codebook, before)
    # Every code sits among the data: inside the bounding box of this batch's encoder outputs.
    with torch.no_grad():
        flat = model.encode(_images()).permute(0, 2, 3, 1).reshape(-1, model.config.code_dim)
    assert (model.codebook >= flat.min(0).values - 1e-4).all()
    assert (model.codebook <= flat.max(0).values + 1e-4).all()
    assert 1.0 <= logs["perplexity"] <= model.config.codebook_size
    assert 0.0 < logs["codebook_usage"] <= 1.0


def test_ema_moves_in_training_and_not_in_eval() -> None:
    model = _trained_once(_model())
    x = _images(seed=6)
    frozen = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
    model.eval()
    model.loss(x, generator=torch.Generator().manual_seed(0), step=1)
    for key, value in model.quantizer.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    model.train()
    model.loss(x, generator=torch.Generator().manual_seed(0), step=1)
    assert not torch.equal(model.quantizer.ema_count, frozen["ema_count"])
    assert not torch.equal(model.codebook, frozen["embed"])


def test_dead_codes_are_restarted_on_encoder_outputs() -> None:
    model = _trained_once(_model())
    dead = torch.tensor([0, 3, 7])
    with torch.no_grad():
        model.quantizer.embed[dead] = 1e3  # far from every encoder output: never chosen again
        model.quantizer.ema_count[dead] = 0.0
        model.quantizer.ema_sum[dead] = 0.0
    x = _images(seed=8)
    with torch.no_grad():
        flat = model.encode(x).permute(0, 2, 3, 1).reshape(-1, model.config.code_dim)
    model.train()
    _, logs = model.loss(x, generator=torch.Generator().manual_seed(0), step=1)
    assert logs["dead_restarts"] >= 3
    for code in model.codebook[dead]:
        assert torch.isclose(flat, code[None, :], atol=1e-6).all(1).any()  # re-seeded on a batch vector
    assert (model.quantizer.ema_count[dead] >= model.config.dead_code_threshold).all()


def test_seeded_statistics_keep_the_codebook_even_at_a_small_batch() -> None:
    # Codes loaded from an artifact (no EMA statistics): seeding replaces k-means. The batch below gives
    # each code 4 vectors on average, the restart threshold itself, and most codes none at all: with the
    # average share as their count, the first update would restart every code this batch missed.
    model = _model(codebook_size=64, dead_code_threshold=4.0)
    quantizer = model.quantizer
    with torch.no_grad():
        quantizer.embed.copy_(quantizer.project(torch.randn(64, model.config.code_dim)))  # "trained" codes
    codes = model.codebook.clone()
    x = _images(n=16)  # 16 images x 4 x 4 tokens = 256 vectors = 4 per code
    quantizer.seed_statistics(vectors_per_step=256)
    seeded = quantizer.ema_count[0].item()
    assert (
        bool(quantizer.initialized)
        and seeded >= 4.0
        and torch.equal(quantizer.ema_count, torch.full((64,), seeded))
    )
    model.train()
    for step in range(3):
        _, logs = model.loss(x, generator=torch.Generator().manual_seed(step), step=step)
        assert logs["dead_restarts"] == 0
    unused = quantizer.ema_count <= seeded * model.config.ema_decay**3 + 1e-5  # no vector in 3 steps
    assert unused.sum() >= 32  # most codes: this batch reaches few of them
    torch.testing.assert_close(model.codebook[unused], codes[unused])  # no k-means, no restart: unmoved


def test_normalized_lookup_keeps_z_e_and_codes_on_the_unit_sphere() -> None:
    model = _model()  # the presets normalise
    model.train()
    for step in range(3):  # k-means start, then EMA steps (with any dead-code restarts)
        model.loss(_images(seed=10 + step), generator=torch.Generator().manual_seed(step), step=step)
    model.eval()
    with torch.no_grad():
        z_e = model.encode(_images(2, seed=20))
    torch.testing.assert_close(z_e.norm(dim=1), torch.ones(2, 4, 4))
    torch.testing.assert_close(model.codebook.norm(dim=1), torch.ones(model.config.codebook_size))


def test_normalized_lookup_picks_the_code_of_highest_cosine_for_any_vector() -> None:
    model = _trained_once(_model(codebook_size=37, code_dim=5))
    flat = torch.randn(500, 5, generator=torch.Generator().manual_seed(3)) * 7.0  # not unit vectors
    cosine = torch.nn.functional.normalize(flat, dim=1) @ model.codebook.t()
    assert torch.equal(model.quantizer.nearest(flat), cosine.argmax(1))
    # Scaling a vector does not change its token: interpolating z_e between images stays meaningful.
    assert torch.equal(model.quantizer.nearest(flat * 0.01), model.quantizer.nearest(flat))


def test_entropy_regulariser_adds_the_codebook_entropy_gap_and_trains_the_encoder() -> None:
    import copy
    import math

    torch.manual_seed(0)
    plain = VQVAE(models.make_config("vqvae", "tiny")).train()
    x = torch.rand(8, 3, 16, 16)
    plain.loss(x, generator=torch.Generator().manual_seed(0), step=0)  # k-means start of the codebook
    regularised = copy.deepcopy(plain)
    regularised.config = models.make_config("vqvae", "tiny", entropy_weight=0.5)
    gap = regularised._entropy_gap(regularised.encode(x))
    assert 0.0 < gap.item() < math.log(16)
    with_term, _ = regularised.loss(x, generator=torch.Generator().manual_seed(1), step=1)
    without, _ = plain.loss(x, generator=torch.Generator().manual_seed(1), step=1)
    assert with_term.item() == pytest.approx(without.item() + 0.5 * gap.item(), rel=1e-4)
    gap.backward()  # the codebook is a buffer: only the encoder can lower the gap
    assert sum(float(p.grad.abs().sum()) for p in regularised.encoder.parameters() if p.grad is not None) > 0
