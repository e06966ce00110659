"""The Dask recipe (docs/dask.md, pillow_gcp.distributed): a LocalCluster with 2 worker processes
writes the same bytes as ``gcp compress``; fsspec URLs; per-file failures; arguments checked first.

Needs the ``dask`` extra (it is in the ``test`` extra). Outside CI the tests are skipped when dask
is missing; under CI (``CI`` set) a missing dask fails them.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

if os.environ.get("CI"):
    import dask  # noqa: F401
    import distributed  # noqa: F401
    import fsspec  # noqa: F401
else:
    pytest.importorskip("dask.bag")
    pytest.importorskip("distributed")
    pytest.importorskip("fsspec")

import fsspec  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from pillow_gcp.convert import compress_bytes  # noqa: E402
from pillow_gcp.distributed import compress_bag, compress_file, compress_files, list_files, output_path  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _folder(root: Path) -> dict:
    """A small folder of inputs with distinct stems: RGB photo, RGBA, PNG-8 with transparency,
    a grey JPEG with EXIF in a subfolder, a 16-bit TIFF, and a file that is not an image."""
    rng = np.random.default_rng(7)
    (root / "sub").mkdir(parents=True)
    files = {}
    files["photo"] = root / "photo.png"
    files["photo"].write_bytes((FIXTURES / "sample.png").read_bytes())
    y, x = np.mgrid[0:48, 0:64]
    rgba = np.dstack([x * 4, y * 5, (x + y) * 2, np.where(x < 8, 0, 128 + y)]).astype(np.uint8)
    files["alpha"] = root / "alpha.png"
    Image.fromarray(rgba).save(files["alpha"])
    p = Image.fromarray(rgba[..., :3]).quantize(12)
    files["pal"] = root / "sub" / "pal.png"
    p.save(files["pal"], transparency=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90
    grey = Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8))
    files["grey"] = root / "sub" / "grey.jpg"
    grey.save(files["grey"], exif=exif, quality=90)
    files["deep"] = root / "deep.tif"
    Image.fromarray((x * 1000 + y * 7).astype(np.uint16)).save(files["deep"])
    files["broken"] = root / "broken.png"
    files["broken"].write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return files


def _gcp_compress(inputs: list, out_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """``gcp compress`` (as ``python -m pillow_gcp``), each input to out_dir/<stem>.gcp."""
    out_dir.mkdir()
    return subprocess.run([sys.executable, "-m", "pillow_gcp", "compress", *map(str, inputs), "-o",
                           str(out_dir) + os.sep, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster:
        with Client(cluster) as c:
            yield c


@pytest.mark.parametrize("args, params", [((), {}), (("-k", "16", "--algo", "kmedoids", "--strip"),
                                                      {"k": 16, "algo": "kmedoids", "strip": True})])
def test_local_cluster_writes_what_gcp_compress_writes(tmp_path, client, args, params):
    files = _folder(tmp_path / "in")
    ref = _gcp_compress(list(files.values()), tmp_path / "ref", *args)
    assert ref.returncode == 1 and "broken.png" in ref.stderr  # the broken file fails, the others are done

    assert len(client.scheduler_info()["workers"]) == 2
    results = compress_files(str(tmp_path / "in"), str(tmp_path / "out"), **params)
    by_name = {Path(r["src"]).stem: r for r in results}
    assert sorted(by_name) == sorted(files)  # list_files found every image file of the folder, recursively
    assert by_name["broken"]["status"] == "failed" and by_name["broken"]["error"]
    assert not os.path.exists(by_name["broken"]["dst"])
    for stem, src in files.items():
        if stem == "broken":
            continue
        r = by_name[stem]
        assert r["status"] == "done", r
        dst = Path(r["dst"])
        # the folder structure is kept: sub/pal.png -> out/sub/pal.gcp
        assert dst == tmp_path / "out" / src.relative_to(tmp_path / "in").with_suffix(".gcp")
        assert dst.read_bytes() == (tmp_path / "ref" / f"{stem}.gcp").read_bytes(), stem
        assert (r["bytes_in"], r["bytes_out"]) == (src.stat().st_size, dst.stat().st_size)
    with Image.open(tmp_path / "out" / "sub" / "grey.gcp") as im:
        assert (im.getexif().get(0x0112) == 6) is (not params.get("strip"))


def test_outputs_in_other_formats_and_if_exists(tmp_path, client):
    files = _folder(tmp_path / "in")
    srcs = [str(files["photo"]), str(files["alpha"])]
    first = compress_files(srcs, str(tmp_path / "out"), format="PNG", k=8)
    assert [r["status"] for r in first] == ["done", "done"]
    for r in first:
        with Image.open(r["dst"]) as im:
            assert im.format == "PNG" and im.mode == "P" and len(im.getcolors()) <= 8
        assert Path(r["dst"]).read_bytes() == compress_bytes(Path(r["src"]).read_bytes(), format="PNG", k=8)
    again = compress_files(srcs, str(tmp_path / "out"), format="PNG", k=8)
    assert [r["status"] for r in again] == ["failed", "failed"] and "exists" in again[0]["error"]
    assert "if_exists='overwrite'" in again[0]["error"] and "--force" not in again[0]["error"]
    assert [r["status"] for r in compress_files(srcs, str(tmp_path / "out"), format="png", k=8,
                                                if_exists="skip")] == ["skipped", "skipped"]
    os.chmod(first[0]["dst"], 0o600)
    over = compress_files(srcs, str(tmp_path / "out"), format="PNG", k=4, if_exists="overwrite")
    assert [r["status"] for r in over] == ["done", "done"]
    assert os.stat(first[0]["dst"]).st_mode & 0o777 == 0o600  # written as gcp compress --force writes
    with Image.open(first[0]["dst"]) as im:
        assert len(im.getcolors()) <= 4


@pytest.mark.filterwarnings("ignore:Running on a single-machine scheduler:UserWarning")  # the cluster of the tests above
def test_fsspec_urls_memory_filesystem(tmp_path):
    """A non-local fsspec filesystem (memory://; s3://, gs:// ... work the same way with their
    package installed): inputs listed, read and written through fsspec. memory:// lives in one
    process, so this runs on Dask's synchronous scheduler."""
    files = _folder(tmp_path / "in")
    fs = fsspec.filesystem("memory")
    fs.rm("/gcp-test", recursive=True) if fs.exists("/gcp-test") else None
    for stem in ("photo", "pal", "grey"):
        rel = files[stem].relative_to(tmp_path / "in").as_posix()
        fs.pipe_file(f"/gcp-test/in/{rel}", files[stem].read_bytes())
    fs.pipe_file("/gcp-test/in/notes.txt", b"not an image")  # listed folders keep image files only
    srcs = list_files("memory://gcp-test/in")
    assert srcs == ["memory:///gcp-test/in/photo.png", "memory:///gcp-test/in/sub/grey.jpg",
                    "memory:///gcp-test/in/sub/pal.png"]
    results = compress_files("memory://gcp-test/in", "memory://gcp-test/out", scheduler="sync", k=32)
    assert [r["status"] for r in results] == ["done"] * 3
    for stem in ("photo", "pal", "grey"):
        rel = files[stem].relative_to(tmp_path / "in").with_suffix(".gcp").as_posix()
        assert fs.cat_file(f"/gcp-test/out/{rel}") == compress_bytes(files[stem].read_bytes(), k=32)
    # a glob, and the lazy bag
    bag = compress_bag("memory://gcp-test/in/sub/*.png", "memory://gcp-test/out2", k=8)
    assert [r["dst"] for r in bag.compute(scheduler="sync")] == ["memory://gcp-test/out2/pal.gcp"]
    assert fs.exists("/gcp-test/out2/pal.gcp")
    fs.rm("/gcp-test", recursive=True)


