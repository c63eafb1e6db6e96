"""``python -m banyanstore.demo``: it only ever removes what it created, refuses a
directory holding anything else, and parses its arguments (``--help`` is help)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from banyanstore.demo import MARKER, OUTPUTS, main, prepare


def test_demo_refuses_a_users_directory_and_deletes_nothing(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("my notes")
    assert main([str(victim), "--spans", "200"]) == 2
    assert os.listdir(victim) == ["notes.txt"] and (victim / "notes.txt").read_text() == "my notes"
    assert "not made by the demo" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("data")
    assert main([str(afile)]) == 2 and afile.read_text() == "data"


def test_help_is_help_not_a_directory(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "banyanstore.demo", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout and "--spans" in proc.stdout
    assert os.listdir(tmp_path) == []
    proc = subprocess.run([sys.executable, "-m", "banyanstore.demo", "--spans", "x"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--spans" in proc.stderr and os.listdir(tmp_path) == []


def test_rerun_replaces_only_its_own_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run marks its directory; a rerun (prepare) removes only the run's own outputs."""
    root = tmp_path / "demo"
    assert main([str(root), "--spans", "300"]) == 0
    assert "after reopen: span 42" in capsys.readouterr().out
    assert sorted(os.listdir(root)) == sorted([MARKER, *OUTPUTS])
    (root / "keep.txt").write_text("added by the user between runs")
    prepare(str(root))
    assert sorted(os.listdir(root)) == sorted([MARKER, "keep.txt"])
    assert (root / "keep.txt").read_text() == "added by the user between runs"


def test_every_figure_says_what_it_shows_and_the_run_ends_with_next_commands(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from banyanstore.demo import run
    for module in ("rich", "rich.console", "rich.table"):  # plain output, as in the demo's own venv
        monkeypatch.setitem(sys.modules, module, None)
    root = str(tmp_path / "demo")
    results = run(root, spans=200)
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in results:  # "  name   figure" then "  (what the figure shows)"
        at = next(i for i, line in enumerate(lines) if line.startswith(f"  {name} "))
        meaning = lines[at + 1].strip()
        assert meaning.startswith("(") and meaning.endswith(")") and len(meaning) > 12, (name, meaning)
    tail = out[out.index("Next, on what the demo wrote"):].splitlines()
    commands = [line.split("#")[0].split() for line in tail[1:-1]]
    assert {c[1] for c in commands} >= {"keyspaces", "get", "scan", "stats", "verify", "dump-log"}
    for words in commands:  # each suggested command works on what the demo wrote
        assert words[0] == "banyanstore"
        proc = subprocess.run([sys.executable, "-m", "banyanstore", *words[1:]], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and proc.stderr == "", (words, proc.stderr)
