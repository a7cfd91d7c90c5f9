"""The report page in a real headless browser (Debian's chromium driven by Playwright)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.cli.browser import browser_page, require_chromium
from traj.cli.app import app

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.mark.slow
def test_report_loads_without_console_errors_and_renders_every_image(tmp_path):
    require_chromium()
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(SAMPLE / "digits-cnn.zarr"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    errors: list[str] = []
    with browser_page(errors) as page:
        page.goto((out / "report.html").as_uri())
        rendered = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        title = page.title()
    assert errors == []
    assert len(rendered) == len(list(out.glob("*.png"))) >= 8 and all(rendered)
    assert title == "traj report: digits-cnn.zarr"
