"""The study's grid: every encoder x scope x PEFT point trains a few steps, updates exactly the
parameters it should, and leaves every other parameter bit-identical (ViT-T and ViT-B at tiny sizes;
ViT-H's points differ from ViT-B's only in the full-size spec their configs name, checked here)."""


import jax
import numpy as np
import pytest
from flax import nnx

from samjax import parallel
from samjax.train import strategy
from samjax.train.objectives import finetune as supervised
from samjax.train.state import Trainable
from samjax.run import model as run_model
from tiny_configs import fake_batch, load_config, tiny_config

def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


# ViT-H at tiny sizes is ViT-B's architecture (configs/tiny.py overrides every size): its six points would
# retrain ViT-B's. test_full_size_grid_points_name_their_encoder checks what differs, the full-size spec.
GRID = [(e, s, p) for e in ("vit_t", "vit_b") for s in run_model.SCOPES for p in run_model.PEFTS]


@pytest.mark.parametrize("encoder,scope,peft", GRID, ids=["-".join(g) for g in GRID])
def test_grid_point_trains_only_its_parameters(encoder, scope, peft):
    cfg = tiny_config(f"{encoder},{scope},{peft}")
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    model = run_model.build_model(cfg, 6, log=lambda m: None)
    before = {k: np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(model))}
    trainable = Trainable(model, strategy.trainable_filter(cfg), cfg, mesh, supervised.loss_fn("auto"), log=lambda m: None)
    state, frozen = trainable.init_state(), trainable.frozen()
    frozen_before = _flat(frozen)
    losses = []
    for i in range(2):
        batch = parallel.global_batch(fake_batch(cfg, seed=i), mesh)
        state, metrics = trainable.step_fn(state, frozen, batch)
        losses.append(float(metrics["loss"]))
    assert all(np.isfinite(losses))

    for name, value in _flat(frozen).items():
        np.testing.assert_array_equal(value, frozen_before[name], err_msg=name)  # frozen: bit-identical
    after = {k: np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(trainable.model(state.params, frozen)))}
    changed = {".".join(map(str, k)) for k in before if not np.array_equal(before[k], after[k])}
    trained = {".".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(model, strategy.trainable_filter(cfg)))}
    assert changed and changed <= trained
    assert not any(n.startswith("prompt_encoder") for n in trained)
    if scope == "decoder":
        assert not any(n.startswith("image_encoder") for n in trained)
    else:
        assert any(n.startswith("image_encoder") for n in changed)
    if peft == "none":
        assert any(n.startswith("mask_decoder.transformer") and n.endswith("kernel") for n in changed)
    else:
        kind = "lora" if peft == "lora" else "adapter"
        peft_names = {n for n in trained if kind in n}
        assert peft_names and peft_names & changed
        heads = {n for n in trained if kind not in n}
        assert all(run_model.HEAD_PATTERN.match(n) for n in heads)  # besides PEFT, only the per-class heads
    assert trainable.param_count == sum(int(np.prod(after[k].shape)) for k in before if ".".join(map(str, k)) in trained)


def test_full_size_grid_points_name_their_encoder():
    from samjax.model_spec import get_spec

    widths = {"vit_t": None, "vit_b": (768, 12), "vit_h": (1280, 32)}
    for encoder, width in widths.items():
        for scope in run_model.SCOPES:
            for peft in run_model.PEFTS:
                cfg = load_config("finetune.py", f"{encoder},{scope},{peft}")
                spec = run_model.model_spec(cfg, 6)
                assert (cfg.model.encoder, cfg.train.scope, cfg.train.peft) == (encoder, scope, peft)
                assert spec.encoder == ("tiny_vit" if encoder == "vit_t" else "vit") and spec.image_size == 1024
                if width:
                    assert (spec.encoder_embed_dim, spec.encoder_depth) == width
                    assert spec.encoder_global_attn_indexes == get_spec(encoder).encoder_global_attn_indexes


@pytest.mark.parametrize("peft", run_model.PEFTS)
def test_prompt_encoder_switch(peft):
    # SAM's interactive stage trains the prompt encoder (configs/interactive.py); fine-tuning keeps it frozen
    # unless train.prompt_encoder says otherwise, whatever the PEFT.
    def trained(cfg):
        model = run_model.build_sam(cfg, None)
        return {".".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(model, strategy.trainable_filter(cfg)))}

    cfg = tiny_config(f"vit_b,decoder,{peft}", **{"train.mode": "box"})
    assert not any(n.startswith("prompt_encoder") for n in trained(cfg))
    cfg.train.prompt_encoder = True
    names = {n for n in trained(cfg) if n.startswith("prompt_encoder")}
    assert {"prompt_encoder.no_mask_embed", "prompt_encoder.not_a_point_embed", "prompt_encoder.mask_conv1.kernel",
            "prompt_encoder.mask_conv3.kernel", "prompt_encoder.point_embeddings.1"} <= names
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" not in names  # a fixed buffer, as Meta's
    assert tiny_config("interactive").train.prompt_encoder


