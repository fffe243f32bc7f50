"""One self-contained HTML file: style, script, plots and data inline; nothing is fetched.

The problem list goes in a `<script type="application/json">` element with `<`, `>`, `&` and the
two JavaScript line separators written as `\\u` escapes, so no text in a trace can close the element
or open another; the page's script reads it with `textContent` and `JSON.parse`. Each problem's traces,
most of the file, go gzip-compressed in base64 (no character markup could read), unpacked when
the problem is shown.
"""

from __future__ import annotations

import base64
import gzip
import json
from html import escape
from importlib.resources import files
from typing import Any

# The page's script, one file per view that grew its own; viewer.js last: it starts the page.
SCRIPTS = ("search_view.js", "viewer.js")
_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def embedded_json(data: Any) -> str:
    """`data` as JSON text that is safe inside a script element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.translate(_ESCAPES)


def packed_json(data: Any) -> str:
    """`data` as gzip-compressed JSON in base64: a fraction of the size, and no character that markup
    could read. The page unpacks it with the browser's own DecompressionStream."""
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=5, mtime=0)).decode("ascii")


def render(data: dict[str, Any], traces: list[list[Any]], plots: list[dict[str, str]], title: str) -> str:
    """The page: `data` as read by viewer.js at once, `traces` (per run, each problem's tracks and a
    search's pruned beams, packed one by one) unpacked when that problem is shown, `plots` (SVG text
    per run) as templates it clones."""
    package = files("evaluators.viewer")
    style = package.joinpath("viewer.css").read_text(encoding="utf-8")
    script = "\n".join(package.joinpath(name).read_text(encoding="utf-8") for name in SCRIPTS)
    templates = "".join(f'<template id="plots-{i}">{"".join(svgs.values())}</template>' for i, svgs in enumerate(plots))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        # No request may leave the page: the file is opened from disk and mailed around.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">"
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{style}</style></head><body>"
        f'<main id="main"></main>{templates}'
        f'<script type="application/json" id="spectra-data">{embedded_json(data)}</script>'
        + "".join(
            f'<script type="application/json" id="spectra-traces-{i}">{json.dumps([*map(packed_json, run)])}</script>'
            for i, run in enumerate(traces)
        )
        + f"<script>{script}</script></body></html>\n"
    )
