"""Attributes are data, never markup (issue 12): store text reaches the terminal, report.md and the
figures as the text it is. Before the fix ``[/]`` in a layer name crashed ``traj info`` (rich
MarkupError), ``[link=...]`` became a live hyperlink, ESC/OSC sequences reached the terminal, and
``$\\undefined{$`` crashed ``info --out`` (matplotlib mathtext)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from tests.conftest import write_store
from traj.cli import _common
from traj.cli.app import app
from traj.display import markdown, markup, mathtext, printable

runner = CliRunner()

HOSTILE_NAMES = [
    "a[/]b",
    "[link=https://evil.example]click[/link]",
    "t\x1b]0;pwned\x07itle",          # OSC 0: window title
    "c\x1b]52;c;ZXZpbA==\x07lip",      # OSC 52: clipboard
    "cls\x1b[2J\x1b[H",                # CSI: clear screen
    "$\\undefined{$",                  # mathtext that raises
    "_hidden",                         # matplotlib hides legend labels starting with "_"
    "bidi\u202eevil",                  # right-to-left override
    "p|i<b>pe&amp;*x*",                # Markdown and HTML specials
]


def test_printable_escapes_every_control_character():
    assert printable("a\x1b]0;t\x07b") == "a\\x1b]0;t\\x07b"
    assert printable("line\nbreak\ttab\r") == "line\\nbreak\\ttab\\r"
    assert printable("c1\x9bx\x7f") == "c1\\x9bx\\x7f"
    assert printable("rtl\u202eltr\u2066\u2028") == "rtl\\u202eltr\\u2066\\u2028"
    assert printable("ünïcödé ‖θ‖ λ") == "ünïcödé ‖θ‖ λ"  # printable text is left alone
    assert "\n" not in printable("\n".join(HOSTILE_NAMES))


def test_markup_prints_as_itself():
    from rich.console import Console

    console = Console(record=True, width=200, force_terminal=True, color_system="truecolor")
    for name in HOSTILE_NAMES:
        console.print(f"[bold]{markup(name)}[/bold]")
    text = console.export_text()
    assert "a[/]b" in text and "[link=https://evil.example]click[/link]" in text
    raw = console.export_text(styles=True)
    assert "\x1b]" not in raw and "\x07" not in raw  # no OSC (title, clipboard, hyperlink), no bell


def test_markdown_escapes_html_and_markdown():
    assert markdown("p|i<b>pe&amp;") == "p\\|i&lt;b&gt;pe&amp;amp;"
    assert markdown("*x* _y_ `z` [l](u) ![i](s) ~s~ $m$") == "\\*x\\* \\_y\\_ \\`z\\` \\[l\\](u) !\\[i\\](s) \\~s\\~ \\$m\\$"
    assert markdown("# h", block=True) == "\\# h"
    assert markdown("12. item", block=True) == "12\\. item"
    assert markdown("0.5 and 1.5", block=True) == "0.5 and 1.5"
    assert markdown("    code", block=True) == "&#32;" * 4 + "code"


def test_mathtext_never_parses():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.subplots()
    for name in HOSTILE_NAMES:
        ax.plot([0, 1], [0, 1], label=mathtext(name))
    ax.set_title(mathtext("$\\undefined{$"))
    ax.legend()
    fig.savefig(io.BytesIO(), format="png")
    assert [t.get_text() for t in ax.get_legend().get_texts()][6] == " _hidden"
    raw = Figure()
    raw.text(0, 0, "$\\undefined{$")
    with pytest.raises(ValueError):  # the original failure, unescaped
        raw.savefig(io.BytesIO(), format="png")


@pytest.fixture
def hostile_store(tmp_path):
    from traj.store import Layout

    layout = Layout.from_shapes([(name, (4,)) for name in HOSTILE_NAMES], prunable=HOSTILE_NAMES[:3])
    rng = np.random.default_rng(0)
    data = np.cumsum(rng.standard_normal((12, 4 * len(HOSTILE_NAMES))), axis=0).astype(np.float32)
    path = write_store(tmp_path / "s.zarr", data, layout=layout, loss=0.25, metrics={"acc": 0.5})
    (path / "metrics" / "acc").rename(path / "metrics" / "m[red]\x1b]0;x\x07")
    group = zarr.open_group(path, mode="r+")
    group.attrs.update({
        "created": "[bold red]2026\x1b]52;c;ZXZpbA==\x07",
        "recipe": {"name": "[/]evil\x1b[2J", "seed": "[link=https://x]0[/link]", "config": {}},
        "spacing": {"every": "[/]"},
        "versions": {"traj": "\x1b]0;t\x07", "torch": "[/]"},
    })
    return path


CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # rich's own colours and cursor codes


def _invoke(monkeypatch, args):
    """Run with both consoles treated as a terminal, so markup and control codes would take effect."""
    for console in (_common.out_console, _common.err_console):
        monkeypatch.setattr(console, "_force_terminal", True)
    return runner.invoke(app, args)


def _assert_inert(text):
    """None of the store's payloads took effect: rich writes colours and cursor codes, never these."""
    assert "\x1b]" not in text, "an OSC sequence reached the terminal (title, clipboard or hyperlink)"
    assert "\x07" not in text and "\x1b[2J" not in text and "\x1b[H" not in text


def test_info_shows_store_text_as_text(hostile_store, monkeypatch, tmp_path):
    result = _invoke(monkeypatch, ["info", str(hostile_store), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    _assert_inert(result.output)
    plain = CSI.sub("", result.stdout)
    for shown in ("a[/]b", "[link=https://evil.example]click[/link]", "t\\x1b]0;pwned\\x07itle", "cls\\x1b[2J\\x1b[H",
                  "recipe [/]evil\\x1b[2J (seed [link=https://x]0[/link])", "created [bold red]2026\\x1b]52;c;ZXZpbA==\\x07",
                  "m[red]\\x1b]0;x\\x07", "bidi\\u202eevil"):
        assert shown in plain, shown
    md = (tmp_path / "out" / "report.md").read_text()
    assert "p\\|i&lt;b&gt;pe&amp;amp;\\*x\\*" in md and "<b>" not in md
    assert "\x1b" not in md and "\\[link=https://evil.example\\]click\\[/link\\]" in md
    html = (tmp_path / "out" / "report.html").read_text()
    assert "p|i&lt;b&gt;pe&amp;amp;*x*" in html


@pytest.mark.parametrize("command", [["dmd", "--per-layer"], ["cmd", "--modes", "2", "--no-evaluate"], ["report", "--no-evaluate"]])
def test_analyses_draw_and_print_store_text(hostile_store, monkeypatch, tmp_path, command):
    result = _invoke(monkeypatch, [command[0], str(hostile_store), *command[1:], "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    _assert_inert(result.output)
    assert "\x1b" not in (tmp_path / "out" / "report.md").read_text()


def test_an_error_naming_store_text_stays_one_inert_line(hostile_store, monkeypatch, tmp_path):
    result = _invoke(monkeypatch, ["dmd", str(hostile_store), "--layer", "nope", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [line for line in CSI.sub("", result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "a[/]b" in lines[0], result.stderr
    _assert_inert(result.stderr)


def test_progress_columns_show_data_as_text():
    from rich.console import Console
    from rich.progress import Progress

    console = Console(record=True, width=200, force_terminal=True)
    column = _common.DataColumn("{task.description}")
    with Progress(column, console=console, auto_refresh=False) as bar:
        task = bar.add_task("[/]recipe\x1b]0;t\x07", total=1)
        rendered = column.render(bar.tasks[task])
    assert rendered.plain == "[/]recipe\\x1b]0;t\\x07"
