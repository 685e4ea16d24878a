"""The playground at `/`, driven in Debian's Chromium (Playwright) against a live uvicorn server.

The server runs the real service on the tiny artifacts (`tiny_artifacts`). Where the page shows a
number or an image the service computed, the test asks the service the same question over HTTP and
compares; screenshots are decoded with Pillow and checked for content.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install playwright)")

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "app" / "static" / "samples"
API_KEY = "test-key-1234"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 20_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(model_dir: Path, log: Path, **env: str) -> Iterator[str]:
    """Run `uvicorn app.main:app` on a free port until /readyz answers; yield its base URL."""
    port = _free_port()
    # the test owns every setting: none leaks in from the caller's environment
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AESERVE_")}
    environ |= {
        "AESERVE_MODEL_DIR": str(model_dir),
        "AESERVE_LOG_FORMAT": "text",
        "AESERVE_LOG_LEVEL": "WARNING",
        "AESERVE_INTRA_OP_THREADS": "1",
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready in 60 s:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(tiny_artifacts, tmp_path_factory.mktemp("server") / "server.log")


@pytest.fixture(scope="module")
def keyed_server(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service with an API key, serving only the VAE (start-up stays short)."""
    root = tmp_path_factory.mktemp("keyed")
    shutil.copytree(tiny_artifacts / "vae", root / "models" / "vae")
    yield from _serve(root / "models", root / "server.log", AESERVE_API_KEY=API_KEY)


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the page's policy forbids;
    # test_the_content_security_policy_lets_the_playground_work checks the page under its policy
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _loaded(page: sync_api.Page, url: str) -> None:
    """Open the playground and wait for the first sample's reconstructions (4 models)."""
    page.goto(url + "/")
    page.wait_for_function("document.querySelectorAll('#recon-grid .psnr[data-psnr]').length === 4")


