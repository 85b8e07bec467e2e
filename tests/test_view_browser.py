"""jaxfactor view in a real headless Chromium: open the page, move a slider with
the keyboard, wait for the new image, compare its pixels with the library's own
render, measure slider-to-image latency, and save a screenshot.

``JAXFACTOR_VIEW_SCREENSHOT=path.png`` also writes the screenshot there (the
README's picture is made that way)."""
import os
import shutil
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")

from bridges.generators import sample_z  # noqa: E402
from bridges.render import render  # noqa: E402
from jaxfactor.app import view as V  # noqa: E402
from jaxfactor.app.pipeline import load_generator  # noqa: E402
from jaxfactor.directions import save_directions  # noqa: E402
from tests.browser import chromium_driver  # noqa: E402
from tests.conftest import seed_for  # noqa: E402

TARGET_MS = 150.0  # the target for the built-in generator


# The image on screen, read back at its natural size through a canvas: (H, W, 4) RGBA.
_PIXELS_JS = """
const img = document.getElementById('image');
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const ctx = c.getContext('2d');
ctx.drawImage(img, 0, 0);
return [c.width, c.height, Array.from(ctx.getImageData(0, 0, c.width, c.height).data)];
"""


def _pixels(driver) -> np.ndarray:
    w, h, data = driver.execute_script(_PIXELS_JS)
    return np.asarray(data, np.uint8).reshape(h, w, 4)


