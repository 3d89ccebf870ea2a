"""The web UI in a real browser, against the real service with the embedded model.

One local Ray Serve for the module runs the API at /serve and the UI as a second Serve application at
/ui, exactly as the chart's ``ui.enabled`` deploys it, plus a second UI at /ui-down whose API is a
closed port, and a UI at /ui-keyed (holding no key itself) in front of a copy of the API at /keyed
that needs an API key. Debian's chromium (headless, driven by Playwright; never a downloaded browser) opens the
pages. Screenshots go to ``<repo>/artifacts/`` (git-ignored) for a human to look at.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.ui_client import GenerationRequest, fetch_info, generate
from tests.support.serve_cluster import REPO_ROOT, api_application, fast_embedded_args, free_port, local_serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "artifacts"
MAX_PROMPT_CHARS = 200  # small, so the over-limit case is quick to type
UI_TIMEOUT_MS = 60_000  # generous: two cores are shared with other test runs

API_KEY = "ui-test-key-7d2a"  # not a secret: a throwaway value for this module's cluster only

pytestmark = [pytest.mark.ray, pytest.mark.browser]


def needs_chromium(test):
    """Skip without Debian's chromium on a developer machine; in CI (CI set) that is a failure, not a skip."""
    if Path(CHROMIUM).exists():
        return test
    if os.environ.get("CI"):
        return pytest.mark.usefixtures("_chromium_missing_in_ci")(test)
    return pytest.mark.skip(reason=f"{CHROMIUM} not installed (ci/test.sh installs Debian's chromium)")(test)


@pytest.fixture
def _chromium_missing_in_ci():
    pytest.fail(f"{CHROMIUM} is missing in CI: ci/test.sh should have installed Debian's chromium")


IMAGE_DECODED = """() => {
  const img = document.querySelector('#result-image img');
  return img !== null && img.complete && img.naturalWidth > 0;
}"""


@pytest.fixture(scope="module")
def service():
    down_url = f"http://127.0.0.1:{free_port()}/serve"  # nothing listens there
    keyed_api = api_application(
        fast_embedded_args(api_key_env="SDXL_UI_TEST_KEY", warmup=False),
        {"ray_actor_options": {"num_cpus": 0.3}},
        name="keyed",
        route_prefix="/keyed",
    )
    ui_apps = [
        {
            "name": "ui",
            "route_prefix": "/ui",
            "import_path": "app.ui:build_ui_app",
            "args": {"api_url": "{root}/serve"},
        },
        keyed_api,
        {
            "name": "ui-keyed",
            "route_prefix": "/ui-keyed",
            "import_path": "app.ui:build_ui_app",
            "args": {"api_url": "{root}/keyed"},
        },
        # A copy of the API that takes uploads of at most 64 KiB, and a UI in front of it.
        api_application(
            fast_embedded_args(max_upload_bytes=64 * 1024, warmup=False),
            {"ray_actor_options": {"num_cpus": 0.3}},
            name="small",
            route_prefix="/small",
        ),
        {
            "name": "ui-small",
            "route_prefix": "/ui-small",
            "import_path": "app.ui:build_ui_app",
            "args": {"api_url": "{root}/small"},
        },
        {
            "name": "ui-down",
            "route_prefix": "/ui-down",
            "import_path": "app.ui:build_ui_app",
            "args": {"api_url": down_url, "request_timeout_s": 10},
        },
    ]
    with local_serve(
        fast_embedded_args(max_prompt_chars=MAX_PROMPT_CHARS), extra_apps=ui_apps, env={"SDXL_UI_TEST_KEY": API_KEY}
    ) as url:
        url.down_url = down_url
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, service):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.failed = []  # (status, url) of every failed request the page made
    page.requested = []
    page.on("request", lambda r: page.requested.append(r.url))
    page.on("response", lambda r: r.status >= 400 and page.failed.append((r.status, r.url)))
    # ERR_ABORTED is Gradio closing its own event stream once a job is done, not a failure.
    page.on("requestfailed", lambda r: r.failure != "net::ERR_ABORTED" and page.failed.append((r.failure, r.url)))
    yield page
    context.close()


