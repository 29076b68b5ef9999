"""statesaver.convert -- trained PyTorch and Keras RNN models to the
worker's safetensors format (docs/worker.md, "Converters").

    statesaver-convert torch IN.pt --out M.safetensors [--map ...] [--check]
    statesaver-convert keras IN.h5 --out M.safetensors [--check]

numpy only at import; torch and h5py are imported by the converter that
needs them.
"""
from .errors import ConvertError
from .model import Layer, Model

__all__ = ["ConvertError", "Layer", "Model"]
