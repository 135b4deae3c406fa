"""samjax: Segment Anything in JAX/Flax NNX, with exact parity to Meta's PyTorch weights."""

__all__ = [
    "CheckpointError",
    "Sam",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "SamSpec",
    "UnsafeCheckpointError",
    "abstract_sam",
    "build_sam",
    "build_sam_from_spec",
    "get_spec",
    "sam_model_registry",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Every public name is imported on first use (PEP 562): `import samjax` costs nothing, so a command can
    # re-execute itself (samjax.utils.huge_pages) before JAX loads, and `train.py` does not pay ~1.7 s for the
    # mask generator. A module's names are bound together: `samjax.build_sam` is then the function, not the module.
    if name in ("abstract_sam", "build_sam", "build_sam_from_spec", "sam_model_registry"):
        from samjax.build_sam import abstract_sam, build_sam, build_sam_from_spec, sam_model_registry

        found = dict(abstract_sam=abstract_sam, build_sam=build_sam, build_sam_from_spec=build_sam_from_spec,
                     sam_model_registry=sam_model_registry)
    elif name in ("SamSpec", "get_spec"):
        from samjax.model_spec import SamSpec, get_spec

        found = dict(SamSpec=SamSpec, get_spec=get_spec)
    elif name in ("CheckpointError", "UnsafeCheckpointError"):
        from samjax.errors import CheckpointError, UnsafeCheckpointError

        found = dict(CheckpointError=CheckpointError, UnsafeCheckpointError=UnsafeCheckpointError)
    elif name == "Sam":
        from samjax.modeling.sam import Sam

        found = dict(Sam=Sam)
    elif name == "SamPredictor":
        from samjax.predictor import SamPredictor

        found = dict(SamPredictor=SamPredictor)
    elif name == "SamAutomaticMaskGenerator":
        from samjax.automatic_mask_generator import SamAutomaticMaskGenerator

        found = dict(SamAutomaticMaskGenerator=SamAutomaticMaskGenerator)
    else:
        raise AttributeError(f"module 'samjax' has no attribute {name!r}")
    globals().update(found)
    return found[name]


def __dir__():
    return sorted(set(globals()) | set(__all__))