def test_heads_restart_when_tokens_change_meaning(tmp_path, monkeypatch):
    # An auto-mode run with 3 foreground classes has 4 mask tokens, as SAM: same shapes, but its token 0 is the
    # background head. A prompted run started from it re-initializes every per-token head (and the other way).
    import json

    from samjax.params import flat_params

    auto = tiny_config(**{"data.classes": "body,liver,kidney"})
    source = run_model.build_model(auto, 4, log=lambda m: None)
    saved = {k: np.asarray(v) + 1.0 for k, v in flat_params(source).items()}  # unlike any initialization
    run = tmp_path / "auto_run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(auto.to_dict()))
    monkeypatch.setattr(run_model, "checkpoint_params", lambda path, which="latest": saved)  # without Orbax
    logs = []
    prompted = run_model.build_model(tiny_config(**{"train.mode": "box", "init_checkpoint": str(run)}), 4,
                                    log=logs.append)
    again = run_model.build_model(tiny_config(**{"init_checkpoint": str(run)}), 4, log=lambda m: None)
    loaded, kept = flat_params(prompted), flat_params(again)
    heads = [k for k in loaded if run_model.HEAD_PATTERN.match(k)]
    assert heads and "re-initialized" in logs[-1] and "per class" in logs[-1]
    for k, v in loaded.items():
        if k in heads:
            assert not np.array_equal(np.asarray(v), saved[k]), k
        else:
            np.testing.assert_array_equal(np.asarray(v), saved[k], err_msg=k)
    for k, v in kept.items():  # auto to auto: every tensor loaded
        np.testing.assert_array_equal(np.asarray(v), saved[k], err_msg=k)


def test_bad_strategy_names():
    with pytest.raises(ValueError, match="train.scope must be one of"):
        run_model.build_model(tiny_config(**{"train.scope": "everything"}), 6)
    with pytest.raises(ValueError, match="train.peft must be one of"):
        run_model.build_model(tiny_config(**{"train.peft": "prefix"}), 6)


@pytest.mark.parametrize("mode", ["box", "point"])
def test_prompted_modes_learn_from_simulated_prompts(mode):
    from samjax.data.prompts import SimulatePrompts

    cfg = tiny_config("vit_b,decoder,none", **{"train.mode": mode, "optim.learning_rate": 3e-3, "total_steps": 100})
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    model = run_model.build_model(cfg, 6, log=lambda m: None)
    assert model.mask_decoder.num_mask_tokens == 4  # prompted modes keep SAM's own tokens
    trainable = Trainable(model, strategy.trainable_filter(cfg), cfg, mesh, supervised.loss_fn(mode), log=lambda m: None)
    state, frozen = trainable.init_state(), trainable.frozen()
    simulate = SimulatePrompts(num_objects=2, num_classes=6)
    raw = fake_batch(cfg)
    examples = [simulate.random_map({k: v[i] for k, v in raw.items()}, np.random.default_rng(i))
                for i in range(cfg.data.global_batch)]
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    assert batch["object_masks"].shape == (8, 2, 32, 32) and batch["object_valid"][:, 0].all()
    batch = parallel.global_batch(batch, mesh)
    losses = []
    for _ in range(20):  # the same batch again and again: the loss must fall
        state, metrics = trainable.step_fn(state, frozen, batch)
        losses.append(float(metrics["loss"]))
        assert set(metrics) >= {"loss", "focal", "dice", "iou"}
    assert losses[-1] < 0.8 * losses[0], losses


def _losses(cfg, steps=2):
    mesh = parallel.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    model = run_model.build_model(cfg, 6, log=lambda m: None)
    trainable = Trainable(model, strategy.trainable_filter(cfg), cfg, mesh, supervised.loss_fn("auto"), log=lambda m: None)
    state, frozen = trainable.init_state(), trainable.frozen()
    out = []
    for i in range(steps):
        state, metrics = trainable.step_fn(state, frozen, parallel.global_batch(fake_batch(cfg, seed=i), mesh))
        out.append(float(metrics["loss"]))
    return out, state


def test_switches_bf16_remat_accumulation():
    reference, _ = _losses(tiny_config())
    # Two micro-batches of a mean loss give the same gradients, and rematerialisation recomputes the same
    # activations: together, still the reference's steps (either one wrong would show).
    accumulated_remat, _ = _losses(tiny_config(**{"train.grad_accum_steps": 2, "model.remat": True}))
    np.testing.assert_allclose(accumulated_remat, reference, rtol=1e-5)
    bf16, state = _losses(tiny_config(**{"model.dtype": "bfloat16"}))
    np.testing.assert_allclose(bf16, reference, rtol=3e-2)  # bf16 compute, close to fp32
    assert bf16 != reference
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}  # fp32 masters
