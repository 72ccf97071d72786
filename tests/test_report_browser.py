"""The comparison report of a real (tiny) study, opened in headless Chromium: every figure decodes,
the tables are there. The test needs Chromium and chromedriver (`.ci/run` installs them); without them it
fails and says what to install, it is never skipped."""

import shutil

import pytest

from activeseg.config import SimConfig
from activeseg.data import load_dataset
from activeseg.loop import run_simulation
from activeseg.report import build_report

TINY = dict(depth=2, base_filters=4, steps=6, batch_size=4, eval_every=3, initial=4, query=3, rounds=3,
            max_pool=20, mc_samples=3, score_batch_size=16, heatmaps=1, patch_size=32, device="cpu", reference=False)


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if path and driver:
        return path, driver
    pytest.fail("the report's browser test needs Chromium and chromedriver on PATH "
                "(Debian: apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    nuclei = load_dataset("nuclei", patch_size=32, quiet=True)
    for strategy in ("random", "bald"):
        run_simulation(SimConfig(strategy=strategy, **TINY), nuclei, root / strategy / "seed_0", progress=False)
    out = root / "report"
    summary = build_report([root], out)
    return out, summary


def test_report_has_every_view(study):
    out, summary = study
    for name in ("learning_curve.png", "uncertainty_distribution.png", "embedding.png", "index.html"):
        assert (out / name).is_file(), name
    assert list(summary["strategies"]) == ["random", "bald"]
    assert all("best_val_round" in p for s in summary["strategies"].values() for p in s["per_seed"])


def test_report_renders_in_headless_chromium(study):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    binary, driver_path = _chromium()
    out, _ = study
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get((out / "index.html").resolve().as_uri())
        assert driver.title.startswith("activeseg report")
        images = driver.find_elements(By.TAG_NAME, "img")
        # the learning curve, the two views and one heatmap per strategy-round that picked items
        assert len(images) >= 3 + 2
        for img in images:
            width = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
            assert width and width > 100, img.get_attribute("alt")
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        assert "Uncertainty over the training set" in headings
        assert any(h.startswith("Where the picks lie") for h in headings)
        rows = [row.find_elements(By.TAG_NAME, "td") for row in driver.find_elements(By.CSS_SELECTOR, "table tr")]
        first_cells = [cells[0].text for cells in rows if cells]
        assert first_cells.count("bald") >= 2 and first_cells.count("random") >= 2  # summary and best-val tables
    finally:
        driver.quit()
