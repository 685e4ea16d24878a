"""make_config / config_from_dict / build_model and the behaviour every kind shares (loss, training)."""

import dataclasses

import pytest
import torch

import models


def _batch(config: models.ModelConfig, n: int = 4, seed: int = 0) -> torch.Tensor:
    """A fixed, learnable batch of `config`'s image shape: blocky images (4x4 random cells, upsampled),
    binary when the model's likelihood is Bernoulli (pixel noise would be incompressible)."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.rand(n, config.channels, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(cells, size=config.image_size, mode="nearest")
    if getattr(config, "likelihood", None) == "bernoulli":
        x = (x > 0.5).float()
    return x


@pytest.mark.parametrize("kind", models.KINDS)
@pytest.mark.parametrize("preset", models.PRESET_NAMES)
def test_presets_build_a_model_that_reports_its_kind(kind: str, preset: str) -> None:
    config = models.make_config(kind, preset)
    model = models.build_model(kind, config)
    assert model.kind == kind
    assert config.kind == kind
    assert model.config is config


def test_beta_defaults() -> None:
    def beta(kind: str, preset: str = "default", **overrides: float) -> float:
        config = models.make_config(kind, preset, **overrides)
        assert isinstance(config, models.VAEConfig)
        return config.beta

    assert beta("vae") == 1.0
    assert beta("beta_vae") == 4.0
    assert beta("beta_vae", "tiny") == 4.0
    assert beta("vae", beta=2.5) == 2.5


@pytest.mark.parametrize("kind", models.KINDS)
def test_tiny_presets_are_small(kind: str) -> None:
    model = models.build_model(kind, models.make_config(kind, "tiny"))
    n = sum(p.numel() for p in model.parameters())
    assert 1_000 <= n <= 50_000


@pytest.mark.parametrize("kind", models.KINDS)
def test_config_round_trips_through_a_dict(kind: str) -> None:
    config = models.make_config(kind, "tiny")
    assert models.config_from_dict(kind, dataclasses.asdict(config)) == config


def test_config_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown model kind 'gan'"):
        models.make_config("gan")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        models.make_config("vae", "huge")
    with pytest.raises(ValueError, match="unknown vqvae config field"):
        models.config_from_dict("vqvae", {"codebook_sise": 8})
    with pytest.raises(ValueError, match="not 'vae'"):
        models.config_from_dict("vae", {"kind": "beta_vae"})
    with pytest.raises(ValueError, match="multiple of 16"):
        models.make_config("vae", image_size=40)
    with pytest.raises(ValueError, match="does not build"):
        models.build_model("mae", models.make_config("vqvae", "tiny"))


@pytest.mark.parametrize("kind", models.KINDS)
def test_loss_is_a_scalar_with_float_logs(kind: str) -> None:
    config = models.make_config(kind, "tiny")
    model = models.build_model(kind, config)
    loss, logs = model.loss(_batch(config), generator=torch.Generator().manual_seed(0), step=0)
    assert loss.shape == () and torch.isfinite(loss) and loss.requires_grad
    assert logs["loss"] == pytest.approx(loss.item())
    assert all(isinstance(v, float) for v in logs.values())


@pytest.mark.parametrize("kind", models.KINDS)
def test_a_few_steps_on_one_batch_lower_the_loss(kind: str) -> None:
    torch.manual_seed(0)
    config = models.make_config(kind, "tiny")
    model = models.build_model(kind, config)
    x = _batch(config)

    def eval_loss() -> float:
        # Same randomness (eps / mask) every time, and eval mode so measuring never moves a codebook.
        model.eval()
        with torch.no_grad():
            return model.loss(x, generator=torch.Generator().manual_seed(123), step=0)[0].item()

    model.train()
    model.loss(x, generator=torch.Generator().manual_seed(1), step=0)  # VQ: k-means initialises here
    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(7)
    model.train()
    for step in range(60):
        loss, _ = model.loss(x, generator=g, step=step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.9 * before
