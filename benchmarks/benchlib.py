"""Helpers shared by the benchmark scripts: memory figures, sizes, source trees,
number formatting and an optional py-spy profile of one phase.

Not a benchmark itself.  ``python benchmarks/benchlib.py summarize PROFILE.txt``
prints the hot spots of a py-spy ``--format raw`` file.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Current resident set size of this process, MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 1e6


def _descendants(pid: int | None = None) -> Iterator[int]:
    """The pids of every live descendant of ``pid`` (this process by default), through
    ``/proc/<pid>/task/<tid>/children``; one that exits meanwhile is skipped."""
    me = pid or os.getpid()
    todo = [me]
    while todo:
        p = todo.pop()
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
        if p != me:
            yield p


def descendants_rss_mb(pid: int | None = None) -> float:
    """Current RSS of every descendant process (e.g. merge workers under a forkserver, which
    ``RUSAGE_CHILDREN`` never sees because this process does not wait for them), MB."""
    total = 0.0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE / 1e6
        except OSError:
            pass
    return total


_peak_before_reset = 0.0  # this process's peak before reset_peak_rss() last cleared it


def peak_rss_mb(children: bool = False) -> float:
    """Peak RSS (``ru_maxrss``) of this process, or the largest of its waited-for children, MB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    peak = resource.getrusage(who).ru_maxrss * 1024 / 1e6
    # clear_refs clears ru_maxrss too: the peak before it still counts
    return peak if children else max(peak, _peak_before_reset)


# -- where a phase's time went: this process, its children, the machine ----------------------
TICKS = os.sysconf("SC_CLK_TCK")
_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def reset_peak_rss() -> bool:
    """Start a new peak (``VmHWM``) for this process (Linux: ``clear_refs`` 5); False if the
    kernel does not allow it (then :func:`phase_peak_rss_mb` is the process's peak so far).
    :func:`peak_rss_mb` still gives the process's peak (the kernel resets ``ru_maxrss`` too)."""
    global _peak_before_reset
    _peak_before_reset = max(_peak_before_reset, peak_rss_mb())
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def phase_peak_rss_mb() -> float:
    """Peak RSS of this process since :func:`reset_peak_rss` (or since it started), MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return peak_rss_mb()


def descendants_cpu_seconds(pid: int | None = None) -> dict[int, float]:
    """CPU seconds (user + system) of every live descendant process, by pid: a flush or
    merge worker runs for the store's life, and ``RUSAGE_CHILDREN`` counts a child only
    once it has exited and been waited for."""
    out: dict[int, float] = {}
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            out[p] = (int(f[11]) + int(f[12])) / TICKS  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return out


def _meminfo_mb(*names: str) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                k, _, rest = line.partition(":")
                if k in names:
                    out[k] = int(rest.split()[0]) * 1024 / 1e6
    except OSError:
        pass
    return out


def _cpu_ticks() -> dict[str, int]:
    try:
        with open("/proc/stat") as fh:
            f = fh.readline().split()[1:]
        return {k: int(v) for k, v in zip(_CPU_FIELDS, f, strict=False)}
    except (OSError, ValueError):
        return {}


def snapshot() -> dict[str, Any]:
    """The figures :func:`phase_figures` compares: taken just before and just after a phase."""
    return {"wall": time.perf_counter(), "self": resource.getrusage(resource.RUSAGE_SELF),
            "children": resource.getrusage(resource.RUSAGE_CHILDREN),
            "descendants": descendants_cpu_seconds(), "rss": rss_mb(),
            "descendants_rss": descendants_rss_mb(), "cpu": _cpu_ticks(),
            "mem": _meminfo_mb("Dirty", "Writeback", "MemAvailable"), "load": os.getloadavg()}


def phase_figures(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Where the time between snapshots ``a`` and ``b`` went: this process's CPU (and how
    often the kernel took the CPU from it: involuntary switches), its children's, the
    machine's (every CPU's busy, iowait and steal time, in CPU seconds), its RSS, the dirty
    and writeback page cache (a previous run's writes still going to disk), the load."""
    def ru(key: str) -> dict[str, float]:
        x, y = a[key], b[key]
        return {"cpu_seconds": round((y.ru_utime + y.ru_stime) - (x.ru_utime + x.ru_stime), 4),
                "user_seconds": round(y.ru_utime - x.ru_utime, 4),
                "system_seconds": round(y.ru_stime - x.ru_stime, 4),
                "major_faults": y.ru_majflt - x.ru_majflt, "minor_faults": y.ru_minflt - x.ru_minflt,
                "voluntary_switches": y.ru_nvcsw - x.ru_nvcsw,
                "involuntary_switches": y.ru_nivcsw - x.ru_nivcsw,
                "blocks_in": y.ru_inblock - x.ru_inblock, "blocks_out": y.ru_oublock - x.ru_oublock}
    da, db = a["descendants"], b["descendants"]
    cpu = {k: round((b["cpu"].get(k, 0) - a["cpu"].get(k, 0)) / TICKS, 3) for k in _CPU_FIELDS}
    return {
        "wall_seconds": round(b["wall"] - a["wall"], 4),
        "self": ru("self"), "children": ru("children"),
        # live worker processes: CPU over the phase (a worker started in it counts from 0)
        "descendants_cpu_seconds": round(sum(db[p] - da.get(p, 0.0) for p in db), 3),
        "descendants": {"before": len(da), "after": len(db), "started": len(set(db) - set(da))},
        "rss_mb": {"before": round(a["rss"], 1), "after": round(b["rss"], 1),
                   "peak": round(phase_peak_rss_mb(), 1),
                   "descendants_before": round(a["descendants_rss"], 1),
                   "descendants_after": round(b["descendants_rss"], 1)},
        "machine": {"cpu_seconds": cpu, "ncpu": os.cpu_count(),
                    "busy_cpu_seconds": round(sum(v for k, v in cpu.items()
                                                  if k not in ("idle", "iowait")), 3),
                    "load_before": [round(x, 2) for x in a["load"]],
                    "load_after": [round(x, 2) for x in b["load"]],
                    "mem_mb_before": {k: round(v, 1) for k, v in a["mem"].items()},
                    "mem_mb_after": {k: round(v, 1) for k, v in b["mem"].items()}},
    }


