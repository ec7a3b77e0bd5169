"""The page (`serving/app/static`): self-contained assets, and the page at work in headless Chromium."""

from __future__ import annotations

import re
import shutil
import time

import pytest


def test_the_page_and_its_assets_are_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    texts = [page.text]
    for asset, content_type in (("/static/app.js", "javascript"), ("/static/app.css", "text/css")):
        response = client.get(asset)
        assert response.status_code == 200 and content_type in response.headers["content-type"]
        texts.append(response.text)
    for text in texts:
        assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", text), "no external resources"
        assert "http://" not in text and "https://" not in text
    assert re.search(r'<label for="audio-file">', page.text) and 'aria-live="polite"' in page.text


def _chromium() -> str:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "Debian's chromium is not installed; `make test` installs it (make system-packages)"
    return executable


def test_page_in_headless_chromium(server, demo_audio_files, catalog, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    mp3 = demo_audio_files[12]
    outside_requests, console_errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
            page.on(
                "request",
                lambda r: (
                    r.url.startswith(("http:", "https:"))
                    and not r.url.startswith(server.url)
                    and outside_requests.append(r.url)
                ),
            )
            page.goto(server.url + "/")
            expect(page.locator("#track-select option")).to_have_count(len(catalog))
            # Upload a demo MP3 and wait for the results.
            page.get_by_label("Audio file").set_input_files(str(mp3))
            page.get_by_role("button", name="Recommend for this file").click()
            expect(page.get_by_role("status")).to_contain_text("songs similar to", timeout=120_000)
            expect(page.get_by_role("status")).to_contain_text(re.compile(r"^Found \d+ songs"))
            # As many as stage 1 lets through (the smoke-trained tagger decides), all of them shown.
            found = int(re.search(r"Found (\d+) songs", page.get_by_role("status").inner_text())[1])
            assert 3 <= found <= 10
            expect(page.locator("#recommendations li")).to_have_count(found)
            # The page says which exported models tagged the query and ranked the results.
            expect(page.locator("#made-by")).to_contain_text("Tags by crnn v1 (crnn, trained on ")
            expect(page.locator("#made-by")).to_contain_text(
                "Ranked by short_chunk_res v1 (short_chunk_res, trained on "
            )
            sources = page.eval_on_selector_all("#recommendations audio", "els => els.map(e => e.getAttribute('src'))")
            assert len(sources) == found and all(re.fullmatch(r"/tracks/[^/]+/audio", s) for s in sources)
            assert f"/tracks/{mp3.stem}/audio" not in sources
            bars = page.locator("#tag-chart li")
            tags = len(catalog.vocabulary)
            assert bars.count() == tags and all(bars.nth(i).get_attribute("aria-label") for i in range(tags))
            assert page.locator("#tag-chart .fill").first.evaluate("e => e.getBoundingClientRect().width") > 0
            # A player really loads its audio (range requests to the service).
            player = page.locator("#recommendations audio").first
            player.evaluate("a => { a.preload = 'metadata'; a.load(); }")
            deadline = time.monotonic() + 30
            while not player.evaluate("a => a.duration > 14") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert player.evaluate("a => a.duration") == pytest.approx(15, abs=0.5)
            page.screenshot(path=str(tmp_path / "app_page.png"), full_page=True)
            # Keyboard only: pick a catalog track and press Enter on the button.
            track = catalog.tracks[3]
            page.get_by_label("Track", exact=True).select_option(track.track_id)
            page.get_by_role("button", name="Recommend for this track").focus()
            page.keyboard.press("Enter")
            expect(page.locator("#query-summary")).to_contain_text(f"Songs similar to {track.title}")
            assert console_errors == []
            # Errors are announced, not thrown.
            page.get_by_label("Audio file").set_input_files(
                files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not audio at all\n" * 20}]
            )
            page.get_by_role("button", name="Recommend for this file").click()
            expect(page.get_by_role("alert")).to_contain_text("decode_error")
        finally:
            browser.close()
    assert outside_requests == [] and all("status of 415" in e for e in console_errors)
    assert (tmp_path / "app_page.png").stat().st_size > 10_000


def test_the_catalog_map_in_headless_chromium(server, demo_audio_files, catalog, tmp_path):
    """Points drawn, hover text, a click plays and recommends, an upload's point and its lines appear."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            console_errors = []
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
            page.goto(server.url + "/")
            expect(page.locator("#map-points")).to_have_attribute("data-points", str(len(catalog)))
            # Drawn: pixels of the points' colours on the canvas, not the background alone.
            coloured = page.evaluate(
                """() => { const c = document.getElementById('map-points');
                           const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                           let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""
            )
            assert coloured >= len(catalog) * 16
            legend = page.locator("#map-legend li")
            assert legend.count() >= 1 and "(" in legend.first.inner_text()
            # Hover: the pointed-at track's title and artist.
            index = 5
            x, y = page.evaluate(f"window.catalogMap.clientPoint({index})")
            label = page.evaluate(f"window.catalogMap.data.labels[{index}]")
            track_id = page.evaluate(f"window.catalogMap.data.track_ids[{index}]")
            page.mouse.move(x, y)
            expect(page.locator("#map-tooltip")).to_be_visible()
            expect(page.locator("#map-tooltip")).to_contain_text(label)
            # Click: it plays, and its recommendations come.
            page.mouse.click(x, y)
            expect(page.get_by_role("status").first).to_contain_text(f"songs similar to {label}", timeout=60_000)
            assert page.locator("#map-player").get_attribute("src") == f"/tracks/{track_id}/audio"
            expect(page.locator("#map-player")).to_be_visible()
            deadline = time.monotonic() + 30
            while (
                not page.evaluate("document.getElementById('map-player').currentTime > 0")
                and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            assert page.evaluate("document.getElementById('map-player').readyState") >= 1
            # A catalog track's own point is the query's.
            own = page.evaluate(f"[window.catalogMap.data.x[{index}], window.catalogMap.data.y[{index}]]")
            query = [float(v) for v in page.locator("#map-overlay").get_attribute("data-query").split(",")]
            assert query == pytest.approx(own, abs=1e-3)
            # An upload: its point among its answers, a line to each.
            page.get_by_label("Audio file").set_input_files(str(demo_audio_files[2]))
            page.get_by_role("button", name="Recommend for this file").click()
            expect(page.locator("#recommendations li").first).to_be_visible(timeout=120_000)
            expect(page.get_by_role("status").first).to_contain_text(demo_audio_files[2].name, timeout=120_000)
            found = page.locator("#recommendations li").count()
            expect(page.locator("#map-overlay")).to_have_attribute("data-answers", str(found))
            query = [float(v) for v in page.locator("#map-overlay").get_attribute("data-query").split(",")]
            assert all(0.0 <= value <= 1.0 for value in query)
            page.locator("#map-section").screenshot(path=str(tmp_path / "catalog_map.png"))
            assert console_errors == []
        finally:
            browser.close()
    assert (tmp_path / "catalog_map.png").stat().st_size > 5_000
    print(f"screenshot: {tmp_path / 'catalog_map.png'}")
