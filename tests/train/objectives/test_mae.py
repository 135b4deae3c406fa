"""MAE's patchify, masking and normalized-pixel loss against transformers' ViTMAEForPreTraining on the
same pixels and noise; the reconstruction picture."""

import jax.numpy as jnp
import numpy as np
import pytest

from samjax.modeling import mae
from samjax.train.objectives import mae as mae_train


@pytest.fixture(scope="module")
def hf_mae():
    torch = pytest.importorskip("torch")
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(0)
    config = ViTMAEConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=64, decoder_hidden_size=32,
                          decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64,
                          mask_ratio=0.75, norm_pix_loss=True)
    return ViTMAEForPreTraining(config).eval()


def test_patchify_masking_and_loss_match_transformers(hf_mae):
    import torch

    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(3, 32, 32, 3)).astype(np.float32) * np.array([1.0, 0.5, 2.0], np.float32)
    pixels[0, :8, :8] = 0.25  # a constant patch: variance 0, the 1e-6 keeps it finite
    noise = rng.uniform(size=(3, 16)).astype(np.float32)
    with torch.no_grad():
        out = hf_mae(torch.from_numpy(pixels.transpose(0, 3, 1, 2)), noise=torch.from_numpy(noise))
        hf_patches = hf_mae.patchify(torch.from_numpy(pixels.transpose(0, 3, 1, 2))).numpy()

    patches = np.asarray(mae.patchify(jnp.asarray(pixels), 8))
    np.testing.assert_array_equal(patches, hf_patches)
    np.testing.assert_array_equal(np.asarray(mae.unpatchify(jnp.asarray(patches), (4, 4), 8)), pixels)

    hidden = np.asarray(mae.random_masking(jnp.asarray(noise), 0.75))
    np.testing.assert_array_equal(hidden, out.mask.numpy().astype(bool))
    assert (hidden.sum(-1) == 12).all()  # int(16 * 0.25) = 4 visible per image

    target = mae_train.norm_pix_target(jnp.asarray(patches))
    loss = mae_train.reconstruction_loss(jnp.asarray(out.logits.numpy()), target, jnp.asarray(hidden))
    np.testing.assert_allclose(float(loss), float(out.loss), rtol=1e-6)


def test_loss_counts_hidden_real_patches_only():
    rng = np.random.default_rng(1)
    pred, target = (jnp.asarray(rng.normal(size=(2, 4, 6)), jnp.float32) for _ in range(2))
    hidden = jnp.array([[True, True, False, False], [True, False, True, False]])
    weight = jnp.array([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    per_patch = np.mean((np.asarray(pred) - np.asarray(target)) ** 2, -1)
    expected = (per_patch[0, 0] + per_patch[1, 0] + per_patch[1, 2]) / 3
    np.testing.assert_allclose(float(mae_train.reconstruction_loss(pred, target, hidden, weight)), expected, rtol=1e-6)
    assert float(mae_train.reconstruction_loss(pred, target, hidden & False)) == 0.0


def test_reconstruction_picture_pastes_visible_patches():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    hidden = np.zeros((2, 4), bool)
    hidden[:, 1] = True
    x = (images.astype(np.float32) - np.array(mae_train.PIXEL_MEAN, np.float32)) / np.array(mae_train.PIXEL_STD,
                                                                                           np.float32)
    exact = np.asarray(mae.patchify(jnp.asarray(x), 8))
    picture = mae_train.reconstruction_picture(images, exact, hidden, 8, norm_pix=False)
    assert picture.shape == (2 * 16 + 4, 3 * 16 + 8, 3) and picture.dtype == np.uint8
    masked, recon, original = picture[:16, :16], picture[:16, 20:36], picture[:16, 40:56]
    np.testing.assert_array_equal(original, images[0])
    assert np.abs(recon.astype(int) - images[0]).max() <= 1  # a perfect prediction reconstructs the image
    assert (masked[:8, 8:] == 127).all() and (masked[:8, :8] == images[0, :8, :8]).all()


def test_mae_mixes_unlabeled_and_labeled_sets_and_interactive_refuses_unlabeled(data_dir, tmp_path):
    import jax

    from samjax import parallel
    from samjax.data import pipeline
    from samjax.data.builders import phantoms
    from samjax.errors import DataError
    from samjax.train import trainer
    from samjax.train import objectives as objective
    from tiny_configs import tiny_config

    unlabeled = phantoms.build(str(tmp_path), "unlabeled_64", num_train=8, num_validation=2, num_test=2)
    folder = unlabeled.data_path
    cfg = tiny_config("mae", **{"data.data_dir": data_dir, "data.name": f"phantoms/labeled_64,{folder}",
                                "data.weights": "1,3"})
    mae_objective = objective.get(cfg)
    data = mae_objective.open_data(cfg)
    assert [len(s.records) for s in data.sources] == [400, 8] and data.weights == (1.0, 3.0)
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    batch = next(iter(pipeline.to_iterable(trainer.train_stream(cfg, data, mae_objective, mesh))))
    assert batch["image"].shape == (8, 64, 64, 3) and "label" not in batch  # labels of labeled sets are ignored

    cfg = tiny_config("interactive", **{"data.data_dir": data_dir, "data.name": str(folder)})
    with pytest.raises(DataError, match="has no labels; interactive needs labeled data"):
        objective.get(cfg).open_data(cfg)
