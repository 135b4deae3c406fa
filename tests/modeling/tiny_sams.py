"""Tiny SAMs with random weights (ViT and MobileSAM's TinyViT encoders), shared by the PEFT and switch tests."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from samjax.build_sam import abstract_sam
from samjax.model_spec import get_spec
from samjax.params import assign_params, param_shapes

VIT = get_spec("vit_b").replace(
    encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,), image_size=64,
    patch_size=8, window_size=4, prompt_embed_dim=32, decoder_mlp_dim=64, decoder_num_heads=2,
    iou_head_hidden_dim=32,
)
TINY = get_spec("vit_t").replace(
    image_size=64, tiny_embed_dims=(8, 16, 24, 32), tiny_depths=(1, 1, 2, 1), tiny_num_heads=(1, 2, 2, 2),
    tiny_window_sizes=(2, 2, 2, 2), prompt_embed_dim=32, decoder_mlp_dim=64, decoder_num_heads=2,
    iou_head_hidden_dim=32,
)
SPECS = {"vit": VIT, "tiny_vit": TINY, "vit_groups": VIT.replace(encoder_depth=6, encoder_global_attn_indexes=(2, 5))}
BOXES = jnp.array([[5.0, 5.0, 40.0, 50.0], [0.0, 10.0, 63.0, 30.0]])



@functools.cache
def _random_params(kind, seed):
    """Every variable random (SAM's own init gives a near-constant tiny encoder output), drawn with NumPy:
    building the model eagerly would compile every initializer separately, slow on CPU."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(abstract_sam(SPECS[kind])).items():
        leaf = name.rsplit(".", 1)[-1]
        std = 1 / np.sqrt(np.prod(shape[:-1])) if leaf == "kernel" else 0.2
        value = rng.normal(0.0, std, shape)
        if leaf in ("scale", "bn_scale", "bn_var"):  # norm scales and variances near 1
            value = np.abs(1.0 + value)
        params[name] = value.astype(np.float32)
    return params


def make(kind, seed=0):
    """A fresh tiny Sam with random weights."""
    model = abstract_sam(SPECS[kind])
    assign_params(model, _random_params(kind, seed))
    return model


def images(seed=1, batch=2):
    return jax.random.normal(jax.random.key(seed), (batch, 64, 64, 3))


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, x):
    return nnx.merge(graphdef, state)(x, boxes=BOXES[: x.shape[0]], multimask_output=True)


def forward(model, x):
    """The jitted end-to-end forward pass (one program per architecture, as the predictor does)."""
    return _forward(*nnx.split(model), x)


@functools.partial(jax.jit, static_argnums=0)
def _encode(graphdef, state, x, key):
    return nnx.merge(graphdef, state).image_encoder(x, key=key)


def encode(model, x, key=None):
    return _encode(*nnx.split(model), x, key)


def set_random(model, filter, seed, std=0.3):
    """Replaces the variables ``filter`` selects with N(0, std) values."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model, filter)
    nnx.update(model, jax.tree.map(lambda x: jnp.asarray(rng.normal(0.0, std, x.shape), x.dtype), state))