def _png_of(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,"), src[:40]
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def _shot(locator: sync_api.Locator, path: Path) -> np.ndarray:
    """An element's screenshot, saved, as float RGB [H, W, 3]."""
    locator.screenshot(path=str(path))
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def _shows(shot: np.ndarray, image: Image.Image) -> float:
    """Mean absolute difference (0..255) between a screenshot and `image` scaled to it (pixelated)."""
    h, w = shot.shape[:2]
    scaled = np.asarray(image.convert("RGB").resize((w, h), Image.Resampling.NEAREST), dtype=np.float64)
    return float(np.abs(shot - scaled).mean())


def _checkerboard(shot: np.ndarray) -> float:
    """How far a screenshot is from the empty-image placeholder (the light checkerboard)."""
    return float(np.abs(shot - 240.0).mean())


def test_models_listed_with_kind_metrics_provider(page: sync_api.Page, server: str) -> None:
    _loaded(page, server)
    cards = page.locator(".model-card")
    names = cards.evaluate_all("cs => cs.map(c => c.dataset.model)")
    assert sorted(names) == ["beta_vae", "mae", "vae", "vqvae"]
    vq = page.locator('.model-card[data-model="vqvae"]')
    assert vq.locator(".badge").inner_text() == "VQ-VAE"
    assert vq.locator(".provider").inner_text() == "CPU"
    assert "not evaluated yet" in vq.locator(".metrics").inner_text()  # the tiny artifacts have no metrics
    assert page.locator("#status").inner_text() == "4 of 4 models ready."


def test_keyboard_reaches_every_control(page: sync_api.Page, server: str) -> None:
    _loaded(page, server)
    page.evaluate("""() => { window.reached = []; document.addEventListener('focusin',
        e => window.reached.push(e.target.id || e.target.dataset.name)); }""")
    for _ in range(90):
        page.keyboard.press("Tab")
    reached = set(page.evaluate("window.reached"))
    wanted = {"api-key", "file-input", "Astronaut", "Heart", "tokens-model", "tokens-code", "token-canvas",
              "codebook-canvas", "tokens-decode", "interp-run", "traverse-run", "sample-run", "mask-canvas",
              "inpaint-run"}
    assert wanted <= reached, f"not reachable by Tab: {sorted(wanted - reached)}"


def test_upload_reconstructs_with_the_services_psnr(page: sync_api.Page, server: str, tmp_path: Path) -> None:
    _loaded(page, server)
    # a 40x30 gradient: not square, so the service centre-crops it
    yy, xx = np.mgrid[0:30, 0:40]
    upload = np.stack([xx * 6, yy * 8, 255 - xx * 6], axis=-1).astype(np.uint8)
    path = tmp_path / "gradient.png"
    Image.fromarray(upload).save(path)
    page.set_input_files("#file-input", str(path))
    page.wait_for_function(
        "document.querySelector('#recon-grid .original')?.alt.includes('gradient.png') &&"
        "document.querySelectorAll('#recon-grid .psnr[data-psnr]').length === 4"
    )
    assert page.locator("#image-info").inner_text() == "gradient.png — 40×30 px"
    for name in ("vae", "beta_vae", "vqvae", "mae"):
        tile = page.locator(f'#recon-grid .tile[data-model="{name}"]')
        expected = httpx.post(
            f"{server}/v1/models/{name}/reconstruct?format=json",
            files={"image": ("g.png", path.read_bytes(), "image/png")},
        ).json()
        assert tile.locator(".psnr").inner_text() == f"PSNR {expected['psnr']:.2f} dB"
        img = tile.locator("img")
        assert img.get_attribute("src") == "data:image/png;base64," + expected["image"]
        shot = _shot(img, tmp_path / f"recon_{name}.png")
        assert _shows(shot, _png_of(img.get_attribute("src"))) < 12  # the picture is the reconstruction
        assert _checkerboard(shot) > 40  # and not the empty placeholder
    assert page.locator("#reconstruct-msg").inner_text() == "Done: 4 reconstructions."
    page.screenshot(path=str(tmp_path / "reconstruct.png"), full_page=True)


def test_token_grid_drawn_edited_and_decoded(page: sync_api.Page, server: str, tmp_path: Path) -> None:
    _loaded(page, server)
    page.wait_for_function("document.querySelector('#token-caption').textContent.includes('distinct')")
    canvas = page.locator("#token-canvas")
    shot = _shot(canvas, tmp_path / "tokens.png")
    colours = {tuple(c) for c in shot.reshape(-1, 3).astype(int)}
    assert len(colours) >= 2, "the token grid canvas is blank"
    sample = (SAMPLES / "astronaut.png").read_bytes()
    served = httpx.post(
        f"{server}/v1/models/vqvae/tokens", files={"image": ("a.png", sample, "image/png")}
    ).json()
    grid = served["tokens"][0]
    h, w = len(grid), len(grid[0])
    assert page.locator("#token-caption").inner_text().startswith(f"{h}×{w} tokens")
    unedited = page.locator("#tokens-decoded").get_attribute("src")

    # paint the top-left cell with a code it does not hold, by pointer
    new_code = (grid[0][0] + 1) % served["codebook_size"]
    page.fill("#tokens-code", str(new_code))
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] / (2 * w), "y": box["height"] / (2 * h)})
    # and the cell to its right by keyboard: the canvas is focused, the cursor moves, Enter paints
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    painted = grid[0][1] != new_code
    edited = [row[:] for row in grid]
    edited[0][0] = edited[0][1] = new_code
    assert page.locator("#tokens-msg").inner_text().startswith(f"{1 + painted} token")
    page.click("#tokens-decode")
    page.wait_for_function(
        "document.querySelector('#tokens-decoded-caption').textContent.startsWith('Decoded with')"
    )
    expected = httpx.post(f"{server}/v1/models/vqvae/decode?format=json", json={"tokens": [edited]}).json()
    src = page.locator("#tokens-decoded").get_attribute("src")
    assert src == "data:image/png;base64," + expected["images"][0]
    assert src != unedited
    canvas.screenshot(path=str(tmp_path / "tokens_edited.png"))


def _model(server: str, name: str) -> dict:
    return httpx.get(f"{server}/v1/models/{name}").json()