def _screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"\nUI screenshot: {path}")
    return path


def _open(page, url: str) -> None:
    page.goto(url)
    # The page's load event has made its round trip to the server (so the buttons are wired) once the
    # service line no longer says "connecting".
    page.wait_for_function(
        "() => { const el = document.querySelector('#service-info');"
        " return el && el.innerText.includes('Service:') && !el.innerText.includes('connecting'); }",
        timeout=UI_TIMEOUT_MS,
    )


def _value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()


def _generate(page, prompt: str) -> None:
    page.fill("#prompt textarea", prompt)
    page.click("#generate")


def _wait_for_result(page) -> tuple[int, str]:
    """Wait for a decoded image and a shown seed; return (seed, image URL)."""
    page.wait_for_function(IMAGE_DECODED, timeout=UI_TIMEOUT_MS)
    page.wait_for_function(
        "() => /^[0-9]+$/.test((document.querySelector('#seed-used textarea, #seed-used input') || {}).value || '')",
        timeout=UI_TIMEOUT_MS,
    )
    return int(_value(page, "seed-used")), page.locator("#result-image img").get_attribute("src")


# ---------------------------------------------------------------------------------------------
# The client against the real service (no browser needed)


def test_client_reads_sizes_limits_and_defaults_from_the_real_info(service):
    info = fetch_info(service)
    assert info.image_sizes == ("128x96", "96x128")
    assert (info.default_steps, info.max_steps, info.max_prompt_chars) == (4, 50, MAX_PROMPT_CHARS)
    assert info.model_id == "embedded" and info.backend == "cpu"


def test_the_same_seed_gives_the_same_image_and_another_seed_does_not(service):
    request = GenerationRequest(prompt="a lighthouse at dusk", seed=31337, steps=3, size="96x128", output_format="png")
    first, again = generate(service, request), generate(service, request)
    other = generate(service, GenerationRequest(**{**request.__dict__, "seed": 31338}))
    assert first.seed == again.seed == 31337 and first.size == "96x128"
    assert first.image == again.image
    assert other.image != first.image


def test_behind_an_ingress_the_page_links_to_its_public_prefixed_url(service):
    # nginx-ingress passes /ui/... unchanged and adds X-Forwarded-*: Gradio must build asset and API
    # URLs from the public host and the /ui prefix, or the page loads blank behind the Ingress.
    import httpx

    headers = {"X-Forwarded-Host": "sdxl.example.com", "X-Forwarded-Proto": "https"}
    config = httpx.get(f"{service.root}/ui/config", headers=headers, timeout=30).json()
    assert config["root"] == "https://sdxl.example.com/ui"
    page = httpx.get(f"{service.root}/ui/", headers=headers, timeout=30)
    assert page.status_code == 200 and "https://sdxl.example.com/ui" in page.text


# ---------------------------------------------------------------------------------------------
# The page


@needs_chromium
def test_page_generates_an_image_and_shows_the_seed_and_time(page, service):
    _open(page, f"{service.root}/ui/")
    # The controls follow /info once the page has loaded.
    assert "embedded" in page.inner_text("#service-info")
    assert page.locator("#size input").first.input_value() == "128x96"
    _generate(page, "an astronaut is dancing on green grass, sunlit")
    seed, src = _wait_for_result(page)
    _screenshot(page, "ui-generate.png")  # before the assertions, so a failing run leaves one too

    assert 0 <= seed <= 2**32 - 1
    # 128x96 is the first configured size, so the default: the decoded image is that wide and that high.
    natural = page.evaluate(
        "() => [document.querySelector('#result-image img').naturalWidth, "
        "document.querySelector('#result-image img').naturalHeight]"
    )
    assert natural == [128, 96]
    assert re.fullmatch(r"[0-9]+\.[0-9]{2} s", _value(page, "generation-time"))
    assert f"seed {seed}" in page.inner_text("#status")
    # Under the /ui route prefix every asset and API call of the page must resolve (Gradio's root_path).
    assert "/ui/" in src
    assert page.failed == []
    # Nothing is fetched from anywhere but the service (no CDN, fonts or analytics): air-gapped clusters work.
    hosts = {urlsplit(url).netloc for url in page.requested if not url.startswith(("data:", "blob:"))}
    assert hosts == {urlsplit(service.root).netloc}


