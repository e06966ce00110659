"""pillow-gcp: the .gcp palette image format for Pillow, and the quantizers that feed it.

``import pillow_gcp`` registers the format "GCP" (extension ``.gcp``) with Pillow::

    from PIL import Image
    import pillow_gcp

    Image.open("photo.png").save("photo.gcp", k=16, algo="kmedoids")
    im = Image.open("photo.gcp")                     # mode "P"
    p = pillow_gcp.quantize(im, k=8, algo="kmeans")  # a P image, like Image.quantize
"""

from __future__ import annotations

from .errors import GCPFormatError
from .payload.ctx import set_threads as set_decode_threads
from .plugin import register
from .quantizers import quantize, quantize_many, register_quantizer

__all__ = ["GCPFormatError", "quantize", "quantize_many", "register", "register_quantizer", "set_decode_threads",
           "__version__"]
__version__ = "0.1.0"

register()
