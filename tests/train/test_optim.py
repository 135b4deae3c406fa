"""The optimizer: schedules, parameter names, weight-decay mask, layer-wise lr decay, AdamW against a
NumPy AdamW, nnx.Optimizer integration and gradient accumulation."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from samjax.build_sam import abstract_sam
from samjax.model_spec import get_spec
from samjax.params import assign_params, flat_params, param_shapes
from samjax.train import optim, param_rules
from samjax.train.accumulate import accumulate_gradients

TINY_VIT_B = dict(encoder_embed_dim=32, encoder_depth=4, encoder_num_heads=2, encoder_global_attn_indexes=(1, 3),
                  image_size=64, patch_size=8, window_size=4)
TINY_VIT_T = dict(image_size=64, tiny_embed_dims=(8, 16, 16, 32), tiny_depths=(1, 2, 2, 1),
                  tiny_num_heads=(1, 2, 2, 2), tiny_window_sizes=(2, 2, 2, 2), prompt_embed_dim=32,
                  decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32)


# Models are built abstractly (``nnx.eval_shape``: every leaf a ShapeDtypeStruct): eager random
# initialization costs ~20 s per model on CPU. Name-only tests use them as they are.
@pytest.fixture(scope="module")
def vit_abstract():
    return abstract_sam(get_spec("vit_b").replace(**TINY_VIT_B))


@pytest.fixture(scope="module")
def tiny_vit_abstract():
    return abstract_sam(get_spec("vit_t").replace(**TINY_VIT_T))


@pytest.fixture(scope="module")
def vit_model():
    """The tiny ViT SAM with concrete random values (NumPy), loaded through ``assign_params``."""
    model = abstract_sam(get_spec("vit_b").replace(**TINY_VIT_B))
    rng = np.random.default_rng(0)
    assign_params(model, {k: (0.1 * rng.normal(size=s)).astype(np.float32) for k, s in param_shapes(model).items()})
    return model


def cfg(**kw):
    base = dict(optimizer="adamw", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                grad_clip_norm=0.0, schedule="cosine", warmup_steps=10, total_steps=110, min_lr_ratio=0.1,
                poly_power=0.9, layer_decay=1.0)
    base.update(kw)
    return ml_collections.ConfigDict(base)


# ---------------------------------------------------------------------------------------------- schedules


def test_cosine_schedule_closed_form():
    s = optim.make_schedule(cfg())
    peak, floor = 1e-3, 1e-4
    expected = {
        0: 0.0,
        5: 0.5 * peak,
        10: peak,
        35: floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * 0.25)),
        60: floor + (peak - floor) * 0.5,
        110: floor,
        500: floor,
    }
    for step, want in expected.items():
        np.testing.assert_allclose(float(s(step)), want, rtol=1e-6, atol=1e-12, err_msg=f"step {step}")
    # jit-able, traced step
    np.testing.assert_allclose(float(jax.jit(s)(jnp.int32(60))), expected[60], rtol=1e-6)


def test_poly_schedule_closed_form():
    s = optim.make_schedule(cfg(schedule="poly", learning_rate=1e-2, warmup_steps=0, total_steps=100,
                                min_lr_ratio=0.0, poly_power=0.9))
    for step, want in {0: 1e-2, 25: 1e-2 * 0.75**0.9, 50: 1e-2 * 0.5**0.9, 100: 0.0, 150: 0.0}.items():
        np.testing.assert_allclose(float(s(step)), want, rtol=1e-6, atol=1e-12, err_msg=f"step {step}")
    # with warm-up and a floor
    s = optim.make_schedule(cfg(schedule="poly", learning_rate=1.0, warmup_steps=4, total_steps=14,
                                min_lr_ratio=0.2, poly_power=2.0))
    for step, want in {2: 0.5, 4: 1.0, 9: 0.2 + 0.8 * 0.25, 14: 0.2}.items():
        np.testing.assert_allclose(float(s(step)), want, rtol=1e-6, err_msg=f"step {step}")


def test_constant_schedule():
    s = optim.make_schedule(cfg(schedule="constant", learning_rate=3e-4, warmup_steps=4, total_steps=None))
    for step, want in {0: 0.0, 1: 0.75e-4, 4: 3e-4, 10**6: 3e-4}.items():
        np.testing.assert_allclose(float(s(step)), want, rtol=1e-6, err_msg=f"step {step}")
    s = optim.make_schedule({"schedule": "constant", "learning_rate": 2e-4})
    assert float(s(0)) == pytest.approx(2e-4)


def test_lr_at_and_whole_config():
    whole = ml_collections.ConfigDict({"total_steps": 110, "optim": cfg(total_steps=None).to_dict()})
    assert optim.lr_at(whole, 10) == pytest.approx(1e-3)
    assert optim.lr_at(whole, 110) == pytest.approx(1e-4)
    assert optim.lr_at(cfg(total_steps=None), 60, total_steps=110) == pytest.approx(5.5e-4)
    assert isinstance(optim.lr_at(cfg(), 3), float)


@pytest.mark.parametrize("kw, match", [
    (dict(warmup_steps=110), "warmup_steps"),
    (dict(warmup_steps=200), "warmup_steps"),
    (dict(learning_rate=-1e-3), "learning_rate"),
    (dict(schedule="linear"), "unknown learning-rate schedule"),
    (dict(total_steps=None), "total_steps"),
    (dict(min_lr_ratio=1.5), "min_lr_ratio"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(schedule="poly", poly_power=0.0), "poly_power"),
])
def test_schedule_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        optim.make_schedule(cfg(**kw))


@pytest.mark.parametrize("kw, match", [
    (dict(optimizer="lamb"), "unknown optimizer"),
    (dict(layer_decay=0.0), "layer_decay"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(grad_clip_norm=-1.0), "grad_clip_norm"),
])
def test_optimizer_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        optim.make_optimizer(cfg(**kw), {"w": jnp.zeros((2, 2))})


# ---------------------------------------------------------------------------------------------- names


def test_param_path_same_names_for_every_tree_kind(vit_model):
    want = sorted(flat_params(vit_model))
    state = nnx.state(vit_model)  # Variables: paths end in GetAttrKey('value')
    assert sorted(n for n, _ in param_rules.named_leaves(state)) == want
    assert sorted(n for n, _ in param_rules.named_leaves(nnx.as_pure(state))) == want
    assert sorted(n for n, _ in param_rules.named_leaves(vit_model)) == want  # GetAttrKey / SequenceKey
    nested = {"a": {"b": [jnp.zeros(1), {"value": jnp.zeros(2)}]}}
    assert [n for n, _ in param_rules.named_leaves(nested)] == ["a.b.0", "a.b.1.value"]  # a dict key 'value' stays


# ---------------------------------------------------------------------------------------------- layer ids


def test_layer_id_vit(vit_abstract):
    names = list(param_shapes(vit_abstract))
    assert param_rules.encoder_layout(names) == (4, None)
    seen = set()
    for name in names:
        lid = param_rules.layer_id(name, 4)
        if name.startswith(("image_encoder.patch_embed.", "image_encoder.pos_embed")):
            assert lid == 0, name
        elif name.startswith("image_encoder.blocks."):
            assert lid == int(name.split(".")[2]) + 1, name
            seen.add(lid)
        else:
            assert name.startswith(("image_encoder.neck", "prompt_encoder.", "mask_decoder.")), name
            assert lid == 5, name
    assert seen == {1, 2, 3, 4}
    assert param_rules.layer_id("image_encoder.blocks.2.attn.qkv.lora_a", 4) == 3  # PEFT inside a block
    assert param_rules.layer_id("model.image_encoder.blocks.0.mlp.lin1.kernel", 4) == 1  # any prefix
    assert param_rules.layer_id("mae_decoder.blocks.0.mlp.lin1.kernel", 4) == 5  # not the image encoder
    with pytest.raises(ValueError, match="beyond"):
        param_rules.layer_id("image_encoder.blocks.4.mlp.lin1.kernel", 4)


def test_layer_id_tiny_vit(tiny_vit_abstract):
    names = list(param_shapes(tiny_vit_abstract))
    depths = (1, 2, 2, 1)
    assert param_rules.encoder_layout(names) == (6, depths)
    ids = {}
    for name in names:
        ids.setdefault(param_rules.layer_id(name, 6, depths), set()).add(".".join(name.split(".")[:4]))
    for name in names:
        rest = name.split(".")[1:]
        lid = param_rules.layer_id(name, 6, depths)
        if rest[0].startswith("patch_embed_conv"):
            assert lid == 0, name
        elif rest[0] == "layers":
            flat = {(0, 0): 0, (1, 0): 1, (1, 1): 2, (2, 0): 3, (2, 1): 4, (3, 0): 5}[int(rest[1]), int(rest[2])]
            assert lid == flat + 1, name
        elif rest[0] == "downsamples":
            assert lid == {0: 1, 1: 3, 2: 5}[int(rest[1])], name  # the id of the stage's last block
        else:
            assert lid == 7, name
    assert set(ids) == set(range(8))
    # MobileSAM's real depths (2, 2, 6, 2) are the default; ``layers.{s}.blocks.{j}`` is accepted too
    assert param_rules.layer_id("image_encoder.layers.2.5.attn.qkv.kernel", 12) == 2 + 2 + 5 + 1
    assert param_rules.layer_id("image_encoder.layers.3.blocks.1.mlp.fc1.kernel", 12) == 12
    assert param_rules.layer_id("image_encoder.downsamples.2.conv1.c.kernel", 12) == 10
    with pytest.raises(ValueError, match="do not add up"):
        param_rules.layer_id("image_encoder.layers.0.0.conv1.c.kernel", 6)


def test_layer_decay_scales_exact(vit_abstract):
    state = nnx.state(vit_abstract, nnx.Param)
    scales = dict(param_rules.named_leaves(param_rules.layer_decay_scales(state, 0.5)))
    assert scales["image_encoder.patch_embed.kernel"] == 0.5**5
    assert scales["image_encoder.pos_embed"] == 0.5**5
    assert scales["image_encoder.blocks.0.attn.qkv.kernel"] == 0.5**4
    assert scales["image_encoder.blocks.1.norm1.scale"] == 0.5**3
    assert scales["image_encoder.blocks.3.mlp.lin2.bias"] == 0.5
    assert scales["image_encoder.neck_conv1.kernel"] == 1.0
    assert scales["mask_decoder.iou_token"] == 1.0
    assert scales["prompt_encoder.point_embeddings.0"] == 1.0
    assert set(scales.values()) == {0.5**k for k in range(6)}


# ---------------------------------------------------------------------------------------------- decay mask


def test_weight_decay_mask_vit(vit_abstract):
    params = dict(param_rules.named_leaves(nnx.state(vit_abstract)))
    mask = param_rules.weight_decay_mask(params)
    assert set(mask) == set(params) and all(isinstance(v, bool) for v in mask.values())
    decayed = {k for k, v in mask.items() if v}
    assert decayed == {k for k in params if k.endswith(".kernel")}  # in SAM exactly the kernels decay
    for name in ["image_encoder.patch_embed.kernel", "image_encoder.blocks.0.attn.qkv.kernel",
                 "image_encoder.neck_conv2.kernel", "mask_decoder.transformer.layers.0.mlp.lin1.kernel",
                 "mask_decoder.output_hypernetworks_mlps.3.layers.2.kernel", "prompt_encoder.mask_conv1.kernel"]:
        assert mask[name], name
    for name in ["image_encoder.pos_embed", "image_encoder.blocks.0.attn.rel_pos_h",
                 "image_encoder.blocks.0.attn.rel_pos_w", "image_encoder.blocks.0.norm1.scale",
                 "image_encoder.blocks.0.attn.qkv.bias", "mask_decoder.iou_token", "mask_decoder.mask_tokens",
                 "prompt_encoder.no_mask_embed", "prompt_encoder.not_a_point_embed",
                 "prompt_encoder.point_embeddings.2", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]:
        assert not mask[name], name
    # PEFT (samjax.modeling.peft): LoRA matrices (n, in, rank) and adapter kernels decay, biases not
    assert param_rules.decays("image_encoder.blocks.0.attn.qkv.lora_a", 3)
    assert param_rules.decays("image_encoder.blocks.0.adapter_mlp.down.kernel", 2)
    assert not param_rules.decays("image_encoder.blocks.0.adapter_mlp.down.bias", 1)
    # nnx.State of Variables: the same structure back, with bools
    state = nnx.state(vit_abstract, nnx.Param)
    smask = param_rules.weight_decay_mask(state)
    assert jax.tree_util.tree_structure(jax.tree_util.tree_map(lambda _: 0, smask)) == \
        jax.tree_util.tree_structure(jax.tree_util.tree_map(lambda _: 0, state))
    assert {n: m for n, m in param_rules.named_leaves(smask)} == {k: mask[k] for k, _ in param_rules.named_leaves(state)}


def test_weight_decay_mask_tiny_vit(tiny_vit_abstract):
    mask = dict(param_rules.named_leaves(param_rules.weight_decay_mask(nnx.state(tiny_vit_abstract))))
    assert mask["image_encoder.layers.1.0.attn.qkv.kernel"]
    assert mask["image_encoder.layers.0.0.conv2.c.kernel"]
    assert mask["image_encoder.patch_embed_conv1.c.kernel"]
    assert not mask["image_encoder.layers.1.0.attn.attention_biases"]  # 2-D bias table
    assert not mask["image_encoder.layers.1.0.local_conv.bn_scale"]
    assert not mask["image_encoder.downsamples.0.conv1.bn_bias"]
    assert not mask["image_encoder.neck_norm1.scale"]


# ---------------------------------------------------------------------------------------------- AdamW


def numpy_adamw(params, grads_seq, *, lr_fn, b1, b2, eps, wd, clip, masks, scales):
    params = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    for t, grads in enumerate(grads_seq):
        g = {k: x.astype(np.float64) for k, x in grads.items()}
        norm = math.sqrt(sum(float(np.sum(x**2)) for x in g.values()))
        if clip and norm > clip:
            g = {k: x * (clip / norm) for k, x in g.items()}
        for k in params:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            mhat = m[k] / (1 - b1 ** (t + 1))
            vhat = v[k] / (1 - b2 ** (t + 1))
            u = mhat / (np.sqrt(vhat) + eps) + (wd * params[k] if masks[k] else 0.0)
            params[k] = params[k] - lr_fn(t) * scales[k] * u
    return params


def test_adamw_matches_numpy():
    rng = np.random.default_rng(0)
    params = {
        "image_encoder": {"patch_embed": {"kernel": rng.normal(size=(2, 2, 3)).astype(np.float32)},
                          "blocks": [{"attn": {"qkv": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)}}},
                                     {"norm1": {"scale": rng.normal(size=(4,)).astype(np.float32)}}]},
        "mask_decoder": {"iou_token": rng.normal(size=(1, 4)).astype(np.float32),
                         "lin": {"kernel": rng.normal(size=(4, 2)).astype(np.float32)}},
    }
    c = cfg(learning_rate=0.1, weight_decay=0.05, grad_clip_norm=0.5, warmup_steps=2, total_steps=10,
            min_lr_ratio=0.0, layer_decay=0.7, b1=0.8, b2=0.95, eps=1e-6)
    tx = optim.make_optimizer(c, params)
    grads_seq = [jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
                 for _ in range(4)]

    p = jax.tree_util.tree_map(jnp.asarray, params)
    state = tx.init(p)
    step = jax.jit(tx.update)
    for g in grads_seq:
        updates, state = step(g, state, p)
        p = optax.apply_updates(p, updates)

    flat = dict(param_rules.named_leaves(params))
    masks = {"image_encoder.patch_embed.kernel": True, "image_encoder.blocks.0.attn.qkv.kernel": True,
             "image_encoder.blocks.1.norm1.scale": False, "mask_decoder.iou_token": False,
             "mask_decoder.lin.kernel": True}
    # num_layers inferred = 2: patch embed 0.7**3, block 0 0.7**2, block 1 0.7, decoder 1
    scales = {"image_encoder.patch_embed.kernel": 0.7**3, "image_encoder.blocks.0.attn.qkv.kernel": 0.7**2,
              "image_encoder.blocks.1.norm1.scale": 0.7, "mask_decoder.iou_token": 1.0,
              "mask_decoder.lin.kernel": 1.0}
    assert dict(param_rules.named_leaves(param_rules.weight_decay_mask(params))) == masks
    lr_fn = lambda t: 0.1 * t / 2 if t < 2 else 0.1 * 0.5 * (1 + math.cos(math.pi * (t - 2) / 8))  # noqa: E731
    want = numpy_adamw(flat, [dict(param_rules.named_leaves(g)) for g in grads_seq], lr_fn=lr_fn, b1=0.8, b2=0.95,
                       eps=1e-6, wd=0.05, clip=0.5, masks=masks, scales=scales)
    got = dict(param_rules.named_leaves(p))
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], atol=1e-6, rtol=0, err_msg=k)
        assert not np.allclose(np.asarray(got[k]), flat[k]), k  # every leaf moved


def test_sgd_momentum_step():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
    tx = optim.make_optimizer(cfg(optimizer="sgd", momentum=0.9, learning_rate=0.1, warmup_steps=0,
                                  schedule="constant", weight_decay=0.01), params)
    grads = {"w": jnp.full((2, 2), 2.0), "b": jnp.full((2,), 2.0)}
    state = tx.init(params)
    u1, state = tx.update(grads, state, params)
    u2, state = tx.update(grads, state, params)
    np.testing.assert_allclose(u1["w"], -0.1 * 2.01, rtol=1e-6)  # L2 on the 2-D leaf
    np.testing.assert_allclose(u1["b"], -0.1 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(u2["w"], -0.1 * (2.01 + 0.9 * 2.01), rtol=1e-6)


def test_nnx_optimizer_on_model(vit_model):
    """nnx.Optimizer inits with a Variable tree and updates with plain arrays: names must match both."""
    model = nnx.clone(vit_model)
    state = nnx.state(model, nnx.Param)
    lr, wd = 1e-2, 0.1
    tx = optim.make_optimizer(cfg(learning_rate=lr, weight_decay=wd, warmup_steps=0, schedule="constant",
                                  total_steps=None, layer_decay=0.5, grad_clip_norm=0.0, eps=1e-12), state)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    before = flat_params(model)
    grads = jax.tree_util.tree_map(jnp.ones_like, state)

    @nnx.jit
    def step(model, opt, grads):
        opt.update(model, grads)

    step(model, opt, grads)
    after = flat_params(model)
    scales = dict(param_rules.named_leaves(param_rules.layer_decay_scales(state, 0.5)))
    mask = dict(param_rules.named_leaves(param_rules.weight_decay_mask(state)))
    assert set(scales) == set(mask)
    for name in before:
        if name not in scales:  # a buffer, not a Param: untouched
            np.testing.assert_array_equal(after[name], before[name])
            continue
        # first Adam step with unit gradients: mhat / sqrt(vhat) = 1
        want = before[name] - lr * scales[name] * (1.0 + (wd * before[name] if mask[name] else 0.0))
        np.testing.assert_allclose(after[name], want, atol=1e-6, rtol=1e-6, err_msg=name)


def test_optimizer_tiny_vit_layer_decay(tiny_vit_abstract):
    state = nnx.state(tiny_vit_abstract, nnx.Param)
    tx = optim.make_optimizer(cfg(layer_decay=0.9, weight_decay=0.1, grad_clip_norm=1.0), state)
    # layout inferred: 6 blocks in stages (1, 2, 2, 1); init and update trace on the abstract tree
    opt_state = jax.eval_shape(tx.init, state)
    updates, _ = jax.eval_shape(tx.update, nnx.as_pure(state), opt_state, nnx.as_pure(state))
    assert jax.tree_util.tree_structure(updates) == jax.tree_util.tree_structure(nnx.as_pure(state))
    scales = dict(param_rules.named_leaves(param_rules.layer_decay_scales(state, 0.9)))
    assert scales["image_encoder.patch_embed_conv1.c.kernel"] == pytest.approx(0.9**7)
    assert scales["image_encoder.layers.2.1.attn.qkv.kernel"] == pytest.approx(0.9**2)
    assert scales["mask_decoder.iou_token"] == 1.0


# ---------------------------------------------------------------------------------------------- accumulation


def _mlp_problem():
    rng = np.random.default_rng(1)
    params = {"l1": {"kernel": jnp.asarray(rng.normal(size=(3, 5)), jnp.float32), "bias": jnp.zeros(5)},
              "l2": {"kernel": jnp.asarray(rng.normal(size=(5, 2)), jnp.float32), "bias": jnp.zeros(2)}}
    batch = {"x": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
             "y": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)}

    def loss_fn(p, b):
        h = jnp.tanh(b["x"] @ p["l1"]["kernel"] + p["l1"]["bias"])
        err = h @ p["l2"]["kernel"] + p["l2"]["bias"] - b["y"]
        loss = jnp.mean(err**2)
        return loss, {"mae": jnp.mean(jnp.abs(err)), "n": jnp.int32(b["x"].shape[0])}

    return params, batch, jax.value_and_grad(loss_fn, has_aux=True)


def test_accumulate_gradients_equals_full_batch():
    params, batch, lg = _mlp_problem()
    (full_loss, full_aux), full_grads = lg(params, batch)
    loss1, aux1, grads1 = accumulate_gradients(lg, params, batch, 1)
    assert float(loss1) == float(full_loss)
    acc = jax.jit(accumulate_gradients, static_argnums=(0, 3))
    loss, aux, grads = acc(lg, params, batch, 4)
    np.testing.assert_allclose(loss, full_loss, atol=1e-6)
    np.testing.assert_allclose(aux["mae"], full_aux["mae"], atol=1e-6)  # equal-size micro-batches
    assert float(aux["n"]) == 2.0  # averaged over micro-batches
    for (path, g), f in zip(jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree_util.tree_leaves(full_grads)):
        assert g.dtype == f.dtype
        np.testing.assert_allclose(g, f, atol=1e-6, err_msg=param_rules.param_path(path))


def test_accumulate_gradients_micro_batches_and_errors():
    params, batch, lg = _mlp_problem()
    seen = []

    def spy(p, b):
        seen.append(b["x"].shape)
        return lg(p, b)

    accumulate_gradients(spy, params, batch, 4)
    assert all(s == (2, 3) for s in seen)  # one micro-batch in the scan body
    with pytest.raises(ValueError, match="equal micro-batches"):
        accumulate_gradients(lg, params, batch, 3)
    with pytest.raises(ValueError, match="steps"):
        accumulate_gradients(lg, params, batch, 0)
    with pytest.raises(ValueError, match="different leading sizes"):
        accumulate_gradients(lg, params, {"x": batch["x"], "y": batch["y"][:4]}, 2)