def test_inpaint_painted_mask_and_ratio(page: sync_api.Page, server: str, tmp_path: Path) -> None:
    _loaded(page, server)
    mae = _model(server, "mae")
    cols = mae["input"]["width"] // mae["patch_size"]
    rows = mae["input"]["height"] // mae["patch_size"]
    total = mae["num_patches"]
    assert rows * cols == total
    canvas = page.locator("#mask-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    # drag along the top row of patches
    y = box["y"] + box["height"] / (2 * rows)
    page.mouse.move(box["x"] + 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, y, steps=2 * cols)
    page.mouse.up()
    assert page.locator("#inpaint-msg").inner_text() == f"{cols} patches marked for removal."
    result = page.locator("#inpaint-result")
    caption = page.locator("#inpaint-caption")
    page.click("#inpaint-run")
    page.wait_for_function("document.querySelector('#inpaint-caption').textContent.includes('patches')")
    assert caption.inner_text().startswith(f"Inpainted · {cols}/{total} patches")  # the service's mask
    painted_src = result.get_attribute("src")
    shot = _shot(result, tmp_path / "inpaint_painted.png")
    assert _shows(shot, _png_of(painted_src)) < 12 and _checkerboard(shot) > 40

    page.check('input[name="inpaint-mode"][value="ratio"]')
    assert page.locator("#inpaint-ratio").is_visible() and not page.locator("#inpaint-clear").is_visible()
    # a range input cannot be typed into: set it and fire `input` as a drag of the thumb would
    page.locator("#inpaint-ratio").evaluate("r => { r.value = '0.5'; r.dispatchEvent(new Event('input')); }")
    assert page.locator("#inpaint-ratio-out").inner_text() == "50%"
    page.fill("#inpaint-seed", "3")
    page.click("#inpaint-run")
    page.wait_for_function(f"!document.querySelector('#inpaint-caption').textContent.includes('{cols}/{total}')")
    assert caption.inner_text().startswith(f"Inpainted · {round(0.5 * total)}/{total} patches")
    assert result.get_attribute("src") != painted_src
    _shot(page.locator("#inpaint"), tmp_path / "inpaint_ratio.png")


def _run_section(page: sync_api.Page, model: tuple[str, str], fields: dict[str, str], button: str,
                 done: str) -> None:
    """Check the preselected model (select id, name), fill the fields, press run, wait for `done`."""
    assert page.locator(model[0]).input_value() == model[1]
    for selector, value in fields.items():
        page.fill(selector, value)
    page.click(button)
    page.wait_for_function(done)


def test_interpolation_frames_slider_and_animation(page: sync_api.Page, server: str, tmp_path: Path) -> None:
    _loaded(page, server)
    _run_section(page, ("#interp-model", "vae"), {"#interp-steps": "5"}, "#interp-run",
                 "document.querySelectorAll('#interp-strip img').length === 5")
    expected = httpx.post(
        f"{server}/v1/models/vae/interpolate?format=json&steps=5&method=lerp",
        files={
            "start": ("a.png", (SAMPLES / "astronaut.png").read_bytes(), "image/png"),
            "end": ("b.png", (SAMPLES / "coffee.png").read_bytes(), "image/png"),
        },
    ).json()["frames"]
    frame = page.locator("#interp-frame")
    assert frame.get_attribute("src") == "data:image/png;base64," + expected[0]
    slider = page.locator("#interp-slider")
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.locator("#interp-frame-no").inner_text() == "3 / 5"
    assert frame.get_attribute("src") == "data:image/png;base64," + expected[2]
    page.click("#interp-play")
    assert page.locator("#interp-play").get_attribute("aria-pressed") == "true"
    seen = {slider.input_value()}
    deadline = time.monotonic() + 5
    while len(seen) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
        seen.add(slider.input_value())
    page.click("#interp-play")
    assert len(seen) >= 3, f"the animation did not move the slider: {seen}"
    _shot(page.locator("#interpolate"), tmp_path / "interpolate.png")


def test_traversal_grid_and_prior_samples(page: sync_api.Page, server: str, tmp_path: Path) -> None:
    _loaded(page, server)
    _run_section(page, ("#traverse-model", "beta_vae"), {"#traverse-steps": "5"}, "#traverse-run",
                 "document.querySelectorAll('#traverse-grid img').length > 0")
    # one row of 5 per latent dimension (the page shows at most 10 by default)
    zdim = _model(server, "beta_vae")["latent"]["shape"][0]
    rows = min(zdim, 10)
    assert page.locator("#traverse-grid img").count() == rows * 5
    assert page.locator("#traverse-grid .row-label").all_inner_texts() == [f"z{d}" for d in range(rows)]
    assert page.locator("#traverse-msg").inner_text().startswith(f"{rows} of {zdim} dimensions × 5 values")

    _run_section(page, ("#sample-model", "vae"), {"#sample-count": "6", "#sample-seed": "7"}, "#sample-run",
                 "document.querySelectorAll('#sample-grid img').length === 6")
    expected = httpx.post(f"{server}/v1/models/vae/sample?format=json&n=6&seed=7").json()["images"]
    srcs = page.locator("#sample-grid img").evaluate_all("imgs => imgs.map(i => i.src)")
    assert srcs == ["data:image/png;base64," + e for e in expected]
    _shot(page.locator("#sample"), tmp_path / "samples.png")


def test_the_latest_image_wins_and_transparency_shows_on_white(
    page: sync_api.Page, server: str, tmp_path: Path
) -> None:
    _loaded(page, server)
    # the first file decodes slowly, so the sample chosen after it is decoded first
    page.evaluate("""() => { const real = window.createImageBitmap.bind(window);
        window.createImageBitmap = async (blob, ...rest) => {
          if (blob.name === 'slow.png') await new Promise((r) => setTimeout(r, 1500));
          return real(blob, ...rest); }; }""")
    slow = tmp_path / "slow.png"
    Image.new("RGB", (40, 30), (0, 0, 255)).save(slow)
    page.set_input_files("#file-input", str(slow))
    page.click('.sample-button[data-name="Rocket"]')
    page.wait_for_timeout(2500)  # the slow decode has finished by now, and must have changed nothing
    assert page.locator("#image-info").inner_text().startswith("Rocket — ")
    assert page.locator('.sample-button[data-name="Rocket"]').get_attribute("aria-pressed") == "true"
    page.wait_for_function("document.querySelector('#recon-grid .original')?.alt.includes('Rocket')")

    # a red disc on a transparent ground: the mask canvas shows white around it, as the service sees it
    yy, xx = np.mgrid[0:64, 0:64]
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[(yy - 32) ** 2 + (xx - 32) ** 2 < 15**2] = (255, 0, 0, 255)
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    page.set_input_files("#file-input", str(tmp_path / "alpha.png"))
    page.wait_for_function("document.querySelector('#image-info').textContent.startsWith('alpha.png')")
    shot = _shot(page.locator("#mask-canvas"), tmp_path / "mask_alpha.png")
    corner = shot[: shot.shape[0] // 8, : shot.shape[1] // 8].reshape(-1, 3)
    assert corner.mean(axis=0).min() > 235, f"the transparent corner is not white: {corner.mean(axis=0)}"


def test_an_image_the_browser_cannot_decode_is_never_inpainted_as_the_last_one(
    page: sync_api.Page, server: str, tmp_path: Path
) -> None:
    _loaded(page, server)
    caption = page.locator("#inpaint-caption").inner_text()
    bad = tmp_path / "notimage.png"
    bad.write_bytes(b"these bytes are no image")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_function("document.querySelector('#image-info').textContent.includes('cannot decode')")
    assert "cannot decode" in page.locator("#mask-caption").inner_text()
    page.check('input[name="inpaint-mode"][value="ratio"]')
    page.click("#inpaint-run")
    page.wait_for_function("document.querySelector('#inpaint-msg').textContent.includes('cannot decode')")
    assert page.locator("#inpaint-caption").inner_text() == caption  # nothing was inpainted


def test_second_image_file_and_number_fields(page: sync_api.Page, server: str, tmp_path: Path) -> None:
    _loaded(page, server)
    Image.new("RGB", (32, 32), (0, 200, 0)).save(tmp_path / "green.png")
    assert page.locator("#interp-file").get_attribute("tabindex") == "-1"  # the button is the Tab stop
    with page.expect_file_chooser() as chooser:
        page.click("#interp-choose")
    chooser.value.set_files(str(tmp_path / "green.png"))
    assert page.locator("#interp-second").input_value() == "__file"
    assert page.locator("#interp-second option[value=__file]").inner_text() == "File: green.png"
    assert page.locator("#interp-b").get_attribute("src").startswith("blob:")
    page.select_option("#interp-second", "rocket.png")  # the end thumbnail follows the choice at once
    assert page.locator("#interp-b").get_attribute("src") == "/static/samples/rocket.png"

    page.fill("#traverse-dims", "0")  # out of the field's bounds: named, not run with every dimension
    page.click("#traverse-run")
    page.wait_for_function("document.querySelector('#traverse-msg').textContent.startsWith('Error')")
    assert "Dimensions" in page.locator("#traverse-msg").inner_text()
    page.fill("#traverse-dims", "")
    page.fill("#traverse-steps", "")  # empty: the default
    page.click("#traverse-run")
    page.wait_for_function("document.querySelectorAll('#traverse-grid img').length > 0")
    assert page.locator("#traverse-msg").inner_text().split(" dimensions × ")[1].startswith("7 values")


def test_the_content_security_policy_lets_the_playground_work(
    browser: sync_api.Browser, server: str, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # the policy enforced
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    blocked: list[str] = []
    page.on("console", lambda m: "Content Security Policy" in m.text and blocked.append(m.text))
    page.on("pageerror", lambda e: blocked.append(str(e)))
    try:
        page.goto(server + "/")  # locators only below: they need no string evaluation
        page.locator("#recon-grid .psnr[data-psnr]").nth(3).wait_for()
        page.locator("#token-caption", has_text="distinct").wait_for()
        page.click("#interp-run")
        page.locator("#interp-strip img").first.wait_for()
        page.check('input[name="inpaint-mode"][value="ratio"]')
        page.click("#inpaint-run")
        page.locator("#inpaint-caption", has_text="patches").wait_for()
        assert blocked == []
        page.screenshot(path=str(tmp_path / "csp.png"), full_page=True)
    finally:
        context.close()


def test_api_key_flow(page: sync_api.Page, keyed_server: str, tmp_path: Path) -> None:
    page.goto(keyed_server + "/")
    prompt = page.locator("#auth-prompt")
    prompt.wait_for(state="visible")
    assert "This server needs an API key." in prompt.inner_text()
    assert page.locator("#model-list").inner_text() == "Enter the API key to see the models."
    page.screenshot(path=str(tmp_path / "key_prompt.png"))

    page.fill("#api-key", "wrong")
    page.click("#key-form button[type=submit]")
    page.wait_for_function("document.querySelector('#status').textContent.includes('refused')")
    assert prompt.is_visible()

    page.fill("#api-key", API_KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#recon-grid .psnr[data-psnr]').length === 1")
    assert prompt.is_hidden()
    assert page.locator(".model-card").count() == 1
    # kept for the tab: a reload works without typing it again
    assert page.evaluate("sessionStorage.getItem('aeserve.apiKey')") == API_KEY
    page.reload()
    page.wait_for_function("document.querySelectorAll('#recon-grid .psnr[data-psnr]').length === 1")
    assert prompt.is_hidden()


def test_phone_viewport_accessible_and_without_horizontal_overflow(
    browser: sync_api.Browser, server: str, tmp_path: Path
) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=2,
        bypass_csp=True,
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        _loaded(page, server)
        page.wait_for_function("document.querySelector('#token-caption').textContent.includes('distinct')")
        page.click("#interp-run")
        page.wait_for_function("document.querySelectorAll('#interp-strip img').length > 0")
        page.click("#traverse-run")
        page.wait_for_function("document.querySelectorAll('#traverse-grid img').length > 0")
        widths = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth]")
        assert widths[0] <= 390 and widths[1] <= 390, f"horizontal overflow at 390 px: {widths}"
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        # every control has an accessible name, every image an alt
        unnamed = page.evaluate("""() =>
            [...document.querySelectorAll('input, select, button, canvas[tabindex]')]
            .filter(e => e.type !== 'hidden')
            .filter(e => !(e.labels?.length || e.getAttribute('aria-label')
                           || e.getAttribute('aria-labelledby')
                           || (e.tagName === 'BUTTON' && e.textContent.trim())))
            .map(e => e.id || e.outerHTML.slice(0, 60))""")
        assert unnamed == []
        assert page.evaluate("[...document.images].filter(i => !i.hasAttribute('alt')).length") == 0
        live = page.evaluate("[...document.querySelectorAll('[aria-live], [role=alert]')].map(e => e.id)")
        assert {"status", "auth-prompt", "reconstruct-msg", "tokens-msg", "inpaint-msg"} <= set(live)
    finally:
        context.close()


def test_the_api_docs_render_with_no_request_leaving_the_machine(
    server: str, browser: sync_api.Browser
) -> None:
    """/docs (Swagger UI) and /redoc load their scripts from this server (AESERVE_DOCS_ASSETS unset: the
    fastapi-offline package's copy), under their pages' own policies; every request for another host is
    refused and recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # the policies enforced
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    outside: list[str] = []

    def only_loopback(route: sync_api.Route) -> None:
        if route.request.url.startswith(server):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(server + "/docs")
    page.locator(".opblock-summary-path", has_text="/v1/models/{name}/reconstruct").first.wait_for()
    assert page.locator(".opblock").count() >= 20  # every route of the service, drawn by Swagger UI
    assert outside == []
    page.goto(server + "/redoc")
    page.locator("h2", has_text="Reconstruct an image").first.wait_for()  # an operation ReDoc drew
    # ReDoc's script asks for its attribution logo from its CDN; the page's Content-Security-Policy
    # (images from this server only) keeps the browser from sending that request at all
    assert outside == []
    context.close()
