"""The real app in a real browser (Debian chromium driven by Playwright), and every API endpoint via gradio_client."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from app_server import ROOT, AppServer
from indexer.sources import BUILTIN_IMAGES

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with AppServer(tmp_path_factory.mktemp("app")) as app:
        yield app


@pytest.fixture(scope="module")
def images(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("uploads")
    paths = {}
    for name, array in photos.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray(array).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def page(server):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (the README's test command does it)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server.url)
        page.get_by_role("tab", name="Classification").wait_for()
        yield page
        browser.close()


def _open_tab(page, name):
    page.get_by_role("tab", name=name).click()
    return page.locator(".tabitem:visible")


def test_browser_classification(page, images):
    tab = _open_tab(page, "Classification")
    tab.locator("input[type=file]").first.set_input_files(str(images["coffee"]))
    tab.get_by_role("button", name="Classify").click()
    tab.get_by_text("espresso").first.wait_for(timeout=60_000)
    page.wait_for_timeout(800)  # let the result fade in before the screenshot
    page.screenshot(path=str(ARTIFACTS / "classification.png"), full_page=True)


def test_browser_pairwise(page, images):
    tab = _open_tab(page, "Pairwise similarity")
    inputs = tab.locator("input[type=file]")
    inputs.nth(0).set_input_files(str(images["chelsea"]))
    tab.locator("input[type=file]").last.set_input_files(str(images["chelsea"]))
    tab.get_by_role("button", name="Compare", exact=True).click()
    tab.get_by_text("✔ Match").first.wait_for(timeout=60_000)
    tab.get_by_text("What was compared").first.wait_for()
    page.wait_for_timeout(800)  # let the result fade in before the screenshot
    page.screenshot(path=str(ARTIFACTS / "pairwise.png"), full_page=True)


def test_browser_bad_upload_shows_a_clear_message(page, images, tmp_path):
    """An upload the app cannot read shows the library's message in the page, not a bare error or a traceback."""
    from bad_inputs import HEIC_HEADER

    heic = tmp_path / "iphone.heic"
    heic.write_bytes(HEIC_HEADER)
    tab = _open_tab(page, "Pairwise similarity")
    tab.locator("input[type=file]").nth(0).set_input_files(str(heic))
    tab.locator("input[type=file]").last.set_input_files(str(images["coffee"]))
    tab.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text("'iphone.heic' is a HEIC file").first.wait_for(timeout=60_000)
    assert "Traceback" not in page.content()
    page.screenshot(path=str(ARTIFACTS / "bad-upload.png"), full_page=True)


def test_browser_gallery(page, images):
    tab = _open_tab(page, "Gallery search")
    tab.get_by_text("built-in gallery").first.wait_for()
    tab.locator("input[type=file]").first.set_input_files(str(images["chelsea"]))
    tab.get_by_role("button", name="Search").click()
    tab.get_by_text("cat · 1.000").first.wait_for(timeout=60_000)  # the built-in gallery holds this very photo
    page.wait_for_timeout(800)  # let the result fade in before the screenshot
    page.screenshot(path=str(ARTIFACTS / "gallery.png"), full_page=True)


def _examples(tab, page):
    return tab.locator(".block", has=page.get_by_text("one click shows the answer"))


def test_browser_examples_answer_with_one_click_in_every_tab(page):
    tab = _open_tab(page, "Classification")
    _examples(tab, page).locator("button.gallery-item").first.click()  # coffee.jpg
    tab.get_by_text("espresso").first.wait_for(timeout=60_000)
    tab = _open_tab(page, "Pairwise similarity")
    _examples(tab, page).locator("tbody tr").first.click()  # two views of the same cat, general mode
    tab.get_by_text("✔ Match").first.wait_for(timeout=60_000)
    tab = _open_tab(page, "Gallery search")
    _examples(tab, page).locator("button.gallery-item").first.click()
    tab.get_by_text("nearest to the image").first.wait_for(timeout=60_000)
    assert tab.locator(".tabitem:visible .thumbnail-item img, .thumbnail-item img").count() > 0


