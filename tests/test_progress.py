"""Progress without a terminal (nohup, CI, cluster logs): plain lines with counts over the
whole search, elapsed time and ETA, compared with a golden file (times masked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .test_evolve import config

GOLDEN = Path(__file__).parent / "data" / "progress_lines.txt"
TIME = re.compile(r"\d+:\d\d:\d\d")
RATE = re.compile(r"\d+ items/s")


def progress_lines(tiny_zoo: Path, tmp_path: Path) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config(tiny_zoo, tmp_path / "run", fitness={
        "subset_size": 10, "estimator": "mean"})))
    exe = Path(sys.executable).parent / "evomerge"
    out = subprocess.run([str(exe), "evolve", str(path), "--log-every", "0"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "100"}).stdout
    return [RATE.sub("N items/s", TIME.sub("T", ln)) for ln in out.splitlines()
            if re.match(r"(search|calibration|validation|test) \d+/\d+", ln)]


@pytest.mark.slow
def test_non_tty_progress_lines_match_the_golden_file(tiny_zoo: Path, tmp_path: Path) -> None:
    lines = progress_lines(tiny_zoo, tmp_path)
    if os.environ.get("EVOMERGE_REGOLD"):
        GOLDEN.write_text("\n".join(lines) + "\n")
    assert lines == GOLDEN.read_text().splitlines()
    search = [ln for ln in lines if ln.startswith("search ")]
    done = [int(re.match(r"search (\d+)/12 ", ln).group(1)) for ln in search]  # type: ignore[union-attr]
    assert done == sorted(done) and done[-1] == 12  # one span: 4 x 3 trials, never reset
    assert all("eta T" in ln for ln in search if " 0/" not in ln and "100%" not in ln)


def test_the_progress_message_says_when_the_best_stopped_moving() -> None:
    import numpy as np

    from evomerge.optim.base import Termination, Trial
    from evomerge.run.search import Search

    search = Search.__new__(Search)
    search.termination = Termination(generations=10)
    search.best_so_far = float("-inf")
    trial = Trial(np.zeros(2), generation=0, index=0, budget=None)
    assert search._message(trial) == "gen 1/10 best -"
    for best in [0.2, 0.3, 0.3, 0.3, 0.3]:
        search.termination.update([trial], np.array([[-best]]), 0)
    search.best_so_far = 0.3
    assert search._message(Trial(np.zeros(2), 5, 0, None)) == (
        "gen 6/10 best 0.300 (unchanged for 3 generations)")
