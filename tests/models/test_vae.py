"""VAE / beta-VAE: shapes, the negative ELBO and its parts, beta and capacity annealing."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models
from models.vae import VAE


def _model(likelihood: str = "bernoulli", **overrides: object) -> VAE:
    torch.manual_seed(0)
    config = models.make_config("vae", "tiny", likelihood=likelihood, **overrides)
    model = models.build_model("vae", config)
    assert isinstance(model, VAE)
    return model.eval()


def _images(model: VAE, n: int = 3) -> torch.Tensor:
    c, s = model.config.channels, model.config.image_size
    x = torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(1))
    return (x > 0.5).float() if model.config.likelihood == "bernoulli" else x


@pytest.mark.parametrize("image_size", [32, 48])
def test_shapes(image_size: int) -> None:
    model = _model(image_size=image_size, channels=3)
    x = _images(model)
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (3, model.config.latent_dim)
    with torch.no_grad():
        image = model.decode(mean)
    assert image.shape == x.shape
    assert image.min().item() >= 0.0 and image.max().item() <= 1.0
    parts = model.neg_elbo(x, torch.zeros_like(mean))
    assert {k: v.shape for k, v in parts.items()} == {k: (3,) for k in ("nll", "kl", "bits_per_dim")}


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_bits_per_dim_is_finite_positive_and_adds_up(likelihood: str) -> None:
    model = _model(likelihood)
    x = _images(model)
    eps = torch.randn(3, model.config.latent_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        parts = model.neg_elbo(x, eps)
    bpd = parts["bits_per_dim"]
    assert torch.isfinite(bpd).all() and (bpd > 0).all()
    d = x[0].numel()
    correction = d * math.log(255.0) if likelihood == "gaussian" else 0.0
    expected = (parts["nll"] + parts["kl"] + correction) / (d * math.log(2.0))
    torch.testing.assert_close(bpd, expected)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_zero_eps_is_the_deterministic_path(likelihood: str) -> None:
    model = _model(likelihood)
    x = _images(model)
    with torch.no_grad():
        mean, logvar = model.encode(x)
        nll = model.neg_elbo(x, torch.zeros_like(mean))["nll"]
        recon = model.decode(mean)  # the likelihood's mean at z = mean
        if likelihood == "bernoulli":
            expected = F.binary_cross_entropy(recon, x, reduction="none").flatten(1).sum(1)
        else:
            sigma = model.sigma()
            per_pixel = 0.5 * ((x - recon) / sigma) ** 2 + torch.log(sigma) + 0.5 * math.log(2 * math.pi)
            expected = per_pixel.flatten(1).sum(1)
        kl = model.neg_elbo(x, torch.zeros_like(mean))["kl"]
    torch.testing.assert_close(nll, expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(kl, 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(1))
    with torch.no_grad():
        noisy = model.neg_elbo(x, torch.full_like(mean, 3.0))["nll"]
    assert not torch.equal(noisy, nll)  # eps does reach the decoder (an untrained one barely uses z)


def test_beta_scales_the_kl_term() -> None:
    plain = _model(beta=1.0)
    heavy = _model(beta=4.0)
    heavy.load_state_dict(plain.state_dict())
    x = _images(plain)
    loss1, logs1 = plain.loss(x, generator=torch.Generator().manual_seed(5), step=0)
    loss4, logs4 = heavy.loss(x, generator=torch.Generator().manual_seed(5), step=0)
    assert logs1["kl"] == pytest.approx(logs4["kl"]) and logs1["kl"] > 0
    # The loss is ~700 nats in float32, so the difference carries ~1e-4 of rounding.
    assert (loss4 - loss1).item() == pytest.approx(3.0 * logs1["kl"], abs=1e-3)


def test_capacity_annealing_targets_a_rising_kl() -> None:
    model = _model(beta=10.0, capacity_max=20.0, capacity_steps=100)
    assert [model.capacity(s) for s in (0, 50, 100, 500)] == [0.0, 10.0, 20.0, 20.0]
    x = _images(model)
    loss, logs = model.loss(x, generator=torch.Generator().manual_seed(5), step=50)
    assert logs["capacity"] == 10.0
    expected = logs["nll"] + 10.0 * abs(logs["kl"] - 10.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_beta_vae_kind_and_gaussian_sigma_is_learned() -> None:
    config = models.make_config("beta_vae", "tiny", likelihood="gaussian")
    model = models.build_model("beta_vae", config)
    assert isinstance(model, VAE) and model.kind == "beta_vae"
    loss, logs = model.loss(torch.rand(2, 1, 32, 32), generator=torch.Generator().manual_seed(0), step=0)
    loss.backward()
    assert "sigma" in logs
    assert model.log_sigma.grad is not None and model.log_sigma.grad.abs() > 0


def test_bernoulli_nll_stays_exact_for_a_confident_decoder_in_onnx(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Logits far past +-90 (a well-trained shapes decoder): the exported NLL must stay finite and exact."""
    ort = pytest.importorskip("onnxruntime")
    model = _model("bernoulli").eval().requires_grad_(False)
    x = _images(model, n=2)
    eps = torch.zeros(2, model.config.latent_dim)
    convs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    with torch.no_grad():
        convs[-1].weight.mul_(1e4)  # the output layer: logits in the hundreds or thousands
        convs[-1].bias.mul_(1e4)
        logits = model.decoder(model.encode(x)[0])
    assert logits.abs().max() > 200

    class Elbo(torch.nn.Module):
        def forward(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            return model.neg_elbo(image, noise)["nll"]

    path = tmp_path / "elbo.onnx"
    torch.onnx.export(
        Elbo(), (x, eps), str(path), input_names=["image", "eps"], opset_version=17, dynamo=False
    )
    got = ort.InferenceSession(str(path)).run(None, {"image": x.numpy(), "eps": eps.numpy()})[0]
    reference = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, reference.numpy(), rtol=1e-4)