def machine_now() -> dict[str, Any]:
    """The machine as a run starts: load, dirty and writeback page cache (MB)."""
    return {"load": [round(x, 2) for x in os.getloadavg()],
            "mem_mb": {k: round(v, 1) for k, v in _meminfo_mb("Dirty", "Writeback", "MemAvailable").items()}}


def src_fingerprint() -> str:
    """A short hash of the package's source as it is now (others edit src/ between runs), with
    the time, so a figure can be tied to the code it measured."""
    import hashlib
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "banyanstore")
    h = hashlib.sha1()
    for dirpath, _dirs, files in sorted(os.walk(root)):
        for f in sorted(files):
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f), "rb") as fh:
                    h.update(f.encode() + fh.read())
    return f"{h.hexdigest()[:12]} at {time.strftime('%Y-%m-%d %H:%M:%S')}"


def tree_label(tree: str) -> str:
    """A source tree's commit (short hash; ``+`` when its src has changes), else its folder name."""
    git = ["git", "-C", tree]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.path.basename(os.path.normpath(tree))
    return commit + ("+" if dirty else "")


def parse_size(text: str) -> int:
    """``"64M"`` -> 67108864; accepts K/M/G suffixes (binary) or a plain int."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.0f}k"
    return f"{x:.0f}"


def dir_bytes(path: str, suffix: str = "") -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            if f.endswith(suffix):
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except FileNotFoundError:
                    pass
    return total


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A table with ``rich`` if it is importable, else aligned plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"\n{title}")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                            for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        return
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*[str(c) for c in r])
    Console(width=200).print(table)


# -- profiling -------------------------------------------------------------------------------
@contextmanager
def pyspy(out_path: str | None, rate: int = 250) -> Iterator[None]:
    """Profile this process (all threads, and subprocesses) with py-spy while the block runs;
    writes collapsed stacks (``--format raw``) to ``out_path``.  No-op when ``out_path`` is None."""
    if out_path is None:
        yield
        return
    exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    proc = subprocess.Popen([exe, "record", "--pid", str(os.getpid()), "--rate", str(rate),
                             "--format", "raw", "--subprocesses", "--nonblocking",
                             "--output", out_path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # let it attach
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if not os.path.exists(out_path):
            print(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}", file=sys.stderr)


def _frames(stack: str) -> list[str]:
    # "thread (name);func (file:line);func (file:line)" -> ["func (file)", ...] without line numbers,
    # so one function's samples on different lines add up.
    out = []
    for fr in stack.split(";"):
        name, _, loc = fr.partition(" (")
        loc = loc.rstrip(")")
        path = loc.rsplit(":", 1)[0]
        short = path.split("/src/", 1)[-1].split("/lib/python3.11/", 1)[-1]
        out.append(f"{name} ({short})")
    return out


def summarize(path: str, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """Hot spots of a py-spy raw file: ``self`` (leaf frame) and ``total`` (inclusive) %."""
    self_c: Counter[str] = Counter()
    line_c: Counter[str] = Counter()
    total_c: Counter[str] = Counter()
    n = 0
    with open(path) as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            c = int(count)
            # drop the process/thread pseudo-frames py-spy puts on top
            frames = [f for f in _frames(stack) if not f.startswith(("process ", "thread "))] or ["?"]
            n += c
            self_c[frames[-1]] += c
            leaf = stack.rsplit(";", 1)[-1]
            name, _, loc = leaf.partition(" (")
            line_c[f"{name} ({loc.rstrip(')').split('/src/', 1)[-1].split('/benchmarks/', 1)[-1]})"] += c
            for f in set(frames):
                total_c[f] += c
    if n == 0:
        return {"self": [], "total": [], "lines": [], "samples": []}
    return {"self": [(f, 100 * c / n) for f, c in self_c.most_common(top)],
            "total": [(f, 100 * c / n) for f, c in total_c.most_common(top + 16)
                      if not f.startswith(("<module>", "_bootstrap", "run (threading", "main (", "worker ("))
                      and "bench_" not in f][:top],
            "lines": [(f, 100 * c / n) for f, c in line_c.most_common(top)],
            "samples": [("samples", float(n))]}


def print_summary(label: str, summ: dict[str, list[tuple[str, float]]], top: int = 10) -> None:
    samples = int(summ["samples"][0][1]) if summ["samples"] else 0
    print(f"\nprofile {label} ({samples} samples, all threads)")
    print("  self %   function")
    for f, p in summ["self"][:top]:
        print(f"  {p:6.1f}   {f}")
    print("  self %   line")
    for f, p in summ.get("lines", [])[:6]:
        print(f"  {p:6.1f}   {f}")
    print("  total %  function (inclusive)")
    for f, p in summ["total"][:top]:
        print(f"  {p:6.1f}   {f}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "summarize":
        for p in sys.argv[2:]:
            print_summary(p, summarize(p))
    else:
        print(__doc__)