@needs_chromium
def test_reproduce_repeats_the_last_image_byte_for_byte_even_after_an_error(page, service):
    _open(page, f"{service.root}/ui/")
    _generate(page, "a red fox in the snow")
    seed, first_src = _wait_for_result(page)
    first_bytes = page.request.get(first_src).body()
    # A failed attempt in between clears the image but not what "Reproduce" repeats.
    _generate(page, "x" * (MAX_PROMPT_CHARS + 1))
    page.wait_for_selector("#status .ui-error", timeout=UI_TIMEOUT_MS)
    assert page.locator("#result-image img").count() == 0

    page.click("#reproduce")
    page.wait_for_function(
        "(old) => { const img = document.querySelector('#result-image img');"
        " return img && img.getAttribute('src') !== old && img.complete && img.naturalWidth > 0; }",
        arg=first_src,
        timeout=UI_TIMEOUT_MS,
    )
    again_seed, again_src = _wait_for_result(page)

    assert again_seed == seed
    assert page.request.get(again_src).body() == first_bytes
    # The seed controls now show the pinned seed, so the user sees what was repeated.
    assert _value(page, "seed") == str(seed)
    assert not page.locator("#random-seed input").is_checked()


@needs_chromium
def test_a_prompt_over_the_limit_shows_the_api_message_and_no_image(page, service):
    _open(page, f"{service.root}/ui/")
    _generate(page, "x" * (MAX_PROMPT_CHARS + 1))
    page.wait_for_selector("#status .ui-error", timeout=UI_TIMEOUT_MS)
    _screenshot(page, "ui-error.png")

    message = page.inner_text("#status")
    assert "HTTP 400" in message
    assert f"at most {MAX_PROMPT_CHARS} characters" in message
    assert page.locator("#result-image img").count() == 0
    assert _value(page, "seed-used") == ""


@needs_chromium
def test_an_unreachable_api_is_reported_on_load_and_on_generate(page, service):
    _open(page, f"{service.root}/ui-down/")
    page.wait_for_selector("#status .ui-error", timeout=UI_TIMEOUT_MS)
    on_load = page.inner_text("#status")
    assert "settings" in on_load and "unreachable" in on_load

    _generate(page, "a quiet harbour")
    # The generation error replaces the load error (it does not mention the settings).
    page.wait_for_function(
        "() => { const t = document.querySelector('#status').innerText;"
        " return t.includes('unreachable') && !t.includes('settings'); }",
        timeout=UI_TIMEOUT_MS,
    )
    _screenshot(page, "ui-unreachable.png")
    assert service.down_url in page.inner_text("#status")
    assert page.locator("#result-image img").count() == 0


@needs_chromium
def test_a_keyed_api_gets_each_visitors_key_and_the_page_holds_none(page, service):
    _open(page, f"{service.root}/ui-keyed/")
    key_box = page.locator("#api-key input")
    assert key_box.is_visible() and key_box.get_attribute("type") == "password"

    _generate(page, "a locked door")
    page.wait_for_selector("#status .ui-error", timeout=UI_TIMEOUT_MS)
    assert "needs an API key" in page.inner_text("#status")

    key_box.fill("not-the-key")
    page.click("#generate")
    page.wait_for_function(
        "() => document.querySelector('#status').innerText.includes('refused this API key')", timeout=UI_TIMEOUT_MS
    )
    assert page.locator("#result-image img").count() == 0

    key_box.fill(API_KEY)
    page.click("#generate")
    seed, _ = _wait_for_result(page)
    _screenshot(page, "ui-keyed.png")
    assert f"seed {seed}" in page.inner_text("#status")


