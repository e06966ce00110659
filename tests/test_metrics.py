"""Tests of pillow_gcp.metrics (array-level quality measures) and of the k search in pillow_gcp.convert."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pillow_gcp import convert, metrics
from pillow_gcp.quantizers import colorspace


def flat(rgb, shape=(4, 4)) -> np.ndarray:
    return np.tile(np.array(rgb, np.uint8), shape + (1,))


def test_psnr_reference_values():
    a, b = flat((100, 100, 100)), flat((110, 100, 100))
    # MSE over R, G, B = 100 / 3
    assert metrics.mse(a, b) == pytest.approx(100 / 3)
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (100 / 3)))
    assert metrics.psnr(a, a) == math.inf
    assert metrics.psnr_from_mse(255.0**2) == pytest.approx(0.0)


def test_oklab_reference_values():
    lab = colorspace.float_to_oklab(np.array([[255.0, 255, 255], [255, 0, 0], [0, 0, 0]]))
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=1e-2)
    np.testing.assert_allclose(lab[1], [62.7955, 22.4863, 12.5846], atol=1e-2)  # Ottosson's reference x100
    np.testing.assert_allclose(lab[2], [0.0, 0.0, 0.0], atol=1e-9)
    # the float path agrees with the quantizer's uint8 path
    colours = np.random.default_rng(0).integers(0, 256, (50, 3), dtype=np.uint8)
    np.testing.assert_allclose(colorspace.float_to_oklab(colours), colorspace.to_oklab(colours), atol=1e-3)
    assert metrics.mean_delta_e(flat((255, 255, 255)), flat((0, 0, 0))) == pytest.approx(100.0, abs=1e-3)


def test_alpha_is_measured_on_composites():
    opaque = flat((200, 0, 0, 255), (2, 1))
    clear_a = flat((200, 0, 0, 0), (2, 1))
    clear_b = flat((0, 90, 0, 0), (2, 1))
    assert metrics.psnr(clear_a, clear_b) == math.inf  # colour under alpha 0 does not count
    assert metrics.mean_delta_e(clear_a, clear_b) == 0.0
    # losing alpha costs what it shows: over black nothing of red is left, over white red becomes white
    expect = (200**2 + (255 - 200) ** 2 + 2 * 255**2 + 0) / 2 / 3  # mean of the two composites' MSEs
    assert metrics.mse(opaque, clear_a) == pytest.approx(expect)
    # an RGB image against an RGBA one: the RGB one counts as opaque
    assert metrics.psnr(opaque[..., :3], opaque) == math.inf


def test_chunked_equals_whole(monkeypatch):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (37, 23, 4), dtype=np.uint8)
    b = rng.integers(0, 256, (37, 23, 4), dtype=np.uint8)
    whole = (metrics.mse(a, b), metrics.delta_e_map(a, b), metrics.error_map(a, b))
    monkeypatch.setattr(metrics, "_CHUNK", 50)  # two rows per chunk
    parts = (metrics.mse(a, b), metrics.delta_e_map(a, b), metrics.error_map(a, b))
    assert parts[0] == pytest.approx(whole[0])
    np.testing.assert_allclose(parts[1], whole[1])
    np.testing.assert_allclose(parts[2], whole[2])
    # error_map: the mean absolute R, G, B difference of opaque images
    x, y = flat((10, 20, 30)), flat((13, 20, 24))
    np.testing.assert_allclose(metrics.error_map(x, y), 3.0)


def test_expand_and_bad_arguments():
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    pal = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    np.testing.assert_array_equal(metrics.expand(idx, pal)[1, 0], [4, 5, 6])
    with pytest.raises(ValueError, match="differ in size"):
        metrics.mse(flat((0, 0, 0), (2, 2)), flat((0, 0, 0), (2, 3)))
    with pytest.raises(ValueError, match="uint8"):
        metrics.psnr(np.zeros((2, 2, 3), np.float32), flat((0, 0, 0), (2, 2)))


def test_search_k_is_minimal_and_handles_non_monotonic_quality():
    quality = {k: 10.0 + k / 10 for k in range(1, 257)}
    calls = []

    def measure(k):
        calls.append(k)
        return quality[k]

    k, reached, tried = convert.search_k(measure, lambda v: v >= 20.0)
    assert reached and k == 100 and quality[k] >= 20 and quality[k - 1] < 20
    assert len(calls) == len(set(calls))  # each k measured once
    for k2 in range(200, 257):
        quality[k2] = 45.0  # the bisection lands on 200 ...
    quality[100] = 50.0  # ... but 200 // 2 meets the 40 dB target too, out of order
    k, reached, _ = convert.search_k(quality.__getitem__, lambda v: v >= 40.0)
    assert reached and k == 100 and quality[k // 2] < 40.0
    k, reached, _ = convert.search_k(quality.__getitem__, lambda v: v >= 99.0)
    assert (k, reached) == (256, False)
    k, reached, _ = convert.search_k(quality.__getitem__, lambda v: v >= 0.0, floor=3)
    assert (k, reached) == (3, True)  # the floor (fixed colours) bounds k from below