def _wait(driver, predicate_js, timeout=20.0):
    """Poll a JS expression until it is true."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if driver.execute_script("return " + predicate_js):
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for: {predicate_js}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    adapter = load_generator(V.DEFAULT_GENERATOR)
    rng = np.random.default_rng(seed_for("tests/test_view_browser.py::served"))
    zfile = save_directions(tmp_path_factory.mktemp("z") / "z.npz",
                            rng.standard_normal((3, adapter.z_dim)), rng.uniform(0.5, 1.5, 3),
                            method="ica", space="z")
    mp = pytest.MonkeyPatch()
    mp.setitem(V.STARTUP_PCA, "samples", 1500)   # the size test_view.py uses: one compilation
    path = V.startup_directions(adapter, V.DEFAULT_GENERATOR, tmp_path_factory.mktemp("cache"))
    mp.undo()
    viewer = V.Viewer(adapter, V.DEFAULT_GENERATOR, [V.DirectionSet.load(p) for p in (path, zfile)],
                      sliders=6)
    server = V.ViewServer(viewer, 0)
    server.start()
    yield server, adapter
    server.stop()


def test_sliders_change_the_image_live(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server, adapter = served
    driver = chromium_driver(1100, 760)
    try:
        driver.get(server.url)
        _wait(driver, "window.jaxfactorView && window.jaxfactorView.shown !== null")
        seed = 0
        unedited = render(adapter, sample_z(seed, 0, 1, adapter.z_dim))[0]   # (8, 8, 1) uint8
        first = _pixels(driver)
        assert first.shape == (8, 8, 4) and np.all(first[..., 3] == 255)
        for ch in range(3):                      # alpha = 0 is the library's own render, exactly
            np.testing.assert_array_equal(first[..., ch], unedited[..., 0])
        assert len(driver.find_elements(By.CSS_SELECTOR, "#sliders input[type=range]")) == 6
        assert driver.find_element(By.ID, "layer-row").is_displayed()   # W+ range for W directions

        slider = driver.find_element(By.ID, "alpha-0")
        slider.click()                           # a click on the middle (alpha 0) focuses it
        _wait(driver, "window.jaxfactorView.shown.query.indexOf('a=') < 0")
        latencies = []
        for step in range(1, 16):                # keyboard moves: one input event each
            shown_before = driver.execute_script("return window.jaxfactorView.shown.seq")
            slider.send_keys(Keys.ARROW_RIGHT)
            _wait(driver, f"window.jaxfactorView.shown.seq > {shown_before}")
            latencies.append(driver.execute_script("return window.jaxfactorView.shown.latencyMs"))
        alpha = float(slider.get_attribute("value"))
        assert alpha > 0
        moved = _pixels(driver)
        assert np.abs(moved[..., 0].astype(int) - unedited[..., 0].astype(int)).max() > 10
        # what the page shows is the library's render of the same edit
        edit = V.Edit(0, seed, ((0, alpha),))
        np.testing.assert_array_equal(moved[..., 0], server.viewer.render(edit)[..., 0])
        _wait(driver, f"document.getElementById('command').textContent.indexOf('--alphas={alpha!r} ') > 0")
        command = driver.find_element(By.ID, "command").text
        assert command.startswith("jaxfactor edit --generator") and "--indices 0 " in command
        lat = np.asarray(latencies)
        print(f"\nslider move -> new image: median {np.median(lat):.1f} ms, "
              f"max {lat.max():.1f} ms over {len(lat)} moves (target < {TARGET_MS:g} ms)")
        # the target is for an idle machine; a shared CI runner gets 4x slack on the median
        assert np.median(lat) < 4 * TARGET_MS

        screenshot = tmp_path / "view.png"
        driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        if os.environ.get("JAXFACTOR_VIEW_SCREENSHOT"):
            shutil.copyfile(screenshot, os.environ["JAXFACTOR_VIEW_SCREENSHOT"])

        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.ID, "layer-from")).select_by_value("2")   # W+ layers 2-3 only
        _wait(driver, "window.jaxfactorView.shown.query.indexOf('layers=2-3') >= 0")
        on_layers = _pixels(driver)[..., 0]
        np.testing.assert_array_equal(on_layers, server.viewer.render(V.Edit(0, seed, ((0, alpha),),
                                                                              (2, 3)))[..., 0])
        assert np.any(on_layers != moved[..., 0])

        driver.find_element(By.ID, "reset").click()   # back to alpha = 0: the unedited render
        _wait(driver, "window.jaxfactorView.shown.query.indexOf('a=') < 0 && "
                      "window.jaxfactorView.shown.query.indexOf('layers') < 0")
        np.testing.assert_array_equal(_pixels(driver)[..., 0], unedited[..., 0])

        Select(driver.find_element(By.ID, "set")).select_by_index(1)   # the z directions: 3 sliders
        _wait(driver, "window.jaxfactorView.shown.query.indexOf('set=1') >= 0")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#sliders input[type=range]")) == 3
        assert not driver.find_element(By.ID, "layer-row").is_displayed()
        np.testing.assert_array_equal(_pixels(driver)[..., 0], unedited[..., 0])
        z_slider = driver.find_element(By.ID, "alpha-2")
        z_slider.click()
        for _ in range(20):
            z_slider.send_keys(Keys.ARROW_LEFT)
        z_alpha = float(z_slider.get_attribute("value"))
        _wait(driver, f"window.jaxfactorView.shown.query.indexOf('a=2%3A{z_alpha:g}') >= 0")
        np.testing.assert_array_equal(
            _pixels(driver)[..., 0], server.viewer.render(V.Edit(1, seed, ((2, z_alpha),)))[..., 0])

        seed_box = driver.find_element(By.ID, "seed")   # a bad seed: the server's error on the page
        seed_box.clear()
        seed_box.send_keys("99999999999", Keys.ENTER)
        _wait(driver, "!document.getElementById('error').hidden")
        assert "seed='99999999999'" in driver.find_element(By.ID, "error").text
        driver.find_element(By.ID, "new-seed").click()   # and the page carries on
        _wait(driver, "document.getElementById('error').hidden")
        new_seed = int(driver.find_element(By.ID, "seed").get_attribute("value"))
        _wait(driver, f"window.jaxfactorView.shown.query.indexOf('seed={new_seed}') >= 0")
        np.testing.assert_array_equal(   # the z edit, on the new seed's latent
            _pixels(driver)[..., 0], server.viewer.render(V.Edit(1, new_seed, ((2, z_alpha),)))[..., 0])
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                and "api/render" not in e["message"]]   # the refused seed's 400 is logged
        assert logs == []
    finally:
        driver.quit()