@pytest.mark.filterwarnings("ignore:Running on a single-machine scheduler:UserWarning")
def test_compress_file_alone_and_file_urls(tmp_path):
    files = _folder(tmp_path / "in")
    # pathlib paths work as well as str
    done = compress_files([files["photo"]], tmp_path / "paths", scheduler="sync", k=4)
    assert done[0]["status"] == "done" and done[0]["dst"] == str(tmp_path / "paths" / "photo.gcp")
    dst = tmp_path / "one" / "photo.gcp"
    r = compress_file("file://" + str(files["photo"]), "file://" + str(dst), k=16)
    assert r["status"] == "done" and dst.read_bytes() == compress_bytes(files["photo"].read_bytes(), k=16)
    with pytest.raises(OSError):
        compress_file(str(files["broken"]), str(tmp_path / "b.gcp"))
    assert not (tmp_path / "b.gcp").exists()
    assert compress_file(str(files["broken"]), str(tmp_path / "b.gcp"), errors="report")["status"] == "failed"
    missing = compress_file(str(tmp_path / "nope.png"), str(tmp_path / "n.gcp"), errors="report")
    assert missing["status"] == "failed" and "No such file" in missing["error"]


def test_output_path():
    assert output_path("s3://b/in/x/a.png", "s3://b/in", "s3://b/out") == "s3://b/out/x/a.gcp"
    assert output_path("s3://b/in/x/a.png", "s3://b/in/", "s3://b/out/", ".webp") == "s3://b/out/x/a.webp"
    assert output_path("/data/in/a.tif", "/data/in", "/data/out") == os.path.join("/data/out", "a.gcp")
    with pytest.raises(ValueError, match="src_root"):
        output_path("/data/other/a.tif", "/data/in", "/data/out")


