"""traj watch --html in a real headless browser (Debian's chromium driven by Playwright, as the report's test)."""

import pytest
from typer.testing import CliRunner

from tests.cli.browser import browser_page, require_chromium
from tests.live.test_watch import _train
from traj.cli.app import app
from traj.store.lock import WriterLock


@pytest.mark.slow
def test_watch_page_loads_refreshes_and_shows_its_figures_without_console_errors(tmp_path):
    require_chromium()
    path, page_dir = tmp_path / "run.zarr", tmp_path / "page"
    _train(path, 30)
    lock = WriterLock(path)  # a run still writing: the page refreshes itself
    lock.acquire()
    try:
        result = CliRunner().invoke(app, ["watch", str(path), "--once", "--interval", "1", "--html", str(page_dir)])
    finally:
        lock.release()
    assert result.exit_code == 0, result.output
    assert "http-equiv=refresh content=1" in (page_dir / "index.html").read_text()
    errors: list[str] = []
    loads: list[str] = []
    with browser_page(errors) as page:
        page.on("load", lambda: loads.append(page.url))
        page.goto((page_dir / "index.html").as_uri())
        page.wait_for_timeout(3500)  # the meta refresh of 1 s reloads it at least twice
        page.wait_for_load_state("load")
        rendered = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
        text = page.inner_text("body")
    assert errors == []
    assert len(loads) >= 2
    assert rendered == [["live.png", True], ["spectrum.png", True], ["transitions.png", True]]
    assert "31 snapshot(s)" in text and "leading_modulus" in text
