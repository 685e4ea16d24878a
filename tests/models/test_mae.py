"""MAE: patches, masks as inputs, encoder on visible patches only, any mask, ONNX with a dynamic K."""

import pytest
import torch
import torch.nn.functional as F

import models
from models.mae import MAE


def _model(**overrides: object) -> MAE:
    torch.manual_seed(0)
    model = models.build_model("mae", models.make_config("mae", "tiny", **overrides))
    assert isinstance(model, MAE)
    return model.eval()


def _images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_patchify_round_trips_and_is_row_major() -> None:
    model = _model()
    x = _images()
    patches = model.patchify(x)
    assert patches.shape == (3, 16, 4 * 4 * 3)
    assert torch.equal(model.unpatchify(patches), x)
    # Patch 1 is the top row's second patch: pixels rows 0-3, columns 4-7, channels last.
    assert torch.equal(patches[0, 1], x[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))


@pytest.mark.parametrize(("ratio", "kept"), [(0.0, 16), (0.5, 8), (0.75, 4), (0.9, 1), (0.99, 1)])
def test_random_mask_counts_and_reproducibility(ratio: float, kept: int) -> None:
    model = _model()
    mask = model.random_mask(5, ratio, torch.Generator().manual_seed(3))
    assert mask.shape == (5, 16) and mask.dtype == torch.float32
    assert ((1 - mask).sum(1) == kept).all()
    assert torch.equal(mask, model.random_mask(5, ratio, torch.Generator().manual_seed(3)))


def test_random_mask_rejects_a_full_mask() -> None:
    with pytest.raises(ValueError, match=r"mask ratio must be in \[0, 1\)"):
        _model().random_mask(2, 1.0, None)


def test_encoder_sees_only_visible_patches() -> None:
    model = _model()
    x = _images()
    mask = model.random_mask(3, 0.75, torch.Generator().manual_seed(4))
    removed = model.unpatchify(mask[:, :, None].expand(-1, -1, 48)).bool()
    changed = torch.where(removed, torch.rand_like(x), x)  # new pixels only under the mask
    with torch.no_grad():
        latent, ids_keep, valid = model.forward_encoder(x, mask)
        latent2, ids_keep2, valid2 = model.forward_encoder(changed, mask)
    assert latent.shape == (3, 4, model.config.embed_dim)
    assert torch.equal(ids_keep, ids_keep2) and valid.all()
    assert (mask.gather(1, ids_keep) == 0).all()  # the kept slots are the visible patches
    torch.testing.assert_close(latent, latent2)
    with torch.no_grad():
        pred = model.reconstruct(x, mask)
        pred2 = model.reconstruct(changed, mask)
    torch.testing.assert_close(pred, pred2)


@pytest.mark.parametrize("ratio", [0.0, 0.9])
def test_extreme_ratios(ratio: float) -> None:
    model = _model()
    x = _images()
    mask = model.random_mask(3, ratio, torch.Generator().manual_seed(5))
    with torch.no_grad():
        image = model.reconstruct(x, mask)
    assert image.shape == x.shape
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1


def test_per_sample_masks_match_one_by_one() -> None:
    model = _model()
    x = _images(4)
    mask = torch.zeros(4, 16)
    mask[0, :12] = 1  # 4 visible
    mask[1, ::2] = 1  # 8 visible
    mask[2, 1:] = 1  # 1 visible
    mask[3] = 1  # none visible: the decoder still predicts, from positions alone
    with torch.no_grad():
        batched = model.reconstruct(x, mask)
        latent, _, valid = model.forward_encoder(x, mask)
        single = torch.cat([model.reconstruct(x[i : i + 1], mask[i : i + 1]) for i in range(4)])
    assert latent.shape[1] == 8  # K = the largest visible count in the batch
    assert valid.sum(1).tolist() == [4, 8, 1, 0]
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(batched).all()


def test_embed_is_the_mean_of_unmasked_encoder_tokens() -> None:
    model = _model()
    x = _images()
    with torch.no_grad():
        embedding = model.embed(x)
        latent, _, _ = model.forward_encoder(x, torch.zeros(3, 16))
    assert embedding.shape == (3, model.config.embed_dim)
    torch.testing.assert_close(embedding, latent.mean(1))


def test_loss_counts_masked_patches_only() -> None:
    model = _model()
    x = _images()
    loss, logs = model.loss(x, generator=torch.Generator().manual_seed(6), step=0)
    mask = model.random_mask(3, model.config.mask_ratio, torch.Generator().manual_seed(6))
    with torch.no_grad():
        pred = model.forward_decoder(*model.forward_encoder(x, mask))
    # The target: each image standardised per channel by the mean and std of its visible pixels only.
    c = model.config.channels
    patches = model.patchify(x).reshape(3, model.num_patches, -1, c)  # (N, L, p*p, C)
    target = torch.empty_like(patches)
    for i in range(3):
        seen = patches[i][~mask[i].bool()].reshape(-1, c)
        target[i] = (patches[i] - seen.mean(0)) / seen.std(0, unbiased=False).clamp(min=0.02)
    per_patch = F.mse_loss(pred, target.reshape(3, model.num_patches, -1), reduction="none").mean(-1)
    assert loss.item() == pytest.approx(per_patch[mask.bool()].mean().item(), rel=1e-4)
    assert logs["mask_ratio"] == 0.75


def test_reconstruct_exports_with_a_dynamic_visible_count(tmp_path) -> None:
    """Traced at ratio 0.75, the ONNX graph must still serve other ratios and mixed per-sample masks."""
    ort = pytest.importorskip("onnxruntime")
    model = _model()

    class Reconstruct(torch.nn.Module):
        def __init__(self, mae: MAE) -> None:
            super().__init__()
            self.mae = mae

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.mae.reconstruct(image, mask)

    path = tmp_path / "reconstruct.onnx"
    g = torch.Generator().manual_seed(7)
    torch.onnx.export(
        Reconstruct(model), (_images(2), model.random_mask(2, 0.75, g)), str(path), dynamo=False,
        opset_version=17, input_names=["image", "mask"], output_names=["out"],
        dynamic_axes={"image": {0: "batch"}, "mask": {0: "batch"}, "out": {0: "batch"}},
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mixed = torch.zeros(3, 16)
    mixed[0, :8] = 1
    mixed[1, 3:5] = 1
    mixed[2, :15] = 1
    for mask in (model.random_mask(3, 0.5, g), mixed):
        x = _images(3, seed=9)
        (out,) = session.run(None, {"image": x.numpy(), "mask": mask.numpy()})
        with torch.no_grad():
            expected = model.reconstruct(x, mask)
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-4, atol=1e-4)
