"""The web page of ``tvstore serve`` in a real browser: Debian's Chromium driven by Playwright.

``make test`` installs Chromium (apt) and Playwright (pip); without them this
module fails rather than skips, so CI can never pass without looking at the page.
With ``TVSTORE_SCREENSHOT_DIR`` set, the pages are also saved there (the
README's screenshot is made that way).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from served import Served, base_env, make_tokens
from team_helpers import make_checkpoints

CHROMIUM = os.environ.get("TVSTORE_CHROMIUM", "/usr/bin/chromium")
RECIPE = "method: task_arithmetic\ninputs:\n  - {ref: ft0, weight: 1.0}\n  - {ref: ft1, weight: -0.5}\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("web")
    ck = make_checkpoints(tmp / "ck", count=2)
    s = Served("", base_env(f"sqlite:///{tmp / 'registry.db'}", str(tmp / "blobs"), {}), tmp)
    with s.registry() as reg:  # seeded in this process: the page, not the CLI, is under test here
        reg.init()
        reg.add_base("bert-tiny", ck.base)
        reg.push("ft0", ck.finetunes["ft0"], base="bert-tiny", meta={"task": "sst2"})
        reg.push("ft1", ck.finetunes["ft1"], base="bert-tiny", codec="quant:bits=4", meta={"task": "mnli"})
        reg.tag("ft1@1", "prod")
        reg.save_merge("sst2-minus-mnli", RECIPE)
    make_tokens(s)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail(f"Chromium not found at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


def _shoot(page, name: str) -> None:  # noqa: ANN001
    target = os.environ.get("TVSTORE_SCREENSHOT_DIR")
    if target:
        page.screenshot(path=str(Path(target) / name), full_page=True)


def test_the_pages_list_search_and_show_a_vector(site: Served, browser, tmp_path: Path) -> None:  # noqa: ANN001
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    response = page.goto(site.url + "/")
    assert response.status == 401 and page.locator("input[name=token]").count() == 1  # read scope required

    page.fill("input[name=token]", "tvs_wrong")
    page.click("button[type=submit]")
    assert page.locator(".error").inner_text() == "token not recognised by this server"

    page.fill("input[name=token]", site.tokens["reader"])
    page.click("button[type=submit]")
    page.wait_for_url(site.url + "/")
    rows = page.locator("#vectors tbody tr")
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())] == ["ft0", "ft1", "sst2-minus-mnli"]
    assert rows.nth(1).locator("td").nth(3).inner_text() == "quant"
    assert rows.nth(1).locator(".tag").inner_text() == "prod"
    _shoot(page, "server-list.png")

    page.fill("input[name=q]", "mnli")  # matches ft1's metadata and the merge's name
    page.click("form[action='/'] button")
    assert page.locator("#vectors tbody tr td:first-child").all_inner_texts() == ["ft1", "sst2-minus-mnli"]

    page.click("text=sst2-minus-mnli")
    page.wait_for_url("**/v/sst2-minus-mnli@1")
    assert page.locator("h2").inner_text() == "sst2-minus-mnli@1"
    assert "method: task_arithmetic" in page.locator("#recipe").inner_text()
    labels = page.locator("#lineage g.node text").all_text_contents()
    assert labels == ["sst2-minus-mnli@1", "ft0@1 x1", "base bert-tiny", "ft1@1 x-0.5", "base bert-tiny"]
    assert page.locator("#lineage line").count() == 4
    _shoot(page, "server-vector.png")

    page.goto(site.url + "/v/ft1@1")
    assert page.locator("#tensors tbody tr").count() == 10
    assert page.locator("#versions tbody tr td").first.inner_text() == "1"
    assert page.locator("#meta").inner_text() == "task\tmnli"
    page.screenshot(path=str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page.goto(site.url + "/v/..%2F..%2Fetc")
    assert page.locator(".error").inner_text().startswith("invalid reference '../../etc'")
    page.close()


def test_public_read_opens_the_pages_without_a_token(site: Served) -> None:
    public = Served("", site.env, site.workdir, dict(site.tokens))
    public.start("--public-read")
    try:
        page = httpx.get(public.url + "/", timeout=60)
        assert page.status_code == 200 and "sst2-minus-mnli" in page.text
        # reading is open; writing still needs a token
        refused = httpx.post(public.url + "/api/vectors", json={"pending": {"name": "x"}}, timeout=60)
        assert refused.status_code == 401
        assert refused.json()["error"] == "`tvstore push` needs a write token: pass --token or set TVSTORE_TOKEN"
    finally:
        public.stop()