def test_browser_crops_are_shown_whole_side_by_side(page):
    tab = _open_tab(page, "Pairwise similarity")
    tab.get_by_role("radio", name="Face").check()
    inputs = tab.locator("input[type=file]")
    inputs.nth(0).set_input_files(str(ROOT / "assets" / "examples" / "face-a.jpg"))
    inputs.nth(1).set_input_files(str(ROOT / "assets" / "examples" / "face-b.jpg"))
    tab.get_by_role("button", name="Compare", exact=True).click()
    tab.get_by_text("(face mode").first.wait_for(timeout=60_000)
    crops = tab.locator(".whole-crops")
    crops.locator("img").nth(1).wait_for()
    page.wait_for_timeout(500)
    box = crops.bounding_box()
    images = [crops.locator("img").nth(i).bounding_box() for i in range(crops.locator("img").count())]
    assert len(images) == 2
    for image in images:  # every crop entirely inside the visible gallery, not clipped to a strip
        assert box["y"] <= image["y"] and image["y"] + image["height"] <= box["y"] + box["height"] + 1
        assert 100 <= image["height"] <= 300 and abs(image["width"] - image["height"]) < 2  # square crops, unstretched
    assert abs(images[0]["y"] - images[1]["y"]) < 1 and images[0]["x"] < images[1]["x"]  # side by side
    assert box["height"] < images[0]["height"] + 60  # the gallery fits its crops (no fixed-height empty box)
    crops.screenshot(path=str(ARTIFACTS / "crops-whole.png"))


def test_browser_gallery_can_be_browsed_before_any_search(page):
    tab = _open_tab(page, "Gallery search")
    tab.get_by_role("button", name="Show gallery items").click()
    tab.get_by_text("gallery items at random").first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    captions = tab.locator(".caption-label").all_inner_texts()
    assert len(captions) == 8 and all(" · " not in caption for caption in captions)  # labels, no scores: no search ran
    assert set(captions) <= set(BUILTIN_IMAGES.values())


def test_browser_additions_are_invisible_to_another_visitor(page, server, images):
    from playwright.sync_api import sync_playwright  # noqa: F401 the page fixture's browser is reused

    tab = _open_tab(page, "Gallery search")
    tab.get_by_text("Add to gallery").first.click()
    tab.locator("input[type=file][multiple]").set_input_files(str(images["astronaut"]))
    tab.get_by_label("Label (optional)").fill("only-mine")
    tab.get_by_role("button", name="Add to gallery", exact=True).click()
    tab.get_by_text("only you see them").first.wait_for(timeout=60_000)
    tab.locator("input[type=file]").first.set_input_files(str(images["astronaut"]))
    tab.get_by_role("button", name="Search", exact=True).click()
    tab.get_by_text("only-mine · 1.000 · yours").first.wait_for(timeout=60_000)
    other = page.context.browser.new_context().new_page()  # a second visitor: a fresh browser context
    other.goto(server.url)
    other_tab = _open_tab(other, "Gallery search")
    other_tab.locator("input[type=file]").first.set_input_files(str(images["astronaut"]))
    other_tab.get_by_role("button", name="Search", exact=True).click()
    other_tab.get_by_text("nearest to the image").first.wait_for(timeout=60_000)
    other_tab.get_by_text("person · 1.000").first.wait_for()  # the built-in gallery's own astronaut
    assert other_tab.get_by_text("only-mine").count() == 0
    other.context.close()


def test_api_endpoints_via_gradio_client(server, images):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    labels, answered_by = client.predict(handle_file(str(images["coffee"])), "head", "", "", 3, api_name="/classify")
    assert labels["label"] == "espresso" and len(labels["confidences"]) == 3
    similarity, distance, verdict, explanation, crops = client.predict(  # threshold omitted: the mode's default
        image_a=handle_file(str(images["chelsea"])), image_b=handle_file(str(images["chelsea"])), mode="general", api_name="/compare")
    assert similarity == pytest.approx(1.0, abs=1e-3) and "Match" in verdict and len(crops) == 2
    *_, verdict, explanation, crops = client.predict(
        [handle_file(str(images["chelsea"])), handle_file(str(images["coffee"]))], handle_file(str(images["chelsea"])),
        "general", "mean", 0.2, api_name="/enrol_and_compare")
    assert "mean over 2 references" in explanation and "0.200 (set by you)" in explanation and len(crops) == 3
    results, summary, shown = client.predict(handle_file(str(images["coffee"])), "", 3, [], api_name="/search")
    assert len(results) == 3 and results[0]["caption"].startswith("coffee cup · 1.000")
    assert [hit["score"] for hit in shown] == sorted((hit["score"] for hit in shown), reverse=True)
    _, again = client.predict(shown[1]["id"], 2, [], api_name="/similar")
    assert again[0]["id"] == shown[1]["id"] and len(again) == 2
    message, _ = client.predict([handle_file(str(images["rocket"]))], "launch", api_name="/add_to_gallery")
    assert "Added 1" in message
    _, _, hits = client.predict(handle_file(str(images["rocket"])), "", 1, ["launch"], api_name="/search")
    assert hits[0]["label"] == "launch" and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
