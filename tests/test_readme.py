"""The README runs as written.

Every fenced block of README.md is run in order, in one temporary folder holding a copy of
fixtures/sample.png, against the installed package (the ``gcp`` command next to this Python):

* ````` ```sh ````` blocks with bash (``set -e``), ````` ```python ````` blocks with this Python;
* ````` ```sh install ````` is the quick start: its virtual-environment line and the test command
  must be lines of .ci/run, word for word (CI runs them); its other commands run here without their
  ``pip install ... &&`` prefix (the package is installed already);
* ````` ```sh skip ````` / ````` ```python skip ````` need what a test cannot have (the network, the
  benchmark corpus, pngquant) and are not run; ````` ```text ````` is output.

Also: every file the README's commands leave is ignored by .gitignore, and every relative link of
README.md and docs/*.md points at a file of the repository.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
LANGS = {"sh", "python", "text"}
TAGS = {"", "skip", "install"}
PIP_PREFIX = re.compile(r"^pip install \S+ && ")


def blocks(path: Path) -> list:
    """(language, tag, code, line number) of each fenced block."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        info = m.group(1).split()
        lang = info[0] if info else ""
        tag = " ".join(info[1:])
        out.append((lang, tag, m.group(2), text.count("\n", 0, m.start()) + 1))
    return out


def _install_block() -> str:
    found = [code for lang, tag, code, _ in blocks(README) if lang == "sh" and tag == "install"]
    assert len(found) == 1, "the README has one quick-start block (```sh install)"
    return found[0]


def _commands(code: str) -> list:
    return [line.strip() for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_block_is_tagged():
    found = blocks(README)
    assert len(found) >= 4
    for lang, tag, _, line in found:
        assert lang in LANGS, f"README.md line {line}: a fenced block needs a language of {sorted(LANGS)}"
        assert tag in TAGS, f"README.md line {line}: unknown tag {tag!r} (known: {sorted(TAGS)})"
    skipped = [line for lang, tag, _, line in found if tag == "skip"]
    assert len(skipped) <= len(found) // 2, "most of the README must run"


def test_quick_start_is_what_ci_runs():
    """The two commands of the first screen: the venv line and the test command are .ci/run's."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    cmds = _commands(_install_block())
    assert cmds[0] == "python3 -m venv .venv && . .venv/bin/activate"
    assert cmds[-1] == 'pip install ".[test]" && python -m pytest'
    for cmd in (cmds[0], cmds[-1]):
        assert cmd in ci, f".ci/run must run the README's {cmd!r} word for word"
    assert len(cmds) == 3 and PIP_PREFIX.match(cmds[1]), "venv, one install-and-run command, the tests"
    # the README's first screen: before the first second-level heading after the quick start
    head = README.read_text(encoding="utf-8").split("\n## Command line", 1)[0]
    assert "SPEC.md" in head and "Only this plugin opens" in head and "![" in head


def _environment(tmp: Path) -> dict:
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    shim = tmp / ".bin"  # a development checkout without the console scripts installed
    for name in ("gcp", "pillow-gcp"):
        if shutil.which(name, path=bindir) is None:
            if os.environ.get("CI"):
                pytest.fail(f"the {name} console script is not installed next to {sys.executable}")
            shim.mkdir(exist_ok=True)
            script = shim / name
            script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pillow_gcp "$@"\n')
            script.chmod(0o755)
    if shim.exists():
        env["PATH"] = str(shim) + os.pathsep + env["PATH"]
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    return env


def _run(kind: str, code: str, cwd: Path, env: dict, line: int) -> None:
    if kind == "sh":
        cmd = ["bash", "-e", "-o", "pipefail", "-c", code]
    else:
        cmd = [sys.executable, "-c", code]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       timeout=600)
    assert r.returncode == 0, (f"README.md line {line} ({kind} block) exited {r.returncode}\n{code}\n"
                               f"--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}")


def _ignored(rel: str, patterns: list) -> bool:
    parts = rel.split("/")
    for pat in patterns:
        anchored = pat.startswith("/")
        p = pat.strip("/")
        is_dir = pat.endswith("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + (0 if is_dir else 1))]
        if not is_dir:
            candidates.append(rel)
        for c in candidates:
            if (anchored and fnmatch.fnmatchcase(c, p)) or (
                    not anchored and ("/" in p and fnmatch.fnmatchcase(c, p) or
                                      fnmatch.fnmatchcase(c.rsplit("/", 1)[-1], p))):
                return True
    return False


def test_readme_commands_run_as_written(tmp_path):
    work = tmp_path / "clone"
    (work / "fixtures").mkdir(parents=True)
    shutil.copy(ROOT / "fixtures" / "sample.png", work / "fixtures" / "sample.png")
    env = _environment(tmp_path)
    ran = 0
    for lang, tag, code, line in blocks(README):
        if tag == "skip" or lang == "text":
            continue
        if tag == "install":
            cmds = _commands(code)[1:-1]  # the venv and the test command run in CI (checked above)
            code = "\n".join(PIP_PREFIX.sub("", c) for c in cmds)
        _run(lang, code, work, env, line)
        ran += 1
    assert ran >= 4
    # what the README promised exists
    for name in ("sample.gcp", "sample-64.png", "sample-compare.png", "sample-py.gcp"):
        assert (work / name).stat().st_size > 0, name
    # the caption under the picture states what the quick start's file is (within 3 %: the coder
    # may still gain a little without making the picture wrong)
    size = (work / "sample.gcp").stat().st_size
    bpp = size * 8 / (384 * 256)
    stated = re.search(r"\(([0-9.]+) KB, ([0-9.]+) bits per pixel,", README.read_text(encoding="utf-8"))
    assert stated, "the caption under the picture gives the .gcp's size and bits per pixel"
    assert abs(float(stated.group(1)) * 1000 / size - 1) < 0.03, (stated.group(0), size)
    assert abs(float(stated.group(2)) / bpp - 1) < 0.03, (stated.group(0), bpp)
    # and .gitignore covers every file the commands left
    gitignore = ROOT / ".gitignore"
    if gitignore.exists():  # the sdist carries it too
        patterns = [p.strip() for p in gitignore.read_text().splitlines() if p.strip() and not p.startswith("#")]
        left = sorted(str(p.relative_to(work).as_posix()) for p in work.rglob("*") if p.is_file())
        left = [p for p in left if p != "fixtures/sample.png"]
        assert left
        unignored = [p for p in left if not _ignored(p, patterns)]
        assert not unignored, f".gitignore does not cover outputs of the README's commands: {unignored}"


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))
def test_relative_links_exist(doc):
    path = ROOT / doc
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        file = target.split("#", 1)[0]
        assert (path.parent / file).exists(), f"{doc}: link to {target} points at nothing"
