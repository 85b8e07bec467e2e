"""The demo's HTML report: its pieces (tables, nearest-neighbour upscaling), and the
page from ``jaxfactor demo --quick`` opened in a real headless Chromium."""
import json
import re
from pathlib import Path

import numpy as np

from jaxfactor.app import report as R

from .browser import chromium_driver


def test_html_table_is_a_table_with_escaped_cells_and_sort_keys():
    rows = [{"name": "<b>x</b>", "value": 2.5, "count": 3}, {"name": "y", "value": float("nan"),
                                                             "count": 1}]
    text = R.html_table([R.Column("name", "name"), R.Column("value", "value", "px"),
                         R.Column("count", "count", numeric=True)], rows, caption="c & d",
                        table_id="t")
    assert text.startswith("<div class='wide'><table class='sortable' id='t'><caption>c &amp; d</caption>")
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x" not in text
    assert text.count("<tr>") == 3                                   # header + 2 rows
    assert "data-sort='2.5'" in text and "n/a" in text
    assert "<span class='unit'>px</span>" in text


def test_upscale_is_nearest_neighbour(rng):
    tiles = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    big = R.upscale(tiles, 96)
    assert big.shape == (2, 96, 96, 3)
    # every 3 x 3 block is one source pixel: no interpolation
    np.testing.assert_array_equal(big[:, ::3, ::3], tiles)
    np.testing.assert_array_equal(big[:, 2::3, 1::3], tiles)
    assert R.upscale(tiles[:, :8, :8], 96).shape[1] == 96


def test_quick_demo_report_is_self_contained(quick_demo_report):
    results = json.loads((quick_demo_report / "results.json").read_text())
    page = (quick_demo_report / "index.html").read_text()
    assert "<pre>" not in page
    links = re.findall(r"(?:src|href)='([^']+)'", page)
    assert links, "the page links its images"
    for link in links:
        assert not re.match(r"^[a-z]+:", link) and not link.startswith("/"), link   # relative
        assert (quick_demo_report / link).is_file(), link
    methods = [r["method"] for r in results["rows"]]
    assert methods == ["PCA", "PCA", "ICA", "ICA", "PCA", "SCA", "SEFA"]
    for r in results["rows"]:
        for key in ("fid_a3", "fid_a6", "S_e", "S_d", "share_mean"):
            assert np.isfinite(r[key]), (r["label"], key)
        assert 0 < r["S_d"] <= 1 and 0 < r["share_mean"] <= 1
        assert len(r["grid_labels"]) == len(r["grid_cells"])
    assert results["claims"] and all(c["reproduced"] in (True, False) for c in results["claims"])
    # the main thread's stages partition part of the run: each is timed once, and they fit in
    # its wall time (each rounded to 0.01 s, the total to 0.1 s); the plots overlap them
    stages = results["stages"]
    seconds = [s["seconds"] for s in stages if not s["background"]]
    assert len({s["stage"] for s in stages}) == len(stages) and min(seconds) >= 0
    assert sum(seconds) <= results["seconds"] + 0.005 * len(seconds) + 0.05
    assert [s["stage"] for s in stages if s["background"]] == ["plots (walk curves, heat maps, Fig. 2)"]


def test_report_in_a_real_browser(quick_demo_report, tmp_path):
    results = json.loads((quick_demo_report / "results.json").read_text())
    driver = chromium_driver()
    try:
        driver.get((quick_demo_report / "index.html").resolve().as_uri())
        driver.execute_script("return document.readyState")
        images = driver.execute_script(
            "return Array.from(document.images).map(function(i){"
            "return [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight, "
            "i.className];});")
        assert images
        for src, complete, width, height, cls in images:
            assert complete and width > 0 and height > 0, src
        cells = [img for img in images if img[0].startswith("cells/")]
        assert cells and all(w >= 96 and h >= 96 for _, _, w, h, _ in cells)
        assert all(cls == "px" for *_, cls in cells)      # drawn without smoothing
        n_rows = len(results["rows"])
        counts = driver.execute_script(
            "return ['fid', 'walks', 'claims', 'stages'].map(function(id){"
            "var t = document.getElementById(id);"
            "return t ? [t.tagName, t.tBodies[0].rows.length, t.tHead.rows[0].cells.length] : null;});")
        assert counts[0][:2] == ["TABLE", n_rows] and counts[1][:2] == ["TABLE", n_rows]
        assert counts[2][:2] == ["TABLE", len(results["claims"])]
        assert counts[3][:2] == ["TABLE", len(results["stages"])]
        # every method's edit grid is a table: one row per direction, one column per alpha
        grids = driver.execute_script(
            "return Array.from(document.querySelectorAll('table.grid')).map(function(t){"
            "return [t.tBodies[0].rows.length, t.tHead.rows[0].cells.length];});")
        assert len(grids) == n_rows
        for (body_rows, head_cells), r in zip(grids, results["rows"]):
            assert body_rows == len(r["grid_cells"]) and head_cells == len(r["grid_alphas"]) + 1
        # a header click sorts the table by that column
        driver.execute_script("document.querySelector('#fid thead th:nth-child(4)').click();")
        sorted_counts = driver.execute_script(
            "return Array.from(document.querySelectorAll('#fid tbody tr td:nth-child(4)'))"
            ".map(function(td){return parseFloat(td.dataset.sort);});")
        assert sorted_counts == sorted(sorted_counts)
        shot = Path(tmp_path) / "report.png"
        driver.set_window_size(1280, 2400)
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
