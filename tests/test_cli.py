"""Tests of the ``gcp`` command line (pillow_gcp.cli).

Most tests call ``main(argv)`` in-process; stdin/stdout and ``-j`` run the
real ``python -m pillow_gcp`` in a subprocess.  Images are small and made
here, so the whole file runs in a few seconds.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import pillow_gcp
from pillow_gcp import cli
from pillow_gcp.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def photo(w: int = 48, h: int = 32, seed: int = 0) -> Image.Image:
    """A smooth RGB image with noise: many colours, quality grows with k."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack(
        [x * 255 / (w - 1), y * 255 / (h - 1), (x + y) * 255 / (w + h - 2)], axis=-1
    ) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def save_png(path, im=None) -> str:
    (im or photo()).save(path, "PNG")
    return str(path)


def rgb(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.float64)


def ref_psnr(a: Image.Image, b: Image.Image) -> float:
    """Independent PSNR over R, G, B (opaque images)."""
    m = np.mean((rgb(a) - rgb(b)) ** 2)
    return math.inf if m == 0 else 10 * math.log10(255**2 / m)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), ROOT) if p)
    return env


def run(args, stdin=None):
    """``python -m pillow_gcp ARGS`` in a subprocess (bytes in, bytes out)."""
    return subprocess.run(
        [sys.executable, "-m", "pillow_gcp", *args], input=stdin, capture_output=True, env=_env(), timeout=120
    )


def leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


# -------------------------------------------------------------------------- compress


def test_compress_default_output_beside_input(tmp_path):
    src = save_png(tmp_path / "a.png")
    assert main(["compress", src, "-k", "8"]) == 0
    out = tmp_path / "a.gcp"
    with Image.open(out) as im:
        assert im.format == "GCP"
        assert im.mode == "P"
        assert im.size == (48, 32)
        im.load()
        assert len(im.getcolors(256)) <= 8
    assert leftovers(tmp_path) == []


def test_compress_output_is_the_quantizer_result(tmp_path):
    src = save_png(tmp_path / "a.png")
    out = str(tmp_path / "b.gcp")
    assert main(["compress", src, "-o", out, "-k", "6", "--seed", "3", "--algo", "kmedoids"]) == 0
    expect = pillow_gcp.quantize(Image.open(src).convert("RGB"), k=6, algo="kmedoids", seed=3)
    with Image.open(out) as got:
        np.testing.assert_array_equal(rgb(got), rgb(expect))


def test_defaults_match_image_save(tmp_path):
    """``gcp compress x.png`` writes what ``Image.open(x.png).save(..., "GCP")`` writes."""
    src = save_png(tmp_path / "a.png", photo(64, 40, seed=4))
    assert main(["compress", src]) == 0
    buf = io.BytesIO()
    Image.open(src).save(buf, "GCP")
    assert (tmp_path / "a.gcp").read_bytes() == buf.getvalue()


def test_existing_output_refused_without_force(tmp_path, capsys):
    src = save_png(tmp_path / "a.png")
    out = tmp_path / "a.gcp"
    out.write_bytes(b"precious")
    assert main(["compress", src]) == 1
    err = capsys.readouterr().err
    assert "a.png" in err and "exists" in err and "--force" in err
    assert out.read_bytes() == b"precious"
    assert main(["compress", src, "--force"]) == 0
    assert out.read_bytes()[:8] != b"precious"
    assert leftovers(tmp_path) == []


def test_input_never_overwritten_even_with_force(tmp_path, capsys):
    src = save_png(tmp_path / "a.png")
    before = open(src, "rb").read()
    assert main(["compress", src, "-o", src, "--force"]) == 1
    assert "refusing to overwrite input" in capsys.readouterr().err
    assert open(src, "rb").read() == before
    # recompressing a .gcp: the default output name is the input itself
    assert main(["compress", src, "-o", str(tmp_path / "x.gcp")]) == 0
    gcp_before = (tmp_path / "x.gcp").read_bytes()
    assert main(["compress", str(tmp_path / "x.gcp"), "--force", "-k", "2"]) == 1
    assert "x.gcp" in capsys.readouterr().err
    assert (tmp_path / "x.gcp").read_bytes() == gcp_before
    # decompress whose output would be one of the inputs
    assert main(["decompress", str(tmp_path / "x.gcp"), "-o", str(tmp_path / "x.gcp"), "--force"]) == 1
    assert (tmp_path / "x.gcp").read_bytes() == gcp_before