def test_arguments_checked_before_any_task(tmp_path):
    files = _folder(tmp_path / "in")
    srcs = [str(files["photo"])]
    with pytest.raises(ValueError, match="metric"):
        compress_bag(srcs, str(tmp_path / "out"), metric="cosine")
    with pytest.raises(TypeError, match="colours"):
        compress_bag(srcs, str(tmp_path / "out"), colours=16)
    with pytest.raises(ValueError, match="format"):
        compress_bag(srcs, str(tmp_path / "out"), format="JPEG")
    with pytest.raises(ValueError, match="if_exists"):
        compress_bag(srcs, str(tmp_path / "out"), if_exists="replace")
    with pytest.raises(ValueError, match="errors"):
        compress_bag(srcs, str(tmp_path / "out"), errors="ignore")
    with pytest.raises(TypeError, match="dst_dir"):
        compress_bag(srcs, 7)
    with pytest.raises(TypeError, match=r"srcs\[0\]"):
        compress_bag([b"a.png"], str(tmp_path / "out"))
    with pytest.raises(TypeError, match="src_root"):
        compress_bag(srcs, str(tmp_path / "out"), src_root=3)
    with pytest.raises(ValueError, match="npartitions"):
        compress_bag(srcs, str(tmp_path / "out"), npartitions=0)
    with pytest.raises(ValueError, match="both be written"):
        compress_bag([str(files["photo"]), str(files["photo"].with_suffix(".jpg"))], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert compress_files([], str(tmp_path / "out")) == []


def test_tasks_pickle():
    """What the workers receive: module-level functions and plain values only."""
    import pickle

    bag = compress_bag([str(FIXTURES / "sample.png")], "/tmp/x", k=4)
    task = pickle.loads(pickle.dumps(bag.dask))
    assert task is not None
    assert pickle.loads(pickle.dumps(compress_bytes)) is compress_bytes
    assert pickle.loads(pickle.dumps(compress_file)) is compress_file
    # and the bytes-in/bytes-out function itself agrees with Image.save
    buf = io.BytesIO()
    with Image.open(FIXTURES / "sample.png") as im:
        im.save(buf, "GCP", k=4)
    assert compress_bytes((FIXTURES / "sample.png").read_bytes(), k=4) == buf.getvalue()


@pytest.mark.filterwarnings("ignore:Running on a single-machine scheduler:UserWarning")  # the cluster of the tests above
def test_missing_source_is_an_error_and_no_match_a_warning(tmp_path):
    """A mistyped folder is FileNotFoundError, not an empty run; a glob or folder without images warns."""
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        list_files(str(tmp_path / "nosuchdir"))
    with pytest.raises(FileNotFoundError):
        compress_files(str(tmp_path / "nosuchdir"), str(tmp_path / "out"), scheduler="sync")
    (tmp_path / "empty").mkdir()
    for where in (str(tmp_path / "empty"), str(tmp_path / "*.png")):
        with pytest.warns(UserWarning, match="no image file found"):
            assert compress_files(where, str(tmp_path / "out"), scheduler="sync") == []
