"""The report page in a real headless browser (Debian's chromium driven by Playwright)."""

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from traj.cli.app import app

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_report_loads_without_console_errors_and_renders_every_image(tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: the README's test command installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(SAMPLE / "digits-cnn.zarr"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]  # Playwright gives every launch a fresh profile
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((out / "report.html").as_uri())
        rendered = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        title = page.title()
        browser.close()
    assert errors == []
    assert len(rendered) == len(list(out.glob("*.png"))) >= 8 and all(rendered)
    assert title == "traj report: digits-cnn.zarr"
