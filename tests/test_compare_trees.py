"""benchmarks/compare_trees.py: the per-pair ratios, medians and counts it reports, and the
ABBA order of its runs (no benchmark is run here: the runner is replaced)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare_trees  # noqa: E402


def result(rates: dict[str, float], peak: float = 300.0, base: float = 100.0) -> dict[str, Any]:
    return {"phases": {p: {"rate": r} for p, r in rates.items()}, "peak_rss_mb": peak,
            "baseline_rss_mb": base, "info": {"before_compaction": {"implementation": "python"}}}


def test_ratios_are_taken_within_each_pair():
    # The machine drifts: the old tree's medians alone would hide that new wins every pair.
    new = [result({"get": 110}), result({"get": 220}), result({"get": 330})]
    old = [result({"get": 100}), result({"get": 200}), result({"get": 400})]
    rows = compare_trees.compare(new, old)
    get = rows[0]
    assert get["ratios"] == pytest.approx([1.1, 1.1, 0.825])
    assert get["median_ratio"] == pytest.approx(1.1)
    assert get["at_least_1"] == 2
    assert (get["old"], get["new"]) == (200, 220)
    assert rows[-1] == {"phase": "peak RSS above baseline (MB)", "old": 200, "new": 200}


def test_runs_alternate_abba_and_stop_at_a_mixed_implementation(tmp_path, monkeypatch):
    order: list[str] = []

    def fake_run(script: str, engine: str, bench_args: list[str], out: str, log: str) -> dict[str, Any]:
        side = Path(script).parents[1].name
        order.append(side)
        r = result({"get": 100.0})
        if len(order) == 3:  # the second pair's first run, the old tree
            r["info"]["before_compaction"]["implementation"] = "native"
        return r

    monkeypatch.setattr(compare_trees, "run_once", fake_run)
    old = tmp_path / "old"
    (old / "src" / "banyanstore").mkdir(parents=True)
    monkeypatch.setattr(sys, "argv", ["compare_trees.py", "--old", str(old), "--pairs", "3"])
    with pytest.raises(SystemExit, match="different implementations"):
        compare_trees.main()
    assert order == ["new", "old", "old"]  # stopped at once


def test_every_pair_runs_in_abba_order(tmp_path, monkeypatch, capsys):
    order: list[str] = []

    def fake_run(script: str, engine: str, bench_args: list[str], out: str, log: str) -> dict[str, Any]:
        order.append(Path(script).parents[1].name)
        return result({"get": 100.0 + len(order)})

    monkeypatch.setattr(compare_trees, "run_once", fake_run)
    old = tmp_path / "old"
    (old / "src" / "banyanstore").mkdir(parents=True)
    out = tmp_path / "out.json"
    monkeypatch.setattr(sys, "argv", ["compare_trees.py", "--old", str(old), "--pairs", "4",
                                      "--json", str(out), "--", "--num", "1000"])
    compare_trees.main()
    assert order == ["new", "old", "old", "new", "new", "old", "old", "new"]
    assert "4 pairs in ABBA order, bench_store.py --num 1000" in capsys.readouterr().out.replace("\n", " ")
    assert out.exists()


def test_a_failing_run_stops_with_the_end_of_its_output(tmp_path):
    script = tmp_path / "bench_store.py"
    script.write_text("import sys\nprint('the bench broke here')\nsys.exit(3)\n")
    with pytest.raises(SystemExit, match="exited with 3(.|\n)*the bench broke here"):
        compare_trees.run_once(str(script), "banyanstore-pure", [], str(tmp_path / "o.json"),
                               str(tmp_path / "o.log"))
