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
