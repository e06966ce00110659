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
    monkeypatch.setattr(cli.os, "link", boom)
    assert main(["compress", src]) == 1
    err = capsys.readouterr().err
    assert "a.png" in err and "disk full" in err and ".tmp" not in err
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
        ["compress", "{a}", "{b}", "-o", "{d}.gcp"],  # -o names a file (not a folder) with several inputs
        ["compress", "{a}", "-o", "{d}.jpg"],  # compress writes .gcp, .png, .gif or .webp
        ["compress", "{a}", "--ext", ".bmp"],
        ["compress", "{a}", "--format", "jpeg"],
        ["compress", "{a}", "--fixed-color", "ff00ff0"],
        ["compress", "{a}", "--min-psnr", "40", "--target-psnr", "30"],
        ["decompress", "{a}", "-o", "{d}.xyz"],  # unknown extension
        ["compare", "{a}", "--against", "{a}", "--min-psnr", "30"],
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
    # a trailing "/" names a folder to create (on every system, not only where os.sep is "/")
    assert main(["compress", src, "-o", str(tmp_path / "new") + "/"]) == 0
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


def test_jobs_workers_share_the_thread_cap(tmp_path, monkeypatch):
    """-j N: each worker process's thread cap is its share of the parent's (at least 1), set by the
    pool's initializer, so N workers do not each start quantize's helper threads on the same cores."""
    import concurrent.futures

    from pillow_gcp import _threads

    seen = []
    real = concurrent.futures.ProcessPoolExecutor

    def spy(*args, **kwargs):
        seen.append((kwargs.get("initializer"), kwargs.get("initargs")))
        return real(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", spy)
    srcs = [save_png(tmp_path / f"p{n}.png", photo(20, 12, seed=n)) for n in range(2)]
    assert main(["compress", *srcs, "-o", str(tmp_path / "out"), "-k", "5", "-j", "2"]) == 0
    assert seen == [(cli._worker_threads, (max(1, min(_threads.threads(), _threads.cpus()) // 2),))]
    try:
        cli._worker_threads(1)
        assert _threads.threads() == 1
    finally:
        _threads.set_threads(None)


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


def test_unreachable_target_uses_256_and_warns(tmp_path, capsys):
    im = photo(32, 24, seed=7)
    src = save_png(tmp_path / "a.png", im)
    assert main(["compress", src, "--target-psnr", "99", "-v"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"a\.png: warning: target PSNR 99 dB not reached; best is [\d.]+ dB at k=256", err)
    assert "k=256" in err.splitlines()[-1]  # the -v line reports the k used


# -------------------------------------------------------------------------- measures


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
    assert re.search(r"coding:\s+(zlib|lzma2|ctx-(up|left)(-zflags)?)\n", out)  # payload.CODINGS (v3)
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
    assert Image.open(tmp_path / "l0.gcp").info["gcp_payload_bytes"] == 1 + 2 + 5 + 48 * 32 + 4  # ZLIB, stored
    assert sizes[9] <= sizes[6] < sizes[0]
    assert main(["compress", src, "--level", "10", "-o", str(tmp_path / "x.gcp")]) == 2
    assert "--level" in capsys.readouterr().err
    assert not (tmp_path / "x.gcp").exists()


# -------------------------------------------------------------------------- one door (issue 11)

ALL_MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "I", "I;16", "I;16B", "F"]


def mode_image(mode: str) -> Image.Image:
    """A small image of ``mode`` with varied values (alpha, 16-bit and float ranges included)."""
    rng = np.random.default_rng(sum(map(ord, mode)))
    h, w = 11, 17
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    alpha = Image.fromarray(rng.choice(np.array([0, 90, 255], np.uint8), (h, w)), "L")
    if mode == "P":
        p = rgb.quantize(24)
        p.info["transparency"] = 3
        return p
    if mode == "PA":
        pa = rgb.quantize(24).convert("PA")
        pa.putalpha(alpha)
        return pa
    if mode in ("LA", "RGBA"):
        im = rgb.convert(mode)
        im.putalpha(alpha)
        return im
    if mode == "I":
        return Image.fromarray(rng.integers(-2000, 70000, (h, w)).astype(np.int32), "I")
    if mode == "I;16":
        return Image.frombytes("I;16", (w, h), rng.integers(0, 65536, (h, w)).astype("<u2").tobytes())
    if mode == "I;16B":
        return Image.frombytes("I;16B", (w, h), rng.integers(0, 65536, (h, w)).astype(">u2").tobytes())
    if mode == "F":
        return Image.fromarray(rng.normal(120, 100, (h, w)).astype(np.float32), "F")
    return rgb.convert(mode)


def _save_mode_file(folder, mode: str) -> str:
    im = mode_image(mode)
    path = str(folder / ("m_" + mode.replace(";", "_") + (".png" if mode in ("1", "L", "LA", "P", "RGB", "RGBA")
                                                          else ".tif")))
    im.save(path)
    return path


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("extra", [[], ["-k", "5"], ["-k", "3", "--algo", "kmedoids", "--space", "oklab"]])
def test_compress_writes_the_bytes_of_image_save(tmp_path, mode, extra):
    """``gcp compress IN -o OUT.gcp`` == ``Image.open(IN).save(OUT, "GCP", **same options, **metadata)``."""
    from pillow_gcp import adapter

    src = _save_mode_file(tmp_path, mode)
    try:
        with Image.open(src) as opened:
            opened.load()
            held = opened.mode
    except OSError:  # before Pillow 13 a YCbCr TIFF written by Pillow does not read back
        held = None
    # the file holds the mode (Pillow reads an RGBX TIFF back as RGB, and a YCbCr TIFF before
    # Pillow 13 as RGB or not at all: those modes are checked in memory below)
    assert held == mode or (mode == "RGBX" and held == "RGB") or (mode == "YCbCr" and held in ("RGB", None))
    options = {}
    if extra:
        options = {"k": int(extra[1])}
        if len(extra) > 2:
            options.update(algo="kmedoids", space="oklab")
    if held is not None:
        out = tmp_path / "out.gcp"
        assert main(["compress", src, "-o", str(out), *extra]) == 0
        im = Image.open(src)
        ref = io.BytesIO()
        im.save(ref, "GCP", **options, **adapter.all_metadata(im))
        assert out.read_bytes() == ref.getvalue()
    if held != mode:
        from pillow_gcp import convert

        mem = mode_image(mode)
        direct = io.BytesIO()
        mem.save(direct, "GCP", **options)
        assert convert.compress_image(mem, **options).data == direct.getvalue()


def test_compress_passes_metadata_explicitly_and_strip_drops_all(tmp_path):
    from PIL import ImageCms, PngImagePlugin

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: a portrait must stay a portrait
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    src = str(tmp_path / "a.png")
    photo().save(src, icc_profile=icc, exif=exif, pnginfo=info)
    assert main(["compress", src, "-k", "4"]) == 0
    with Image.open(tmp_path / "a.gcp") as im:
        assert im.info["icc_profile"] == icc
        assert im.getexif()[0x0112] == 6
        assert b"xmpmeta" in im.info["xmp"]
    assert main(["compress", src, "-k", "4", "--strip", "-o", str(tmp_path / "s.gcp")]) == 0
    with Image.open(tmp_path / "s.gcp") as im:
        assert not {"icc_profile", "exif", "xmp", "comment"} & set(im.info)


def test_cli_holds_no_image_maths_or_library_copies():
    """cli.py parses, names files and reports; numpy, OKLab and the option lists live elsewhere."""
    text = open(cli.__file__, encoding="utf-8").read()
    for needle in ("import numpy", "np.", "0.4122214708", '"euclidean", "manhattan"', '("rgb", "oklab")',
                   "_prepare", "_has_alpha", "probe"):
        assert needle not in text, needle


# -------------------------------------------------------------------------- safe writes (issue 12 item 1)


def _reader(path, box):
    import threading

    def read():
        with open(path, "rb") as f:
            box.append(f.read())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def _unblock_fifo(path):
    """Open the FIFO for writing ourselves so that a reader still waiting returns."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("force", [False, True])
def test_fifo_target_is_written_to_never_replaced(tmp_path, force):
    import stat

    src = save_png(tmp_path / "a.png")
    assert main(["compress", src, "-k", "6", "-o", str(tmp_path / "ref.gcp")]) == 0
    fifo = str(tmp_path / "null")  # a stand-in for /dev/null
    os.mkfifo(fifo)
    box: list = []
    t = _reader(fifo, box)
    try:
        assert main(["compress", src, "-k", "6", "-o", fifo, *(["--force"] if force else [])]) == 0
    finally:
        t.join(30)
        if t.is_alive():
            _unblock_fifo(fifo)
            t.join(5)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still a FIFO
    assert box == [(tmp_path / "ref.gcp").read_bytes()]
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs Unix sockets")
def test_socket_target_is_written_to(tmp_path):
    import socket
    import stat
    import tempfile
    import threading

    src = save_png(tmp_path / "a.png")
    folder = tempfile.mkdtemp(dir="/tmp")  # short path: Unix socket names are limited to ~100 bytes
    path = os.path.join(folder, "s")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    box: list = []

    def serve():
        conn, _ = server.accept()
        with conn:
            chunks = []
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                chunks.append(b)
            box.append(b"".join(chunks))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert main(["compress", src, "-k", "3", "-o", path, "--force"]) == 0
        t.join(30)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert box and box[0][:4] == b"\x89GCP"
    finally:
        server.close()
        os.unlink(path)
        os.rmdir(folder)


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX permissions and links")
def test_force_keeps_mode_and_writes_through_symlinks(tmp_path):
    import stat

    src = save_png(tmp_path / "a.png")
    out = tmp_path / "a.gcp"
    out.write_bytes(b"old")
    os.chmod(out, 0o600)
    assert main(["compress", src, "-k", "4", "--force"]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and out.read_bytes()[:4] == b"\x89GCP"
    # a link keeps pointing at its target, which gets the new bytes
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "t.gcp"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    link = tmp_path / "link.gcp"
    os.symlink(target, link)
    assert main(["compress", src, "-k", "4", "-o", str(link)]) == 1  # exists: refused without --force
    assert target.read_bytes() == b"old"
    assert main(["compress", src, "-k", "4", "-o", str(link), "--force"]) == 0
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert target.read_bytes() == out.read_bytes()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "real") == []
    # a new file gets 0o666 minus the umask, as a plain open() would give it
    umask = os.umask(0o022)
    os.umask(umask)
    assert main(["compress", src, "-k", "4", "-o", str(tmp_path / "new.gcp")]) == 0
    assert stat.S_IMODE(os.stat(tmp_path / "new.gcp").st_mode) == 0o666 & ~umask


def test_output_appearing_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    """Without --force the final rename never replaces a file that appeared after the check."""
    src = save_png(tmp_path / "a.png")
    out = tmp_path / "a.gcp"
    real = cli.check_output

    def check_then_race(o, inputs, force):
        real(o, inputs, force)
        out.write_bytes(b"precious")

    monkeypatch.setattr(cli, "check_output", check_then_race)
    assert main(["compress", src, "-k", "4"]) == 1
    assert out.read_bytes() == b"precious" and leftovers(tmp_path) == []


# -------------------------------------------------------------------------- output formats (issue 12 item 2)


def _indexed(path):
    from pillow_gcp import adapter

    with Image.open(path) as im:
        im.load()
        return adapter.indexed(im)


def _rgba_photo():
    arr = np.asarray(photo(40, 30, seed=3).convert("RGBA")).copy()
    arr[:8, :, 3] = 0  # a fully transparent band
    return Image.fromarray(arr, "RGBA")


@pytest.mark.parametrize("alpha", [False, True])
def test_compress_writes_the_format_the_name_says(tmp_path, alpha):
    from pillow_gcp import adapter

    src = save_png(tmp_path / "a.png", _rgba_photo() if alpha else photo())
    for ext in ("gcp", "png", "gif", "webp"):
        assert main(["compress", src, "-k", "12", "-o", str(tmp_path / f"o.{ext}")]) == 0
    idx, pal = _indexed(tmp_path / "o.gcp")
    assert pal.shape[1] == (4 if alpha else 3)
    with Image.open(tmp_path / "o.png") as png:
        assert png.format == "PNG" and png.mode == "P"
    png_idx, png_pal = _indexed(tmp_path / "o.png")
    np.testing.assert_array_equal(png_idx, idx)  # same indices, same palette
    np.testing.assert_array_equal(png_pal[: len(pal)], pal)  # Pillow < 12.2 pads PLTE to 2**bits entries
    assert len(png_pal) == len(pal) or len(png_pal) == 1 << int(len(pal) - 1).bit_length()
    with Image.open(tmp_path / "o.gif") as gif:
        assert gif.format == "GIF"
        gif_rgba = adapter.pixels(gif.convert("RGBA"))
    with Image.open(tmp_path / "o.webp") as webp:
        assert webp.format == "WEBP"
        webp_px = adapter.pixels(webp)
    expect = pal[idx]
    np.testing.assert_array_equal(webp_px, expect)  # lossless
    if alpha:  # transparent band: alpha 0 in both; GIF has one transparent index
        assert (gif_rgba[:8, :, 3] == 0).all() and (gif_rgba[8:, :, 3] == 255).all()
        np.testing.assert_array_equal(gif_rgba[8:, :, :3], expect[8:, :, :3])
    else:
        np.testing.assert_array_equal(gif_rgba, expect)
    # the PNG is what palette_image gives, saved as an optimized PNG
    ref = io.BytesIO()
    adapter.palette_image(Image.open(src), k=12).save(ref, "PNG", optimize=True, icc_profile=None)
    assert (tmp_path / "o.png").read_bytes() == ref.getvalue()


def test_format_option_and_ext(tmp_path, capsys):
    src = save_png(tmp_path / "a.png")
    assert main(["compress", src, "-k", "8", "--format", "png", "-o", str(tmp_path / "x.gcp")]) == 0
    assert (tmp_path / "x.gcp").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # --format overrides the name
    assert main(["compress", src, "-k", "8", "--ext", "-fs8.png"]) == 0
    assert (tmp_path / "a-fs8.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["compress", src, "-k", "8", "--ext", ".gif", "-o", str(tmp_path / "g") + "/"]) == 0
    assert (tmp_path / "g" / "a.gif").read_bytes()[:3] == b"GIF"
    capsys.readouterr()
    assert main(["compress", src, "-o", str(tmp_path / "x.jpg")]) == 2
    err = capsys.readouterr().err
    assert "x.jpg" in err and ".png" in err and "--format" in err
    assert not (tmp_path / "x.jpg").exists()


def test_stdout_format(tmp_path):
    src = save_png(tmp_path / "a.png")
    r = run(["compress", "-", "-k", "4", "--format", "png"], stdin=open(src, "rb").read())
    assert r.returncode == 0 and r.stdout[:8] == b"\x89PNG\r\n\x1a\n"


# -------------------------------------------------------------------------- pngquant's controls (item 3)


def test_skip_if_larger(tmp_path, capsys):
    tiny = save_png(tmp_path / "tiny.png", Image.new("RGB", (8, 8), (10, 20, 30)))
    big = save_png(tmp_path / "big.png", photo(64, 48))
    code = main(["compress", tiny, big, "-k", "8", "--skip-if-larger", "-o", str(tmp_path / "out")])
    assert code == cli.EXIT_LARGER == 98
    err = capsys.readouterr().err
    assert "tiny.png" in err and "--skip-if-larger" in err and "big.png" not in err
    assert os.listdir(tmp_path / "out") == ["big.gcp"]
    assert main(["compress", tiny, "-k", "8"]) == 0  # without the option it is written


def test_min_psnr_refuses_and_writes_nothing(tmp_path, capsys):
    im = photo(32, 24, seed=7)
    src = save_png(tmp_path / "a.png", im)
    assert main(["compress", src, "-k", "2", "--min-psnr", "40"]) == cli.EXIT_QUALITY == 99
    err = capsys.readouterr().err
    assert re.search(r"a\.png: not written: PSNR [\d.]+ dB at k=2 is below --min-psnr 40", err)
    assert not (tmp_path / "a.gcp").exists()
    # next to --target-psnr: the target cannot be reached, the floor can: k=256 written with a warning
    assert main(["compress", src, "--target-psnr", "99", "--min-psnr", "25", "-v"]) == 0
    assert "warning: target PSNR 99 dB not reached" in capsys.readouterr().err
    assert (tmp_path / "a.gcp").exists()
    os.remove(tmp_path / "a.gcp")
    # even k=256 misses the floor: refused
    assert main(["compress", src, "--target-psnr", "99", "--min-psnr", "98"]) == 99
    assert not (tmp_path / "a.gcp").exists()
    # alone and met: written, exit 0
    assert main(["compress", src, "-k", "64", "--min-psnr", "20"]) == 0


def test_min_psnr_with_a_batch_and_a_failure(tmp_path):
    a = save_png(tmp_path / "a.png", photo(seed=1))
    flat = save_png(tmp_path / "flat.png", Image.new("RGB", (9, 9), "white"))
    (tmp_path / "bad.png").write_bytes(b"junk")
    out = tmp_path / "out"
    assert main(["compress", a, flat, "-k", "2", "--min-psnr", "30", "-o", str(out)]) == 99
    assert os.listdir(out) == ["flat.gcp"]  # lossless: meets any floor
    assert main(["compress", a, str(tmp_path / "bad.png"), "-k", "2", "--min-psnr", "30", "-o",
                 str(tmp_path / "o2")]) == 1  # a failure outranks a refusal


def test_fixed_color_with_alpha(tmp_path):
    src = save_png(tmp_path / "a.png", _rgba_photo())
    assert main(["compress", src, "-k", "6", "--fixed-color", "ff000080,00ff00"]) == 0
    _, pal = _indexed(tmp_path / "a.gcp")
    rows = {tuple(int(v) for v in c) for c in pal}
    assert (255, 0, 0, 128) in rows and (0, 255, 0, 255) in rows


# -------------------------------------------------------------------------- decompress (item 4)


def _meta_source(tmp_path, im=None):
    from PIL import ImageCms, PngImagePlugin

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta xmlns:x='adobe:ns:meta/'>gcp-test</x:xmpmeta>")
    src = str(tmp_path / "src.png")
    (im or photo()).save(src, icc_profile=icc, exif=exif, pnginfo=info)
    gcp = str(tmp_path / "m.gcp")
    with Image.open(src) as opened:
        opened.save(gcp, "GCP", k=8, exif=exif, xmp=info.chunks and opened.info.get("XML:com.adobe.xmp"),
                    comment="a comment")
    return gcp, icc


def test_decompress_keeps_metadata_the_format_holds(tmp_path):
    gcp, icc = _meta_source(tmp_path)

    def xmp_of(im):
        x = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp") or b""
        if hasattr(im, "tag_v2") and 700 in im.tag_v2:
            x = im.tag_v2[700]
        return x.encode() if isinstance(x, str) else bytes(x)

    for ext, holds in {"png": "iexc", "jpg": "iexc", "webp": "iex", "tif": "iexc", "gif": "c"}.items():
        out = tmp_path / f"d.{ext}"
        assert main(["decompress", gcp, "-o", str(out)]) == 0, ext
        with Image.open(out) as im:
            if "i" in holds:
                assert im.info.get("icc_profile") == icc, ext
            if "e" in holds:
                assert im.getexif().get(0x0112) == 6, ext
            if "x" in holds:
                assert b"gcp-test" in xmp_of(im), ext
            if "c" in holds:
                c = im.info.get("comment") or im.info.get("Comment") or \
                    (im.tag_v2.get(270) if hasattr(im, "tag_v2") else None)
                assert (c.decode() if isinstance(c, bytes) else c) == "a comment", ext


@pytest.mark.parametrize("fmt", ["png", "gif", "webp", "tiff", "bmp", "jpeg"])
def test_decompress_alpha_in_every_format_without_warnings(tmp_path, fmt):
    import warnings

    from pillow_gcp import adapter

    arr = np.asarray(_rgba_photo()).copy()
    arr[8:12, :, 3] = 100  # semi-transparent rows too
    src = save_png(tmp_path / "a.png", Image.fromarray(arr, "RGBA"))
    assert main(["compress", src, "-k", "10"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["decompress", str(tmp_path / "a.gcp"), "--format", fmt, "-o", str(tmp_path / "d") + "/"]) == 0
    (name,) = os.listdir(tmp_path / "d")
    idx, pal = _indexed(tmp_path / "a.gcp")
    expect = np.asarray(adapter.to_image(idx, pal).convert("RGBA"))
    with Image.open(tmp_path / "d" / name) as im:
        got = np.asarray(im.convert("RGBA"))
    if fmt in ("png", "webp", "tiff"):
        np.testing.assert_array_equal(got, expect)  # everything, alpha included
    elif fmt == "gif":  # one transparent index: alpha < 128 -> transparent, else opaque
        np.testing.assert_array_equal(got[..., 3], np.where(expect[..., 3] < 128, 0, 255))
        opaque = expect[..., 3] >= 128
        np.testing.assert_array_equal(got[opaque][:, :3], expect[opaque][:, :3])
    elif fmt == "bmp":  # BMP readers drop alpha: flattened over white, exactly
        white = Image.new("RGBA", expect.shape[1::-1], (255, 255, 255, 255))
        flat = np.asarray(Image.alpha_composite(white, Image.fromarray(expect, "RGBA")).convert("RGBA"))
        np.testing.assert_array_equal(got, flat)
    else:  # JPEG: flattened over white (transparent band near white)
        assert got[:8].mean() > 230


def test_decompress_refuses_other_inputs_unless_any_input(tmp_path, capsys):
    src = save_png(tmp_path / "a.png")
    assert main(["decompress", src, "-o", str(tmp_path / "b.bmp")]) == 1
    err = capsys.readouterr().err
    assert "a.png: not a .gcp file (it is PNG)" in err and "--any-input" in err
    assert not (tmp_path / "b.bmp").exists()
    assert main(["decompress", src, "-o", str(tmp_path / "b.bmp"), "--any-input"]) == 0
    with Image.open(tmp_path / "b.bmp") as b, Image.open(src) as a:
        np.testing.assert_array_equal(rgb(a), rgb(b))


# -------------------------------------------------------------------------- errors and small things (item 5)


def _one_line_naming(err: str, name: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gcp: {name}: ") or lines[0].startswith("gcp: error: "), err
    for bad in ("Traceback", " object at 0x", ".tmp", "Errno", "internal error"):
        assert bad not in err, err


@pytest.mark.parametrize("case", ["missing", "junk", "empty", "nofolder", "truncated", "notgcp", "info-junk",
                                  "against-junk", "against-png", "against-size"])
def test_every_error_is_one_line_naming_its_file(tmp_path, capsys, case):
    a = save_png(tmp_path / "a.png")
    assert main(["compress", a, "-k", "4"]) == 0
    gcp = str(tmp_path / "a.gcp")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "empty.png").write_bytes(b"")
    data = open(gcp, "rb").read()
    (tmp_path / "cut.gcp").write_bytes(data[: len(data) // 2])
    save_png(tmp_path / "small.png", photo(8, 8))
    assert main(["compress", str(tmp_path / "small.png"), "-k", "4", "-o", str(tmp_path / "small.gcp")]) == 0
    capsys.readouterr()
    j = lambda n: str(tmp_path / n)  # noqa: E731
    argv, blamed = {
        "missing": (["compress", j("nope.png")], j("nope.png")),
        "junk": (["compress", j("junk.png")], j("junk.png")),
        "empty": (["compress", j("empty.png")], j("empty.png")),
        "nofolder": (["compress", a, "-o", j("nodir/x.gcp")], a),
        "truncated": (["decompress", j("cut.gcp"), "-o", j("c.png")], j("cut.gcp")),
        "notgcp": (["decompress", a, "-o", j("c.png")], a),
        "info-junk": (["info", j("junk.png")], j("junk.png")),
        "against-junk": (["compare", a, "--against", j("junk.png"), "-o", j("r.png")], j("junk.png")),
        "against-png": (["compare", a, "--against", j("small.png"), "-o", j("r.png")], j("small.png")),
        "against-size": (["compare", a, "--against", j("small.gcp"), "-o", j("r.png")], j("small.gcp")),
    }[case]
    assert main(argv) == 1
    err = capsys.readouterr().err
    _one_line_naming(err, blamed)
    if case == "nofolder":
        assert "nodir does not exist" in err
        assert main(["compress", a, "-o", a + "/x.gcp"]) == 1
        assert "a.png is not a folder" in capsys.readouterr().err
    if case == "against-png":
        assert "not a .gcp file" in err
    assert not (tmp_path / "r.png").exists() and not (tmp_path / "c.png").exists()


def test_empty_stdin_is_a_clear_error():
    r = run(["compress", "-"], stdin=b"")
    assert r.returncode == 1 and r.stdout == b""
    assert r.stderr.decode().strip() == "gcp: <stdin>: empty input (nothing on stdin)"


@pytest.mark.parametrize("argv", [["info", "{g}", "{g}", "{g}"], ["decompress", "{g}", "-o", "-"],
                                  ["compress", "{p}", "-o", "-"]])
def test_closed_stdout_ends_quietly(tmp_path, argv):
    src = save_png(tmp_path / "a.png", photo(300, 200))
    assert main(["compress", src]) == 0
    argv = [x.format(g=str(tmp_path / "a.gcp"), p=src) for x in argv]
    p = subprocess.Popen([sys.executable, "-m", "pillow_gcp", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env())
    p.stdout.close()  # like `| head -0`
    err = p.stderr.read()
    p.wait(timeout=120)
    assert err == b""


def test_info_json_is_always_a_list(tmp_path, capsys):
    src = save_png(tmp_path / "a.png")
    assert main(["info", "--json", src]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert isinstance(recs, list) and len(recs) == 1 and recs[0]["format"] == "PNG"


def test_verbose_reports_real_k_and_lossless(tmp_path, capsys):
    two = Image.new("RGB", (10, 6), "white")
    two.paste((200, 0, 0), (0, 0, 5, 6))
    src = save_png(tmp_path / "two.png", two)
    assert main(["compress", src, "-k", "256", "-v"]) == 0
    err = capsys.readouterr().err
    assert "k=2 " in err and "lossless" in err and "inf" not in err


def test_target_de_is_minimal_and_prints_its_unit(tmp_path, capsys):
    from pillow_gcp import adapter, metrics

    im = photo(32, 24, seed=6)
    src = save_png(tmp_path / "a.png", im)
    assert main(["compress", src, "--target-de", "3", "-v"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"deltaE [\d.]+ \(OKLab x100\)", err)
    k = int(err.split("k=")[1].split()[0])
    px = adapter.pixels(im)

    def de(k):
        return metrics.mean_delta_e(px, metrics.expand(*adapter.prepare(im, k=k)))

    assert de(k) <= 3.0
    if k // 2 >= 1:
        assert de(k // 2) > 3.0


def test_target_search_writes_the_bytes_of_image_save_at_the_chosen_k(tmp_path, capsys):
    im = photo(32, 24, seed=5)
    src = save_png(tmp_path / "a.png", im)
    assert main(["compress", src, "--target-psnr", "30", "--algo", "kmedoids", "-v"]) == 0
    k = int(capsys.readouterr().err.split("k=")[1].split()[0])
    ref = io.BytesIO()
    Image.open(src).save(ref, "GCP", k=k, algo="kmedoids")
    assert (tmp_path / "a.gcp").read_bytes() == ref.getvalue()


def test_jobs_zero_uses_usable_cpus_and_windows_cap(monkeypatch):
    assert cli._jobs_type("0") >= 1
    monkeypatch.setattr(cli.sys, "platform", "win32")
    assert cli._workers(200, 500) == 61
    monkeypatch.setattr(cli.sys, "platform", "linux")
    assert cli._workers(200, 500) == 200
    assert cli._workers(8, 3) == 3


def test_help_documents_every_exit_status(capsys):
    """gcp --help and gcp compress --help list every status; the other commands those they can return."""
    codes = {"compress": "0 1 2 98 99 130", "compare": "0 1 2 99 130", "decompress": "0 1 2 130", "info": "0 1 2 130"}
    for argv, own in [(["--help"], codes["compress"])] + [([c, "--help"], v) for c, v in codes.items()]:
        assert main(argv) == 0
        text = capsys.readouterr().out
        for code in ("0", "1", "2", "98", "99", "130"):
            assert (("\n  " + code + " ") in text) == (code in own.split()), (argv, code)
    doc = open(os.path.join(ROOT, "docs", "cli.md"), encoding="utf-8").read()
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 98 |", "| 99 |", "| 130 |"):
        assert code in doc


def test_bytes_functions_are_the_cli(tmp_path):
    """convert.compress_bytes / decompress_bytes (what a Dask recipe calls) give the CLI's bytes."""
    import pickle

    from pillow_gcp import convert

    src = save_png(tmp_path / "a.png", _rgba_photo())
    data = open(src, "rb").read()
    for fmt in ("gcp", "png", "gif", "webp"):
        assert main(["compress", src, "-k", "9", "--seed", "2", "-o", str(tmp_path / f"c.{fmt}")]) == 0
        assert convert.compress_bytes(data, format=fmt, k=9, seed=2) == (tmp_path / f"c.{fmt}").read_bytes()
    assert main(["decompress", str(tmp_path / "c.gcp"), "-o", str(tmp_path / "d.tif")]) == 0
    gcp = (tmp_path / "c.gcp").read_bytes()
    assert convert.decompress_bytes(gcp, format="TIFF") == (tmp_path / "d.tif").read_bytes()
    for fn in (convert.compress_bytes, convert.decompress_bytes):
        assert pickle.loads(pickle.dumps(fn)) is fn
    with pytest.raises(convert.NotGCPError, match="not a .gcp file"):
        convert.decompress_bytes(data)
    with pytest.raises(ValueError, match="format"):
        convert.compress_bytes(data, format="JPEG")
    with pytest.raises(ValueError, match="empty"):
        convert.compress_bytes(b"")


def test_format_pillow_cannot_write_is_a_usage_error(tmp_path, monkeypatch, capsys):
    from PIL import Image

    src = save_png(tmp_path / "a.png")
    Image.init()
    monkeypatch.delitem(Image.SAVE, "WEBP")
    assert main(["compress", src, "-o", str(tmp_path / "a.webp")]) == 2
    assert "cannot write WEBP" in capsys.readouterr().err
    assert not (tmp_path / "a.webp").exists()


# -------------------------------------------------------------------------- start-up


def test_import_loads_pillow_only_and_registers(tmp_path):
    """``import pillow_gcp`` registers GCP without numpy; the public names load on first use."""
    src = save_png(tmp_path / "a.png")
    code = ("import sys; import pillow_gcp; from PIL import Image; "
            "assert 'numpy' not in sys.modules and 'pillow_gcp.quantizers' not in sys.modules; "
            "assert Image.SAVE['GCP'] and Image.registered_extensions()['.gcp'] == 'GCP'; "
            f"Image.open({src!r}).save({str(tmp_path / 'a.gcp')!r}, k=5); "
            f"im = Image.open({str(tmp_path / 'a.gcp')!r}); im.load(); assert im.format == 'GCP'; "
            "from pillow_gcp import quantize, set_decode_threads; "
            "assert quantize is pillow_gcp.quantize is pillow_gcp.quantizers.quantize; "
            "assert set_decode_threads is pillow_gcp.set_threads is pillow_gcp.payload.ctx.set_threads; "
            "assert pillow_gcp.register_quantizer and pillow_gcp.quantize_many and pillow_gcp.adapter.pixels; "
            "assert set(pillow_gcp.__all__) <= set(dir(pillow_gcp)); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_env(), timeout=120, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pillow_gcp.nope  # noqa: B018


def test_parsing_a_compress_command_line_loads_no_numpy():
    """argparse formats the usage line before parsing an intermixed command line; the choice options
    name their value by a word there, so numpy loads only after the input's read has started."""
    code = ("import sys; from pillow_gcp import cli; p, cmds = cli._parsers('compress'); "
            "a = cmds['compress'].parse_intermixed_args(['a.png', '-k', '16', '-o', 'b.gcp']); "
            "assert a.k == 16 and 'numpy' not in sys.modules, sorted(sys.modules); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_env(), timeout=120, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_plugin_signature_is_the_formats():
    from pillow_gcp import format as gcp_format
    from pillow_gcp import plugin

    assert plugin._MAGIC == gcp_format.MAGIC
    for prefix in (gcp_format.MAGIC + b"\0" * 8, gcp_format.MAGIC[:7], b"\x89PNG\r\n\x1a\n", b""):
        assert plugin._accept(prefix) == gcp_format.accept(prefix)


@pytest.mark.parametrize("argv", [
    ["compress", "a.png", "-k", "8", "--algo", "kmedoids", "--metric", "manhattan", "--space", "oklab", "-o", "x/"],
    ["compress", "a.png", "b.png", "--fixed-color", "ff00ff,00000000", "--ext=-fs8.png", "-j", "2", "--dither"],
    ["decompress", "a.gcp", "--format", "webp", "-f"],
    ["info", "--json", "a.gcp", "b.gcp"],
    ["compare", "a.png", "--target-psnr", "30", "--amplify", "4"],
])
def test_parser_of_one_command_parses_as_the_full_parser(argv):
    """main builds only the given command's options: the same namespace as the full parser's."""
    full = vars(cli.build_parser().parse_args(argv))
    one = vars(cli.build_parser(argv[0]).parse_args(argv))
    assert full.pop("func") is one.pop("func")
    assert full == one


def test_help_and_choice_errors_list_the_registered_choices(capsys):
    """--algo/--metric/--space look their choices up lazily; help and errors still show them."""
    from pillow_gcp import quantizers

    assert main(["compress", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse's line breaks
    assert "--algo ALGO clustering algorithm, one of " + ", ".join(quantizers.registered_quantizers()) + ":" in out
    assert "--metric METRIC" in out and "palette: " + ", ".join(quantizers.METRICS) + " (default" in out
    assert "--space SPACE colour space the clustering works in, one of rgb, oklab:" in out
    assert main(["compress", "a.png", "--space", "lab"]) == 2
    assert "invalid choice: 'lab' (choose from 'rgb', 'oklab')" in capsys.readouterr().err


def test_single_input_read_on_a_helper_thread_joined(tmp_path, monkeypatch, capsys):
    """One regular-file input is read by a helper thread while options are checked; the thread
    is gone when main returns (also after a usage error), and read errors are reported as before."""
    import threading

    src = save_png(tmp_path / "a.png")
    started = []
    real = cli._Prefetch.__init__

    def spy(self, path):
        started.append(path)
        real(self, path)

    monkeypatch.setattr(cli._Prefetch, "__init__", spy)
    before = threading.active_count()
    assert main(["compress", src, "-k", "5", "-o", str(tmp_path / "a.gcp")]) == 0
    assert started == [src] and threading.active_count() == before
    im = Image.open(src)
    im.save(tmp_path / "ref.gcp", k=5)
    assert (tmp_path / "a.gcp").read_bytes() == (tmp_path / "ref.gcp").read_bytes()
    assert main(["compress", src, "-k", "999"]) == 2  # usage error: the thread was still joined
    assert threading.active_count() == before
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    assert main(["compress", str(tmp_path / "empty.png")]) == 1
    assert main(["compress", str(tmp_path / "junk.png")]) == 1
    err = capsys.readouterr().err
    assert "empty.png: empty file" in err and "junk.png: cannot read: not an image file Pillow can read" in err
    assert threading.active_count() == before
    # several inputs, stdin, a FIFO: read in turn as before (a FIFO read early would be consumed)
    assert cli._prefetch([src, src], False) is None and cli._prefetch(["-"], False) is None
    assert cli._prefetch([src], True) is None and cli._prefetch([str(tmp_path / "nope.png")], False) is None
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        assert cli._prefetch([str(tmp_path / "fifo")], False) is None


def test_freeze_only_when_run_as_the_program(tmp_path, monkeypatch):
    """main(argv) leaves the garbage collector alone; run(), the console scripts' and python -m
    pillow_gcp's entry, freezes it at the end (the process ends next)."""
    import gc

    src = save_png(tmp_path / "a.png")
    frozen = gc.get_freeze_count()
    assert main(["compress", src, "-k", "3"]) == 0
    assert gc.get_freeze_count() == frozen
    monkeypatch.setattr(sys, "argv", ["gcp", "compress", src, "-k", "3", "-o", str(tmp_path / "b.gcp")])
    try:
        assert cli.run() == 0
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
    assert (tmp_path / "b.gcp").read_bytes() == pillow_gcp.convert.compress_bytes(open(src, "rb").read(), k=3)
    with open(os.path.join(os.path.dirname(cli.__file__), "__main__.py")) as f:
        assert "sys.exit(run())" in f.read()


def test_program_exit_status_and_output_with_freeze(tmp_path):
    """python -m pillow_gcp (frozen at the end): exit statuses, stdout and files as ever."""
    src = save_png(tmp_path / "a.png")
    r = run(["compress", src, "-k", "4", "-o", "-"])
    assert r.returncode == 0
    assert r.stdout == pillow_gcp.convert.compress_bytes(open(src, "rb").read(), k=4)
    assert run(["compress", src, "-k", "4", "-o", str(tmp_path / "b.gcp")]).returncode == 0
    assert (tmp_path / "b.gcp").read_bytes() == r.stdout
    assert run(["compress", src, "-k", "4", "-o", str(tmp_path / "b.gcp")]).returncode == 1  # exists
    assert run(["compress", src, "-k", "0"]).returncode == 2
    r = run(["info", "--json", str(tmp_path / "b.gcp")])
    assert r.returncode == 0 and json.loads(r.stdout)[0]["format"] == "GCP"


@pytest.mark.parametrize("columns", [None, "", "0", "-3", "abc", "57", "200"])
def test_help_width_is_shutils(columns, monkeypatch):
    """The parser's width (found without importing shutil) is argparse's usual one."""
    import shutil

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert cli._columns() == shutil.get_terminal_size().columns
    assert cli._Formatter("gcp")._width == argparse_formatter_width()


def argparse_formatter_width() -> int:
    import argparse

    return argparse.RawDescriptionHelpFormatter("gcp")._width


def test_gcp_save_by_name_is_image_save(tmp_path, monkeypatch):
    """convert._save_gcp lets Image.save take the format from a .gcp name (no Image.preinit): the
    bytes of im.save(f, "GCP", ...); a process compressing a PNG never loads the JPEG/GIF/BMP plugins."""
    from pillow_gcp import convert

    im = _rgba_photo()
    for kw in ({"k": 7}, {"k": 3, "algo": "kmedoids", "compress_level": 1}, {"comment": "hi", "k": 3}):
        buf = io.BytesIO()
        im.save(buf, "GCP", **kw)
        assert convert._save_gcp(im, **kw) == buf.getvalue()
    monkeypatch.setitem(Image.EXTENSION, ".gcp", "PNG")  # .gcp names another format: given explicitly
    assert convert._save_gcp(im, k=7)[:8] == b"\x89GCP\r\n\x1a\n"
    src = save_png(tmp_path / "a.png")
    code = ("import sys; from pillow_gcp.cli import main; "
            f"assert main(['compress', {src!r}, '-k', '4']) == 0; "
            "print(sorted(m for m in ('PIL.JpegImagePlugin', 'PIL.GifImagePlugin', 'PIL.BmpImagePlugin') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_env(), timeout=120, text=True)
    # Pillow imports only the plugin of a name's extension since it has _import_plugin_for_extension; before,
    # every save runs Image.preinit (the saving applies only there)
    loaded = "[]" if hasattr(Image, "_import_plugin_for_extension") else \
        "['PIL.BmpImagePlugin', 'PIL.GifImagePlugin', 'PIL.JpegImagePlugin']"
    assert r.returncode == 0 and r.stdout.strip() == loaded, r.stderr


def test_decompress_refuses_stub_formats_up_front(tmp_path, capsys):
    """HDF5, WMF, BUFR, GRIB: Pillow registers a writer that needs an application's handler; without
    one they are a usage error (2) and not listed, rather than a failure after decoding (1)."""
    from pillow_gcp.convert import writable

    src = save_png(tmp_path / "a.png")
    gcp = str(tmp_path / "a.gcp")
    assert main(["compress", src, "-k", "4", "-o", gcp]) == 0
    assert not any(writable(f) for f in ("HDF5", "WMF", "BUFR", "GRIB")) and writable("PNG")
    capsys.readouterr()
    assert main(["decompress", gcp, "--format", "hdf5", "-o", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert "not a format Pillow writes" in err and "hdf5" not in err.split("choose from:")[1]
    assert not (tmp_path / "x.h5").exists()


def test_compare_output_must_be_png(tmp_path, capsys):
    src = save_png(tmp_path / "a.png")
    for name in ("c.gcp", "c.jpg"):
        assert main(["compare", src, "-k", "4", "-o", str(tmp_path / name)]) == 2
        assert not (tmp_path / name).exists()
    assert "give a name ending in .png" in capsys.readouterr().err
    assert main(["compare", src, "-k", "4"]) == 0
    assert (tmp_path / "a.compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_options_between_inputs(tmp_path, capsys):
    """Options may come before, between or after the inputs, as with most tools (parse_intermixed_args)."""
    a = save_png(tmp_path / "a.png")
    b = save_png(tmp_path / "b.png", Image.new("RGB", (9, 7), (200, 10, 10)))
    out = tmp_path / "out"
    assert main(["compress", a, "-k", "4", b, "-o", str(out) + os.sep]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.gcp", "b.gcp"]
    capsys.readouterr()
    assert main(["info", str(out / "a.gcp"), "--json", str(out / "b.gcp")]) == 0
    assert [r["file"] for r in json.loads(capsys.readouterr().out)] == [str(out / "a.gcp"), str(out / "b.gcp")]
    assert main(["compress", a, "-k"]) == 2
    assert "usage: gcp compress" in capsys.readouterr().err  # the command's own usage, not the top level's


@pytest.mark.parametrize("option, message", [(["-k", "0"], "-k/--colors: must be an integer in 1..256, got 0"),
                                             (["--seed", "-1"], "--seed: must be an integer >= 0, got -1"),
                                             (["--level", "10"], "--level: must be an integer in 0..9, got 10")])
def test_range_errors_speak_the_command_line(tmp_path, capsys, option, message):
    """Out-of-range numbers are usage errors in the command line's terms (no Python 'None')."""
    src = save_png(tmp_path / "a.png")
    assert main(["compress", src, *option]) == 2
    err = capsys.readouterr().err
    assert message in err and "None" not in err


def test_colour_options_take_six_or_eight_hex_digits(tmp_path, capsys):
    src = save_png(tmp_path / "a.png")
    assert main(["compress", src, "-k", "4", "--fixed-color", "#ff0000", "-o", str(tmp_path / "a.gcp")]) == 0
    for short in ("f00", "ff00"):  # CSS short forms are refused: ff00 would be a transparent yellow
        assert main(["compress", src, "-k", "4", "--fixed-color", short, "-o", str(tmp_path / "b.gcp")]) == 2
    assert "expected hex RRGGBB or RRGGBBAA" in capsys.readouterr().err


def test_pillow_gcp_script_names_itself(tmp_path, monkeypatch, capsys):
    """Run as pillow-gcp (the name to use where Debian's gcp comes first on the PATH), usage lines and
    messages say pillow-gcp; main() called from Python keeps gcp."""
    import gc

    monkeypatch.setattr(cli, "_PROG", "gcp")
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/pillow-gcp", "compress", str(tmp_path / "nope.png")])
    try:
        assert cli.run() == 1
    finally:
        gc.unfreeze()
    assert capsys.readouterr().err.startswith("pillow-gcp: ")
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/pillow-gcp", "--version"])
    try:
        assert cli.run() == 0
    finally:
        gc.unfreeze()
    assert capsys.readouterr().out.startswith("pillow-gcp ")


def test_opaque_palette_on_transparent_image_warns(tmp_path, capsys):
    """--palette without a transparent entry on an image with transparent pixels: written (exit 0), with a
    warning that they became opaque; none when the palette has one or the image is opaque."""
    from pillow_gcp import convert

    im = Image.new("RGBA", (6, 5), (255, 0, 0, 255))
    im.putpixel((0, 0), (0, 0, 0, 0))
    src = save_png(tmp_path / "ra.png", im)
    assert main(["compress", src, "--palette", "ff0000,00ff00", "-o", str(tmp_path / "a.gcp")]) == 0
    assert "no transparent entry" in capsys.readouterr().err
    assert main(["compress", src, "--palette", "ff0000,00ff0000", "-o", str(tmp_path / "b.gcp")]) == 0
    p = Image.new("P", (6, 5), 1)
    p.putpalette(bytes([255, 0, 0, 0, 0, 255, 0, 255]), "RGBA")  # entry 0 transparent, in the palette itself
    p.putpixel((0, 0), 0)
    assert "no transparent entry" in (convert.compress_image(p, palette=[(255, 0, 0), (0, 255, 0)]).warning or "")
    opaque = save_png(tmp_path / "o.png", Image.new("RGB", (6, 5), (9, 9, 9)))
    assert main(["compress", opaque, "--palette", "ff0000,00ff00", "-o", str(tmp_path / "c.gcp")]) == 0
    assert "no transparent entry" not in capsys.readouterr().err


def test_program_runs_blas_on_one_thread_and_puts_the_environment_back(tmp_path, monkeypatch):
    """run() sets OPENBLAS_NUM_THREADS=1 for the command (numpy not imported yet, no BLAS thread count set)
    and removes it at the end; main() and a process that imported numpy are left alone."""
    code = (
        "import os, sys\n"
        "from pillow_gcp import cli\n"
        "seen = []\n"
        "cli.main = lambda argv=None: seen.append((os.environ.get('OPENBLAS_NUM_THREADS'),\n"
        "                                          'numpy' in sys.modules)) or 0\n"
        "cli.run()\n"
        "print(seen, os.environ.get('OPENBLAS_NUM_THREADS'))\n"
    )
    env = {k: v for k, v in _env().items() if k not in cli._BLAS_THREAD_VARS}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=120, text=True)
    assert r.stdout.strip() == "[('1', False)] None", r.stderr
    for var in cli._BLAS_THREAD_VARS:  # the user's own setting wins, and stays
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, env={**env, var: "2"}, timeout=120,
                           text=True)
        mine = "'2'" if var == "OPENBLAS_NUM_THREADS" else "None"
        assert r.stdout.strip() == f"[({mine}, False)] {mine.strip(chr(39))}", (var, r.stderr)
    before = dict(os.environ)
    assert "numpy" in sys.modules
    cli._one_blas_thread()()
    assert dict(os.environ) == before


def test_program_writes_the_bytes_of_the_library_at_k_256(tmp_path):
    """The command (one BLAS thread, searches split over threads) and compress_bytes in this process write the
    same file for an image of 16384 colours at k = 256 (searches of more than 2^21 multiply-adds)."""
    rng = np.random.default_rng(4)
    src = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(src)
    r = run(["compress", str(src), "-k", "256", "-o", "-"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == pillow_gcp.convert.compress_bytes(src.read_bytes(), k=256)


def test_double_dash_ends_the_options_also_for_names_starting_with_a_dash(tmp_path, monkeypatch):
    # argparse's intermixed parsing drops such names after "--" ("the following arguments are required")
    monkeypatch.chdir(tmp_path)
    save_png(tmp_path / "-a.png")
    save_png(tmp_path / "b.png")
    assert main(["compress", "-k", "4", "--", "-a.png"]) == 0
    want = pillow_gcp.convert.compress_bytes((tmp_path / "-a.png").read_bytes(), k=4)
    assert (tmp_path / "-a.gcp").read_bytes() == want
    os.mkdir(tmp_path / "out")
    assert main(["compress", "-k", "4", "-o", "out", "--", "-a.png", "b.png", "-k"]) == 1  # "-k" is a file name here
    assert sorted(os.listdir(tmp_path / "out")) == ["-a.gcp", "b.gcp"]
    assert main(["decompress", "-f", "--output=-x.png", "--", "-a.gcp"]) == 0
    assert Image.open(tmp_path / "-x.png").size == photo().size
    assert main(["info", "--", "-a.gcp"]) == 0
    assert main(["info", "--", "-a.gcp", "--"]) != 0  # a second "--" is a file name, which does not exist


@pytest.mark.parametrize("shared", [False, True])
def test_gif_quality_target_is_measured_on_the_gif_as_written(tmp_path, capsys, shared):
    # GIF keeps one transparent index: semi-transparent pixels become opaque or clear, so a target measured on
    # the palette image (37 dB here) was met on paper while the GIF written had 16 dB, without a warning
    y, x = np.mgrid[0:64, 0:64]
    rgba = Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2, (x * 4) % 256], -1).astype(np.uint8), "RGBA")
    if shared:
        c = pillow_gcp.convert.compress_shared([rgba], format="GIF", target_psnr=30, measure=True)[0]
    else:
        c = pillow_gcp.convert.compress_image(rgba, format="GIF", target_psnr=30, measure=True)
    assert c.quality == pytest.approx(c.psnr, abs=1e-6)
    assert c.psnr < 30 and c.k == 256 and "not reached" in c.warning
    # an image GIF can hold: the target is met on the written file, at the k the .gcp search finds
    opaque = rgba.convert("RGB")
    g = pillow_gcp.convert.compress_image(opaque, format="GIF", target_psnr=35, measure=True)
    p = pillow_gcp.convert.compress_image(opaque, format="GCP", target_psnr=35, measure=True)
    assert g.k == p.k and g.psnr >= 35 and g.warning is None
    src = save_png(tmp_path / "a.png", rgba)
    assert main(["compress", src, "--target-psnr", "30", "-o", str(tmp_path / "a.gif")]) == 0
    assert "target PSNR 30 dB not reached" in capsys.readouterr().err


def test_program_prints_python_warnings_as_its_own_lines(tmp_path):
    # a header between Pillow's warning and error limits (10000 x 10000): DecompressionBombWarning as a
    # "gcp: warning:" line, not with the path and source line of Pillow's code
    import struct
    import zlib

    from pillow_gcp import format as F

    small = F.encode(np.zeros((2, 2), np.uint8), np.zeros((1, 3), np.uint8))
    head = struct.pack("<BBHII", 3, 3, 1, 10000, 10000)
    big = tmp_path / "big.gcp"
    big.write_bytes(small[:8] + struct.pack("<I4s", 12, b"HEAD") + head + struct.pack("<I", zlib.crc32(b"HEAD" + head))
                    + small[32:])
    r = run(["info", str(big)])
    err = r.stderr.decode()
    assert r.returncode == 1
    assert re.search(r"^gcp: warning: Image size \(100000000 pixels\) exceeds limit", err, re.M), err
    assert "warnings.warn" not in err and "Image.py" not in err
    import warnings

    assert warnings.showwarning is not cli._show_warning  # main() in this process left it alone


def test_verbose_line_says_when_lossless_is_of_the_8_bit_image(tmp_path, capsys):
    deep = tmp_path / "deep.png"
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 13 % 65536).astype(np.uint16)).save(deep)
    assert Image.open(deep).mode == "I;16"
    flat = save_png(tmp_path / "flat.png", Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 200).astype(np.uint8)))
    assert main(["compress", str(deep), flat, "-k", "256", "-v"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"deep\.png -> .* lossless \(of the image reduced to 8 bits per sample\)", err), err
    assert re.search(r"flat\.png -> .* lossless$", err, re.M), err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to one process")
def test_interrupting_the_parent_alone_starts_no_further_file(tmp_path):
    # kill -INT of gcp's own process (timeout -s INT does this): the -j workers finish the files they have
    # begun (whole files) and no queued file starts; before, every queued file was still compressed
    import signal
    import time

    rng = np.random.default_rng(8)
    names = []
    for i in range(12):
        p = tmp_path / f"n{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (384, 384, 3), dtype=np.uint8)).save(p)
        names.append(str(p))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pillow_gcp", "compress", "-j", "2", "-k", "256", *names,
                             "-o", str(out)], stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + 60
    while not list(out.glob("*.gcp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    written = sorted(p.name for p in out.iterdir())
    assert all(n.endswith(".gcp") for n in written), written  # no temporary file left
    assert 1 <= len(written) <= 4, written
    for n in written:
        Image.open(out / n).load()  # each one whole


def _dies_on(src: str, dst: str, die: bool) -> "cli.Result":
    if die:
        os._exit(3)  # a worker killed (out of memory, a signal): the pool is broken
    return cli.Result(src, dst)


@pytest.mark.skipif(sys.platform == "win32", reason="fork start method")
def test_a_dead_worker_fails_the_remaining_files_without_a_traceback():
    import multiprocessing

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the task function lives in this test module")
    tasks = [(f"t{i}", f"t{i}.gcp", i == 1) for i in range(6)]
    results = cli._run_batch(_dies_on, tasks, 2)  # before, submitting to the broken pool raised out of here
    assert [r.src for r in results] == [t[0] for t in tasks]
    assert results[1].status == "failed" and "worker failed" in results[1].message
    # the others ran before the pool broke, or are reported as not done
    assert all(r.ok or (r.status == "failed" and "worker failed" in r.message) for r in results)
