"""Make the held-out photo set and the 24-megapixel photo used by the quantizer benches.

Usage::

    python bench/make_photos.py [--src /work/shared/corpus/photos-more] [--out /tmp/gcp-photos-other]
    python bench/make_photos.py --big24 kodim05 [--out /tmp/gcp-24mp]

Held-out set (``--out``): every source photo (USC-SIPI colour images by default; NOT the
Kodak set the quantizer was developed on) is copied, plus four variants of each, all
derived reproducibly (the noise is seeded by the file name):

``big``   LANCZOS upscale x3 (256 -> 768, 512 -> 1536 px) plus sensor-like noise: Gaussian
          with a signal-dependent variance (shot noise ``0.6 * value`` plus read noise 2^2),
          slightly correlated between channels, as a demosaiced camera file;
``dark``  under-exposed: linear light x 0.25 (two stops), back to sRGB, then low-light
          noise (shot 0.3 * value + read 1.5^2) - many dark, noisy colours;
``sat``   saturation x 1.8 and contrast x 1.15 (Pillow ImageEnhance) - clipped, vivid colours;
``mix``   a "screenshot": flat UI chrome (title bar, side panel, buttons, text, a linear
          gradient) around the photo scaled x 1.5 - flat colours mixed with a photo.

``--big24 NAME``: a 6000 x 4000 photo: the Kodak photo NAME (from
``/work/shared/corpus/photos``) upscaled with LANCZOS, plus the ``big`` sensor noise -
a real-photo stand-in for a 24 MP camera image (not a mosaic of tiles).
"""

from __future__ import annotations

import argparse
import glob
import os
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance


def _rng(name: str, kind: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{name}:{kind}".encode()))


def sensor_noise(arr: np.ndarray, rng, shot: float, read: float, corr: float = 0.3) -> np.ndarray:
    """(H, W, 3) uint8 -> uint8 with Gaussian noise of variance ``shot * v + read**2``.

    A share ``corr`` of the noise is common to the three channels (demosaicing couples
    them).  Works in row bands to bound memory on 24 MP images.
    """
    out = np.empty_like(arr)
    H = arr.shape[0]
    band = max(1, (1 << 21) // max(arr.shape[1], 1))
    for y in range(0, H, band):
        v = arr[y:y + band].astype(np.float32)
        sd = np.sqrt(shot * v + read * read)
        n_own = rng.standard_normal(v.shape, dtype=np.float32)
        n_common = rng.standard_normal(v.shape[:2] + (1,), dtype=np.float32)
        n = np.sqrt(1 - corr) * n_own + np.sqrt(corr) * n_common
        v += sd * n
        np.clip(np.rint(v), 0, 255, out=v)
        out[y:y + band] = v.astype(np.uint8)
    return out


def v_big(im: Image.Image, rng) -> Image.Image:
    up = im.resize((im.width * 3, im.height * 3), Image.Resampling.LANCZOS)
    return Image.fromarray(sensor_noise(np.asarray(up), rng, 0.6, 2.0))


def v_dark(im: Image.Image, rng) -> Image.Image:
    c = np.asarray(im, np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4) * 0.25
    s = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    arr = np.clip(np.rint(s * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(sensor_noise(arr, rng, 0.3, 1.5))


def v_sat(im: Image.Image, rng) -> Image.Image:
    return ImageEnhance.Contrast(ImageEnhance.Color(im).enhance(1.8)).enhance(1.15)


def v_mix(im: Image.Image, rng) -> Image.Image:
    ph = im.resize((im.width * 3 // 2, im.height * 3 // 2), Image.Resampling.LANCZOS)
    W, H = ph.width + 260, ph.height + 120
    accent = tuple(int(x) for x in rng.integers(40, 220, 3))
    can = Image.new("RGB", (W, H), (243, 244, 246))
    d = ImageDraw.Draw(can)
    d.rectangle((0, 0, W, 36), fill=(32, 33, 36))
    for i, col in enumerate(((255, 95, 86), (255, 189, 46), (39, 201, 63))):
        d.ellipse((12 + 22 * i, 11, 26 + 22 * i, 25), fill=col)
    d.text((90, 12), "photo-viewer - untitled.png", fill=(230, 230, 230))
    d.rectangle((0, 36, 220, H), fill=(255, 255, 255))
    for i in range(12):
        y = 52 + 28 * i
        if y + 20 > H:
            break
        if i == 2:
            d.rectangle((8, y - 4, 212, y + 18), fill=accent)
        d.text((20, y), f"Item {i + 1}: folder/file_{i:02d}.jpg", fill=(20, 20, 20) if i != 2 else (255, 255, 255))
    g = np.linspace(0, 1, W - 240)[None, :, None]
    grad = (np.array(accent) * (1 - g) + np.array([250, 250, 250]) * g).astype(np.uint8)
    can.paste(Image.fromarray(np.repeat(grad, 40, axis=0)), (230, H - 70))
    for i in range(3):
        d.rounded_rectangle((240 + 110 * i, H - 60, 330 + 110 * i, H - 40), 6, fill=accent)
        d.text((256 + 110 * i, H - 56), ("Open", "Save", "Close")[i], fill=(255, 255, 255))
    can.paste(ph, (240, 46))
    return can


VARIANTS = {"big": v_big, "dark": v_dark, "sat": v_sat, "mix": v_mix}


def make_set(src: str, out: str) -> list:
    os.makedirs(out, exist_ok=True)
    files = sorted(glob.glob(os.path.join(src, "*.png")))
    made = []
    for f in files:
        name = os.path.splitext(os.path.basename(f))[0]
        im = Image.open(f).convert("RGB")
        dst = os.path.join(out, f"{name}.png")
        im.save(dst, compress_level=1)
        made.append(dst)
        for kind, fn in VARIANTS.items():
            dst = os.path.join(out, f"{name}-{kind}.png")
            if not os.path.exists(dst):
                fn(im, _rng(name, kind)).save(dst, compress_level=1)
            made.append(dst)
    return made


def make_24mp(name: str, out: str, corpus: str = "/work/shared/corpus/photos") -> str:
    os.makedirs(out, exist_ok=True)
    dst = os.path.join(out, f"{name}-24mp.png")
    if not os.path.exists(dst):
        im = Image.open(os.path.join(corpus, name + ".png")).convert("RGB")
        if im.height > im.width:
            im = im.transpose(Image.Transpose.ROTATE_90)
        up = im.resize((6000, 4000), Image.Resampling.LANCZOS)
        Image.fromarray(sensor_noise(np.asarray(up), _rng(name, "24mp"), 0.6, 2.0)).save(dst, compress_level=1)
    return dst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default="/work/shared/corpus/photos-more")
    ap.add_argument("--out", default=None)
    ap.add_argument("--big24", default=None, metavar="KODAK_NAME")
    a = ap.parse_args(argv)
    if a.big24:
        print(make_24mp(a.big24, a.out or "/tmp/gcp-24mp"))
    else:
        made = make_set(a.src, a.out or "/tmp/gcp-photos-other")
        print(f"{len(made)} images in {os.path.dirname(made[0])}")


if __name__ == "__main__":
    main()
