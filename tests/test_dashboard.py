"""The run record mirrored into Optuna and served by optuna-dashboard, driven by a real
headless Chromium (Debian's chromium and chromium-driver; skipped, with the reason, where
they are missing: `make dashboard-test` needs them)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from evomerge.config import load_config
from evomerge.run.loop import evolve

from .test_evolve import config

pytest.importorskip("optuna")
pytest.importorskip("optuna_dashboard")


@pytest.fixture(scope="module")
def two_task_run(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("dash") / "run"
    evolve(load_config(config(
        tiny_zoo, run, tasks=[{"name": "add_it", "zoo": "add_it"},
                              {"name": "num_it", "zoo": "num_it"}],
        fitness={"subset_size": 5, "estimator": "mean"},
        optimizer={"name": "nsga2", "pop_size": 4, "generations": 3})))
    return run


@pytest.mark.slow
def test_mirror_copies_every_candidate_once_with_its_genes_and_values(two_task_run: Path
                                                                      ) -> None:
    import json

    from evomerge.run.dashboard import Mirror
    from evomerge.run.store import read_records

    records, _ = read_records(two_task_run / "evaluations.jsonl")
    cands = [r for r in records if r["kind"] == "candidate"]
    mirror = Mirror(two_task_run)
    assert mirror.sync() == len(cands) == 12 and mirror.sync() == 0
    trials = Mirror(two_task_run).study  # a second process sees the same study
    again = Mirror(two_task_run)
    assert again.sync() == 0 and len(again.study.get_trials()) == 12
    assert trials is None
    by_key = {t.user_attrs["key"]: t for t in again.study.get_trials()}
    for r in cands:
        t = by_key[r["key"]]
        assert t.values == [r["estimates"]["add_it"], r["estimates"]["num_it"]]
        assert list(t.params.values()) == pytest.approx(r["genome"])
    final = json.loads((two_task_run / "result.json").read_text())["final"]
    assert len([k for k in again.study.user_attrs if k.startswith("final: ")]) == len(final)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_dashboard_renders_the_study_in_a_real_browser(two_task_run: Path,
                                                       tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver); "
                    "the browser test needs them")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    exe = Path(sys.executable).parent / "evomerge"
    server = subprocess.Popen([str(exe), "dashboard", str(two_task_run), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    browser = None
    try:
        url = f"http://127.0.0.1:{port}/dashboard/"
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the dashboard did not start: " + (server.stdout.read()
                                                           if server.poll() is not None else ""))
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--window-size=1400,1000"):
            options.add_argument(arg)
        browser = webdriver.Chrome(service=webdriver.ChromeService(driver_path),
                                   options=options)
        wait = WebDriverWait(browser, 60)
        browser.get(url)
        wait.until(lambda b: "evomerge" in b.find_element(By.TAG_NAME, "body").text)
        browser.get(f"http://127.0.0.1:{port}/dashboard/studies/0")
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) >= 3)
        wait.until(lambda b: "Best Trials" in b.find_element(By.TAG_NAME, "body").text)
        body = browser.find_element(By.TAG_NAME, "body").text
        for part in ("Pareto Front", "History", "add_it (estimate)", "num_it (estimate)",
                     "final: base"):
            assert part in body, part
        plots = browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
        assert any(p.find_elements(By.CSS_SELECTOR, ".scatterlayer .point") for p in plots)
        # the trial count, from the API the page itself reads
        import json

        api = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/0?after=0", timeout=10).read())
        assert len(api["trials"]) == 12 and len(api["best_trials"]) >= 1
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait(timeout=20)
