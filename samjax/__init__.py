"""samjax: Segment Anything in JAX/Flax NNX, with exact parity to Meta's PyTorch weights."""

from samjax.build_sam import abstract_sam, build_sam, build_sam_from_spec, sam_model_registry
from samjax.model_spec import SamSpec, get_spec
from samjax.modeling.sam import Sam
from samjax.predictor import SamPredictor
from samjax.errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "CheckpointError",
    "Sam",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "SamSpec",
    "UnsafeCheckpointError",
    "build_sam",
    "abstract_sam",
    "build_sam_from_spec",
    "get_spec",
    "sam_model_registry",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The automatic mask generator is imported on first use: its imports cost every `train.py` start ~1.7 s.
    if name == "SamAutomaticMaskGenerator":
        from samjax.automatic_mask_generator import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator
    raise AttributeError(f"module 'samjax' has no attribute {name!r}")