@needs_chromium
def test_an_open_api_shows_no_key_field(page, service):
    _open(page, f"{service.root}/ui/")
    assert not page.locator("#api-key input").is_visible()


def _upload_to_editor(page, path: Path) -> None:
    page.click("#edit-section .label-wrap")
    # The accordion has opened once the editor's own upload button shows.
    page.wait_for_selector("#edit-image button[aria-label='Upload']", state="visible", timeout=UI_TIMEOUT_MS)
    page.set_input_files("#edit-image input[type=file]", str(path))
    # The editor has put the picture on its canvas once it offers to undo that.
    page.wait_for_selector("#edit-image button[aria-label='Undo']:not([disabled])", timeout=UI_TIMEOUT_MS)


def _edit(page) -> None:
    page.click("#edit")
    page.wait_for_function(
        "() => document.querySelector('#result-image img') || document.querySelector('#status .ui-error')",
        timeout=UI_TIMEOUT_MS,
    )


def _paint_across_the_middle(page) -> None:
    # The topmost of the editor's canvases takes the strokes; the brush is the default tool.
    box = page.locator("#edit-image canvas").last.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 40, y)
    page.mouse.down()
    page.mouse.move(x + 40, y + 10, steps=20)
    page.mouse.up()


def _fixed_seed(page, seed: int) -> None:
    page.locator("#random-seed input").uncheck()
    page.fill("#seed input", str(seed))


def _noise_png(path: Path, size: tuple[int, int]) -> Path:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(3).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@needs_chromium
def test_edit_mode_uploads_an_image_and_the_painted_mask_changes_what_comes_back(page, service, tmp_path):
    _open(page, f"{service.root}/ui/")
    _upload_to_editor(page, _noise_png(tmp_path / "input.png", (160, 120)))
    page.fill("#prompt textarea", "a lighthouse at dusk")
    _fixed_seed(page, 4242)
    _edit(page)  # nothing painted: the whole image is re-drawn (img2img)
    assert page.locator("#status .ui-error").count() == 0, page.inner_text("#status")
    seed, whole_src = _wait_for_result(page)
    assert seed == 4242
    natural = page.evaluate(
        "() => [document.querySelector('#result-image img').naturalWidth, "
        "document.querySelector('#result-image img').naturalHeight]"
    )
    assert natural == [128, 96]  # the service's default size: the upload was scaled and centre-cropped

    _paint_across_the_middle(page)
    page.click("#edit")  # the same seed and settings, now with a mask: inpainting
    page.wait_for_function(
        "(old) => { const img = document.querySelector('#result-image img');"
        " return img && img.getAttribute('src') !== old && img.complete && img.naturalWidth > 0; }",
        arg=whole_src,
        timeout=UI_TIMEOUT_MS,
    )
    _, masked_src = _wait_for_result(page)
    _screenshot(page, "ui-edit.png")
    assert page.request.get(masked_src).body() != page.request.get(whole_src).body()


@needs_chromium
def test_an_upload_over_the_services_limit_explains_itself(page, service, tmp_path):
    _open(page, f"{service.root}/ui-small/")
    _upload_to_editor(page, _noise_png(tmp_path / "large.png", (256, 256)))  # ~190 KB of noise > 64 KiB
    page.fill("#prompt textarea", "a lighthouse at dusk")
    _edit(page)
    message = page.inner_text("#status")
    assert "too large for the service" in message and "413" in message
    assert page.locator("#result-image img").count() == 0