def test_batch_bad_input_reported_rest_completes(tmp_path, capsys):
    a = save_png(tmp_path / "a.png", photo(seed=1))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    missing = str(tmp_path / "missing.png")
    c = save_png(tmp_path / "c.png", photo(seed=2))
    outdir = tmp_path / "out"
    code = main(["compress", a, str(bad), missing, c, "-o", str(outdir), "-k", "4"])
    assert code == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "missing.png" in err
    assert sorted(os.listdir(outdir)) == ["a.gcp", "c.gcp"]  # no partial or temp file


def test_truncated_gcp_fails_cleanly_on_decompress(tmp_path, capsys):
    src = save_png(tmp_path / "a.png")
    assert main(["compress", src, "-k", "4"]) == 0
    data = (tmp_path / "a.gcp").read_bytes()
    (tmp_path / "cut.gcp").write_bytes(data[: len(data) // 2])
    assert main(["decompress", str(tmp_path / "cut.gcp"), str(tmp_path / "a.gcp"), "-o", str(tmp_path / "d")]) == 1
    assert "cut.gcp" in capsys.readouterr().err
    assert os.listdir(tmp_path / "d") == ["a.png"]


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    src = save_png(tmp_path / "a.png")

    def boom(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(cli.os, "replace", boom)
    assert main(["compress", src]) == 1
    assert "a.png" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["a.png"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["compress"],
        ["compress", "{a}", "-k", "0"],
        ["compress", "{a}", "-k", "257"],
        ["compress", "{a}", "-k", "many"],
        ["compress", "{a}", "--algo", "kmode"],
        ["compress", "{a}", "--metric", "cosine"],
        ["compress", "{a}", "--space", "lab"],
        ["compress", "{a}", "--fixed-color", "zz0000"],
        ["compress", "{a}", "-k", "2", "--fixed-color", "ff0000,00ff00,0000ff"],
        ["compress", "{a}", "-k", "8", "--target-psnr", "30"],
        ["compress", "{a}", "--target-psnr", "30", "--target-de", "2"],
        ["compress", "{a}", "--target-psnr", "-3"],
        ["compress", "{a}", "{b}", "-o", "-"],
        ["compress", "{a}", "-", "-o", "{d}"],
        ["compress", "{a}", "{b}", "-o", "{a}"],  # -o is a file with several inputs
        ["compress", "{a}", "{sub_a}", "-o", "{d}"],  # two inputs -> same output name
        ["decompress", "{a}", "--format", "nosuchformat"],
        ["compare", "{a}", "-k", "4", "--against", "{a}"],
        ["info"],
    ],
)
def test_usage_errors_exit_2(tmp_path, capsys, argv):
    (tmp_path / "sub").mkdir()
    names = {
        "a": save_png(tmp_path / "a.png"),
        "b": save_png(tmp_path / "b.png"),
        "sub_a": save_png(tmp_path / "sub" / "a.png"),
        "d": str(tmp_path / "outdir"),
    }
    argv = [x.format(**names) for x in argv]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip()
    assert not (tmp_path / "a.gcp").exists()


def test_help_for_every_command(capsys):
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for cmd in ("compress", "decompress", "info", "compare"):
        assert cmd in top
        assert main([cmd, "--help"]) == 0
        text = capsys.readouterr().out
        assert "usage: gcp " + cmd in text
    assert main(["compress", "--help"]) == 0
    text = capsys.readouterr().out
    for opt in ("--algo", "--metric", "--space", "--dither", "--seed", "--jobs", "--fixed-color",
                "--shared-palette", "--force", "--target-psnr", "--target-de"):
        assert opt in text


def test_one_input_with_output_folder(tmp_path):
    src = save_png(tmp_path / "a.png")
    (tmp_path / "dest").mkdir()
    assert main(["compress", src, "-o", str(tmp_path / "dest")]) == 0
    assert os.listdir(tmp_path / "dest") == ["a.gcp"]
    # a trailing separator names a folder to create
    assert main(["compress", src, "-o", str(tmp_path / "new") + os.sep]) == 0
    assert os.listdir(tmp_path / "new") == ["a.gcp"]


def test_fixed_colors_in_palette(tmp_path):
    src = save_png(tmp_path / "a.png")
    out = tmp_path / "a.gcp"
    assert main(["compress", src, "-k", "6", "--fixed-color", "ff00ff", "--fixed-color", "#123456"]) == 0
    with Image.open(out) as im:
        im.load()
        pal = np.array(im.getpalette("RGB"), dtype=int).reshape(-1, 3)
        pal = {tuple(int(v) for v in c) for c in pal}
    assert (255, 0, 255) in pal and (0x12, 0x34, 0x56) in pal


def test_shared_palette(tmp_path):
    srcs = [save_png(tmp_path / f"i{n}.png", photo(seed=n)) for n in range(3)]
    out = tmp_path / "out"
    assert main(["compress", *srcs, "-o", str(out), "-k", "8", "--shared-palette"]) == 0
    palettes = []
    for n in range(3):
        with Image.open(out / f"i{n}.gcp") as im:
            im.load()
            used = sorted(c for _, c in im.convert("RGB").getcolors(256))
            palettes.append(set(used))
    union = set().union(*palettes)
    assert len(union) <= 8  # one palette of at most 8 colours serves all three
    expect = pillow_gcp.quantize_many([Image.open(s).convert("RGB") for s in srcs], k=8)
    for n in range(3):
        with Image.open(out / f"i{n}.gcp") as im:
            np.testing.assert_array_equal(rgb(im), rgb(expect[n]))


# -------------------------------------------------------------------------- stdin / stdout / -j


def test_stdin_stdout_roundtrip(tmp_path):
    src = save_png(tmp_path / "a.png")
    assert main(["compress", src, "-o", str(tmp_path / "ref.gcp"), "-k", "5"]) == 0
    png = open(src, "rb").read()
    r = run(["compress", "-", "-k", "5"], stdin=png)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (tmp_path / "ref.gcp").read_bytes()
    d = run(["decompress", "-", "-o", "-"], stdin=r.stdout)
    assert d.returncode == 0, d.stderr
    assert d.stdout[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "back.png").write_bytes(d.stdout)
    with Image.open(tmp_path / "ref.gcp") as a, Image.open(tmp_path / "back.png") as b:
        np.testing.assert_array_equal(rgb(a), rgb(b))
    bad = run(["compress", "-"], stdin=b"not an image")
    assert bad.returncode == 1 and b"<stdin>" in bad.stderr and bad.stdout == b""


def test_jobs_2_identical_to_jobs_1(tmp_path):
    srcs = [save_png(tmp_path / f"p{n}.png", photo(40, 24, seed=n)) for n in range(4)]
    (tmp_path / "bad.png").write_bytes(b"junk")
    r1 = run(["compress", *srcs, "-o", str(tmp_path / "j1"), "-k", "7", "-j", "1"])
    r2 = run(["compress", *srcs, str(tmp_path / "bad.png"), "-o", str(tmp_path / "j2"), "-k", "7", "-j", "2"])
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 1 and b"bad.png" in r2.stderr
    assert sorted(os.listdir(tmp_path / "j1")) == sorted(os.listdir(tmp_path / "j2")) == [
        f"p{n}.gcp" for n in range(4)
    ]
    for n in range(4):
        assert (tmp_path / "j1" / f"p{n}.gcp").read_bytes() == (tmp_path / "j2" / f"p{n}.gcp").read_bytes()


def test_progress_only_when_enabled(capsys):
    p = cli.Progress(3, enabled=True)
    p.step("a.png")
    p.message("gcp: b.png: broken")
    p.step("b.png")
    p.close()
    err = capsys.readouterr().err
    assert "[1/3] a.png" in err and "gcp: b.png: broken\n" in err and "\r" in err
    q = cli.Progress(3, enabled=False)
    q.step("a.png")
    q.close()
    assert capsys.readouterr().err == ""


# -------------------------------------------------------------------------- quality targets


def test_target_psnr_is_minimal(tmp_path, capsys):
    im = photo(32, 24, seed=5)
    src = save_png(tmp_path / "a.png", im)
    target = 30.0
    assert main(["compress", src, "--target-psnr", str(target), "-v"]) == 0
    err = capsys.readouterr().err
    k = int(err.split("k=")[1].split()[0])
    assert 2 <= k <= 256
    # the written file meets the target ...
    with Image.open(tmp_path / "a.gcp") as got:
        assert ref_psnr(im, got) >= target
    # ... and with the same algorithm and seed, k meets it and k // 2 does not
    assert ref_psnr(im, pillow_gcp.quantize(im, k=k, algo="kmeans", seed=0)) >= target
    assert ref_psnr(im, pillow_gcp.quantize(im, k=k // 2, algo="kmeans", seed=0)) < target


def test_target_de_is_minimal(tmp_path):
    im = photo(32, 24, seed=6)
    params = cli.QuantParams(k=None, target_de=3.0)
    s = cli.search_k([im], params)
    assert s.reached and s.value <= 3.0
    assert cli.mean_delta_e(im, pillow_gcp.quantize(im, k=s.k)) <= 3.0
    if s.k // 2 >= 1:
        assert cli.mean_delta_e(im, pillow_gcp.quantize(im, k=s.k // 2)) > 3.0


def test_search_handles_non_monotonic_quality(monkeypatch):
    """k // 2 is re-checked: a fake quality curve with a dip forces the search lower."""
    quality = {k: 10.0 + k / 10 for k in range(1, 257)}
    for k in range(200, 257):
        quality[k] = 45.0  # the bisection lands on 200 ...
    quality[100] = 50.0  # ... but 200 // 2 meets the 40 dB target too, out of order

    def fake_quantize(images, params, k):
        return [k]

    monkeypatch.setattr(cli, "_quantize", fake_quantize)
    monkeypatch.setattr(cli, "_quality", lambda originals, outs, params: quality[outs[0]])
    s = cli.search_k([None], cli.QuantParams(k=None, target_psnr=40.0))
    assert s.reached and s.k == 100 and quality[s.k // 2] < 40.0


def test_unreachable_target_uses_256_and_warns(tmp_path, capsys):
    im = photo(32, 24, seed=7)
    src = save_png(tmp_path / "a.png", im)
    assert main(["compress", src, "--target-psnr", "99", "-v"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"a\.png: warning: target PSNR 99 dB not reached; best is [\d.]+ dB at k=256", err)
    assert "k=256" in err.splitlines()[-1]  # the -v line reports the k used


# -------------------------------------------------------------------------- measures


def test_psnr_and_oklab_reference_values():
    a = Image.new("RGB", (4, 4), (100, 100, 100))
    b = Image.new("RGB", (4, 4), (110, 100, 100))
    # MSE over R, G, B = 100 / 3
    assert cli.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (100 / 3)))
    assert cli.psnr(a, a) == math.inf
    lab = cli.srgb_to_oklab(np.array([[255, 255, 255], [255, 0, 0], [0, 0, 0]]))
    np.testing.assert_allclose(lab[0], [1.0, 0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(lab[1], [0.627955, 0.224863, 0.125846], atol=1e-4)  # Ottosson's reference
    np.testing.assert_allclose(lab[2], [0.0, 0.0, 0.0], atol=1e-9)
    w, k = Image.new("RGB", (2, 2), "white"), Image.new("RGB", (2, 2), "black")
    assert cli.mean_delta_e(w, k) == pytest.approx(100.0, abs=1e-3)


def test_alpha_composited_measure():
    opaque = Image.new("RGBA", (2, 1), (200, 0, 0, 255))
    clear_a = Image.new("RGBA", (2, 1), (200, 0, 0, 0))
    clear_b = Image.new("RGBA", (2, 1), (0, 90, 0, 0))
    assert cli.psnr(clear_a, clear_b) == math.inf  # colour under alpha 0 does not count
    assert cli.psnr(opaque, clear_a) < 10  # losing alpha costs


# -------------------------------------------------------------------------- decompress / info / compare


def test_decompress_png_and_other_formats(tmp_path):
    srcs = [save_png(tmp_path / f"p{n}.png", photo(seed=n)) for n in range(2)]
    assert main(["compress", *srcs, "-o", str(tmp_path / "g"), "-k", "8"]) == 0
    gcps = [str(tmp_path / "g" / f"p{n}.gcp") for n in range(2)]
    assert main(["decompress", *gcps, "-o", str(tmp_path / "png")]) == 0
    for n in range(2):
        with Image.open(tmp_path / "png" / f"p{n}.png") as a, Image.open(gcps[n]) as b:
            assert a.format == "PNG"
            np.testing.assert_array_equal(rgb(a), rgb(b))
    assert main(["decompress", gcps[0], "--format", "bmp"]) == 0
    with Image.open(tmp_path / "g" / "p0.bmp") as a, Image.open(gcps[0]) as b:
        assert a.format == "BMP"
        np.testing.assert_array_equal(rgb(a), rgb(b))
    # format from the -o extension
    assert main(["decompress", gcps[1], "-o", str(tmp_path / "x.webp")]) == 0
    with Image.open(tmp_path / "x.webp") as a:
        assert a.format == "WEBP"


def test_info_output(tmp_path, capsys):
    src = save_png(tmp_path / "a.png")
    assert main(["compress", src, "-k", "8"]) == 0
    gcp = tmp_path / "a.gcp"
    size = gcp.stat().st_size
    assert main(["info", str(gcp)]) == 0
    out = capsys.readouterr().out
    assert "48x32" in out
    assert re.search(r"palette:\s+\d+ colours", out)
    assert re.search(r"alpha:\s+no\n", out)
    assert re.search(r"coding:\s+(stored|zlib|lzma2(-perm)?|runs-(lengths|bitmap)(-perm)?|ranks-(zlib|lzma2)(-columns)?(-perm)?)\n", out)
    assert re.search(rf"bytes:\s+{size}\n", out)
    assert re.search(rf"bits per pixel:\s+{8 * size / (48 * 32):.4f}", out)
    assert main(["info", "--json", str(gcp), str(tmp_path / "nope.gcp")]) == 1
    captured = capsys.readouterr()
    assert "nope.gcp" in captured.err
    recs = json.loads(captured.out)
    assert recs[0]["width"] == 48 and recs[0]["height"] == 32 and recs[0]["bytes"] == size
    assert recs[0]["format"] == "GCP" and recs[0]["mode"] == "P" and recs[0]["colors_used"] <= 8
    assert recs[0]["bits_per_pixel"] == pytest.approx(8 * size / (48 * 32), abs=1e-4)


def test_compare_writes_picture_and_measures(tmp_path, capsys):
    im = photo()
    src = save_png(tmp_path / "a.png", im)
    report = tmp_path / "report.png"
    assert main(["compare", src, "-k", "6", "-o", str(report)]) == 0
    out = capsys.readouterr().out
    with Image.open(report) as pic:
        assert pic.width == 3 * 48 + 8 and pic.height > 32
        strip = np.asarray(pic.convert("RGB"))[pic.height - 32 :, :48]
        np.testing.assert_array_equal(strip, np.asarray(im))  # left panel is the original
    expect = pillow_gcp.quantize(im, k=6)
    p = float(out.split("PSNR:")[1].split("dB")[0])
    assert p == pytest.approx(ref_psnr(im, expect), abs=0.01)
    assert "mean deltaE:" in out and ".gcp bytes:" in out
    # an existing picture is refused without --force; --against uses a given .gcp
    assert main(["compare", src, "-k", "6", "-o", str(report)]) == 1
    assert main(["compress", src, "-k", "6"]) == 0
    assert main(["compare", src, "--against", str(tmp_path / "a.gcp"), "-o", str(report), "--force"]) == 0
    out2 = capsys.readouterr().out
    assert float(out2.split("PSNR:")[1].split("dB")[0]) == pytest.approx(p, abs=0.01)


# -------------------------------------------------------------------------- alpha, metadata, terminals


def test_alpha_survives_compress_and_decompress(tmp_path):
    arr = np.asarray(photo(40, 30, seed=3).convert("RGBA")).copy()
    arr[:10, :, 3] = 0  # a fully transparent band
    arr[10:15, :, 3] = 128
    src = save_png(tmp_path / "a.png", Image.fromarray(arr, "RGBA"))
    assert main(["compress", src, "-k", "10"]) == 0
    assert main(["decompress", str(tmp_path / "a.gcp"), "-o", str(tmp_path / "back.png")]) == 0
    with Image.open(tmp_path / "back.png") as back:
        alpha = np.asarray(back.convert("RGBA"))[..., 3]
    assert (alpha[:10] == 0).all()
    assert (alpha[15:] == 255).all()


def test_metadata_kept_unless_strip(tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = str(tmp_path / "a.png")
    photo().save(src, "PNG", icc_profile=icc)
    assert main(["compress", src, "-k", "4"]) == 0
    with Image.open(tmp_path / "a.gcp") as im:
        assert im.info.get("icc_profile") == icc
    assert main(["compress", src, "-k", "4", "--strip", "-o", str(tmp_path / "s.gcp")]) == 0
    with Image.open(tmp_path / "s.gcp") as im:
        assert "icc_profile" not in im.info


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_terminal_behaviour(tmp_path):
    src = save_png(tmp_path / "a.png")
    save_png(tmp_path / "b.png", photo(seed=9))
    try:
        master, slave = os.openpty()
    except OSError as e:  # no /dev/pts in this sandbox
        pytest.skip(f"no pseudo-terminal: {e}")
    try:
        # image data is never written to a terminal
        r = subprocess.run([sys.executable, "-m", "pillow_gcp", "compress", "-"], stdin=open(src, "rb"),
                           stdout=slave, stderr=subprocess.PIPE, env=_env(), timeout=120)
        assert r.returncode == 2 and b"terminal" in r.stderr
        # progress line on a terminal stderr
        r = subprocess.run([sys.executable, "-m", "pillow_gcp", "compress", src, str(tmp_path / "b.png"), "-k", "3"],
                           stdout=subprocess.PIPE, stderr=slave, env=_env(), timeout=120)
        assert r.returncode == 0
        os.close(slave)
        slave = -1
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        assert b"[1/2] a.png" in seen and b"[2/2] b.png" in seen
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


def test_shared_palette_with_target_and_bad_input(tmp_path, capsys):
    srcs = [save_png(tmp_path / f"i{n}.png", photo(24, 16, seed=n)) for n in range(2)]
    (tmp_path / "bad.png").write_bytes(b"nope")
    out = tmp_path / "out"
    code = main(["compress", *srcs, str(tmp_path / "bad.png"), "-o", str(out), "--shared-palette",
                 "--target-psnr", "28", "-v"])
    assert code == 1
    err = capsys.readouterr().err
    assert "bad.png" in err
    assert sorted(os.listdir(out)) == ["i0.gcp", "i1.gcp"]
    k = int(err.split("k=")[1].split()[0])
    originals = [Image.open(s).convert("RGB") for s in srcs]

    def joint_psnr(images):
        m = np.mean([np.mean((rgb(a) - rgb(b)) ** 2) for a, b in zip(originals, images)])
        return 10 * math.log10(255**2 / m)

    decoded = [Image.open(out / f"i{n}.gcp") for n in range(2)]
    assert joint_psnr(decoded) >= 28
    assert joint_psnr(pillow_gcp.quantize_many(originals, k=k // 2)) < 28


def test_given_palette_from_colours_and_from_a_file(tmp_path, capsys):
    src = save_png(tmp_path / "a.png")
    out = tmp_path / "a.gcp"
    assert main(["compress", src, "--palette", "ff0000,00ff00,0000ff,000000", "-o", str(out)]) == 0
    with Image.open(out) as im:
        colours = {tuple(c) for c in np.asarray(im.getpalette()).reshape(-1, 3)}
        assert colours <= {(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)}
        expect = pillow_gcp.quantize(Image.open(src), palette=[(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)])
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(expect.convert("RGB")))
    # a palette image file: the .gcp just written
    out2 = tmp_path / "b.gcp"
    assert main(["compress", src, "--palette", str(out), "-o", str(out2)]) == 0
    with Image.open(out2) as im2, Image.open(out) as im1:
        assert np.array_equal(np.asarray(im2.convert("RGB")), np.asarray(im1.convert("RGB")))
    capsys.readouterr()
    assert main(["compress", src, "--palette", "ff0000", "-k", "4", "-o", str(tmp_path / "c.gcp")]) == 2
    assert "--palette" in capsys.readouterr().err
    assert main(["compress", src, "--palette", "nothex", "-o", str(tmp_path / "c.gcp")]) == 2
    assert not (tmp_path / "c.gcp").exists()


def test_verbose_prints_size_and_psnr_of_the_file_written(tmp_path, capsys):
    src = save_png(tmp_path / "a.png")
    out = tmp_path / "a.gcp"
    assert main(["compress", src, "-k", "8", "-o", str(out), "-v"]) == 0
    err = capsys.readouterr().err
    size = os.path.getsize(out)
    assert f"{size} bytes" in err
    value = float(re.search(r"PSNR ([0-9.]+) dB", err).group(1))
    assert value == pytest.approx(ref_psnr(Image.open(src), Image.open(out)), abs=0.01)


def test_level_option_sets_the_payload_effort(tmp_path, capsys):
    src = save_png(tmp_path / "in.png")
    sizes = {}
    for level in (0, 6, 9):
        out = tmp_path / f"l{level}.gcp"
        assert main(["compress", src, "-k", "8", "--level", str(level), "-o", str(out)]) == 0
        data = out.read_bytes()
        sizes[level] = len(data)
        assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(tmp_path / "l0.gcp")))
    assert Image.open(tmp_path / "l0.gcp").info["gcp_payload_bytes"] == 1 + 48 * 32  # STORED
    assert sizes[9] <= sizes[6] < sizes[0]
    assert main(["compress", src, "--level", "10", "-o", str(tmp_path / "x.gcp")]) == 2
    assert "--level" in capsys.readouterr().err
    assert not (tmp_path / "x.gcp").exists()
