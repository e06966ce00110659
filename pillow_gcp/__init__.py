"""pillow-gcp: the .gcp palette image format for Pillow, and the quantizers that feed it.

``import pillow_gcp`` registers the format "GCP" (extension ``.gcp``) with Pillow::

    from PIL import Image
    import pillow_gcp

    Image.open("photo.png").save("photo.gcp", k=16, algo="kmedoids")
    im = Image.open("photo.gcp")                     # mode "P"
    p = pillow_gcp.quantize(im, k=8, algo="kmeans")  # a P image, like Image.quantize

Importing the package loads Pillow only: numpy and the quantizers, the payload coder and the other
submodules are imported when first used (``pillow_gcp.quantize``, a .gcp opened or saved, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List

from .errors import GCPFormatError
from .plugin import register

if TYPE_CHECKING:  # the lazy names below, for type checkers
    from ._threads import set_threads
    from ._threads import set_threads as set_decode_threads
    from .quantizers import quantize, quantize_many, register_quantizer

__all__ = ["GCPFormatError", "quantize", "quantize_many", "register", "register_quantizer", "set_threads",
           "set_decode_threads", "__version__"]
__version__ = "0.1.0"

#: public name -> (submodule, attribute), imported on first access
_LAZY = {
    "quantize": ("quantizers", "quantize"),
    "quantize_many": ("quantizers", "quantize_many"),
    "register_quantizer": ("quantizers", "register_quantizer"),
    "set_threads": ("_threads", "set_threads"),  # the one thread cap: quantize's searches and decoding
    "set_decode_threads": ("_threads", "set_threads"),  # its earlier name
}
_SUBMODULES = ("adapter", "cli", "convert", "distributed", "errors", "format", "metrics", "payload", "plugin",
               "quantizers")


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


register()
