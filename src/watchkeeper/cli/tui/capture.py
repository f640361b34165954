"""The screen as plain text: for the README's capture (scripts/tui_capture.py) and tests."""

from __future__ import annotations

from textual.app import App


def screen_text(app: App[object]) -> str:
    """What the terminal shows now, line by line, without colour or control sequences."""
    # The compositor's strips are the lines Textual writes to the terminal; there is no
    # public way to read them back.
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip).rstrip() for strip in strips) \
        .rstrip() + "\n"
