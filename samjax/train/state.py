"""The training state, its shardings, and the one jitted train step.

The model is split once into a static graph, the trainable parameters and everything else
(``frozen``: other parameters, buffers, batch statistics). ``TrainState`` holds the step, the
trainable parameters (fp32 masters) and the optimizer state as plain nested dicts, so Orbax saves
and reshards them and jit shards them by the rules of ``samjax.parallel``. ``frozen`` is an input of
the step, never an output: it cannot change, and is saved once per run.

Randomness (drop path) is ``fold_in(seed key, step)``: a pure function of the step, so a resumed run
draws what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from samjax import parallel
from samjax.run.model import DTYPES
from samjax.train import optim
from samjax.train.accumulate import accumulate_gradients



@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def split_model(model: nnx.Module, trainable) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    graphdef, params, frozen = nnx.split(model, trainable, ...)
    return graphdef, params, frozen


def count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _suffix_shardings(abstract_tree, param_shardings, params, mesh: Mesh):
    """Optimizer-state leaves whose path ends with a parameter's path (and shape) take its sharding."""
    by_path = {tuple(p): s for p, s in jax.tree_util.tree_flatten_with_path(param_shardings)[0]}
    shapes = {tuple(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}

    def one(path, leaf):
        path = tuple(path)
        for n in range(len(path)):
            suffix = path[n:]
            if suffix in by_path and shapes[suffix] == tuple(leaf.shape):
                return by_path[suffix]
        return parallel.replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, abstract_tree)


def _place(tree, shardings):
    """Host values -> global arrays with ``shardings`` (each process holds the full value)."""
    def one(x, sharding: NamedSharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(one, tree, shardings)


class Trainable:
    """Everything the trainer needs to run a step: graph, shardings, optimizer and the jitted step."""

    def __init__(self, model: nnx.Module, trainable_filter, cfg, mesh: Mesh,
                 loss: Callable, log: Callable = print):
        self.cfg, self.mesh = cfg, mesh
        graphdef, params_state, frozen_state = split_model(model, trainable_filter)
        self.graphdef = graphdef
        params = nnx.to_pure_dict(params_state)
        frozen = nnx.to_pure_dict(frozen_state)
        self.param_count, self.frozen_count = count(params), count(frozen)
        if self.param_count == 0:
            raise ValueError("the strategy trains no parameters; check train.scope and train.peft")
        log(f"trainable parameters: {self.param_count:,} of {self.param_count + self.frozen_count:,} "
            f"({100 * self.param_count / (self.param_count + self.frozen_count):.2f}%)")

        ocfg = dict(cfg.optim)
        ocfg["total_steps"] = int(cfg.total_steps)
        self.tx = optim.make_optimizer(ocfg, params)
        self.schedule = optim.make_schedule(ocfg)
        self.param_shardings = parallel.variable_shardings(params_state, mesh)
        self.frozen_shardings = parallel.variable_shardings(frozen_state, mesh)
        abstract_opt = jax.eval_shape(self.tx.init, params)
        self.state_shardings = TrainState(
            step=parallel.replicated(mesh),
            params=self.param_shardings,
            opt_state=_suffix_shardings(abstract_opt, self.param_shardings, params, mesh),
        )
        self._host_params, self._host_frozen = params, frozen
        self.dtype = DTYPES[cfg.model.dtype]
        self.loss = loss
        self.step_fn = self._make_step()

    def params(self):
        """The trainable parameters on the mesh, as built or loaded (no optimizer state)."""
        return _place(self._host_params, self.param_shardings)

    def init_state(self) -> TrainState:
        params = self.params()
        init = jax.jit(self.tx.init, out_shardings=self.state_shardings.opt_state)
        step = jax.device_put(jnp.zeros((), jnp.int32), self.state_shardings.step)
        return TrainState(step=step, params=params, opt_state=init(params))

    def frozen(self, values=None):
        """The frozen values on the mesh (from ``values``, e.g. a checkpoint, or the built model)."""
        return _place(self._host_frozen if values is None else values, self.frozen_shardings)

    def abstract_state(self) -> TrainState:
        """ShapeDtypeStructs with shardings: the restore target, whatever mesh the new run has."""
        shapes = jax.eval_shape(lambda p: TrainState(jnp.zeros((), jnp.int32), p, self.tx.init(p)), self._host_params)
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                            self.state_shardings)

    def abstract_frozen(self):
        return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=sh),
                            self._host_frozen, self.frozen_shardings)

    def model(self, params, frozen) -> nnx.Module:
        return nnx.merge(self.graphdef, params, frozen)

    def _cast(self, tree):
        if self.dtype == jnp.float32:
            return tree
        return jax.tree.map(lambda x: x.astype(self.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    def _make_step(self):
        cfg, graphdef, loss, tx = self.cfg, self.graphdef, self.loss, self.tx
        seed_key = jax.random.key(int(cfg.seed))
        accum = int(cfg.train.grad_accum_steps)

        def loss_of(params, frozen, batch, key):
            model = nnx.merge(graphdef, self._cast(params), self._cast(frozen))
            total, terms = loss(model, batch, key, cfg, self.dtype)
            return total, terms

        def step(state: TrainState, frozen, batch):
            key = jax.random.fold_in(seed_key, state.step)
            grad_fn = jax.value_and_grad(loss_of, has_aux=True)

            def micro(params, micro_batch):
                (total, terms), grads = grad_fn(params, frozen, micro_batch, key)
                return (total, terms), grads

            total, terms, grads = accumulate_gradients(micro, state.params, batch, accum)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            metrics = {"loss": total, **terms, "grad_norm": optax.tree.norm(grads),
                       "lr": self.schedule(state.step)}
            return TrainState(state.step + 1, params, opt_state), metrics

        batch_sharding = parallel.batch_sharding(self.mesh)
        return jax.jit(
            step,
            in_shardings=(self.state_shardings, self.frozen_shardings, batch_sharding),
            out_shardings=(self.state_shardings, parallel.replicated(self.mesh)),
            donate_argnums=(0,),
        )
