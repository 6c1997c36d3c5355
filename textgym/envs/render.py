"""Rendering of a prefix: ``"ansi"`` text (:func:`ansi_text`) and ``"rgb_array"`` images (:func:`text_frame`, for
``RecordVideo`` and SB3's ``make_vec_env``, which asks for ``rgb_array``).

Every frame has the same size (:data:`FRAME_SIZE`), as a video needs: the prompt in grey, the completion in
blue, wrapped at the frame's width, the last lines kept when the text is longer than the frame; a status line
(end reason and score) at the bottom. Drawn with Pillow (a dependency of matplotlib, so of the agents and sb3
extras), imported only when a frame is drawn.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from textgym._optional import require

FRAME_SIZE = (256, 512)  # (H, W): multiples of 16, which video encoders want
_MARGIN, _LINE = 8, 18  # pixels
_PROMPT, _COMPLETION, _STATUS, _BACKGROUND = (90, 90, 90), (20, 60, 200), (150, 30, 30), (255, 255, 255)


@lru_cache(maxsize=1)
def _font() -> Any:
    font = require("PIL.ImageFont", 'render_mode="rgb_array" (Pillow)')
    try:
        return font.load_default(size=14)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return font.load_default()


def _layout(runs: list[tuple[str, tuple[int, int, int]]], width: int) -> list[list[tuple[float, str, Any]]]:
    """Lines of ``(x, char, colour)``: the text of ``runs`` wrapped at ``width`` pixels, ``\\n`` honoured."""
    font, lines, line, x = _font(), [], [], 0.0
    for text, colour in runs:
        for ch in text:
            w = font.getlength(ch) if ch != "\n" else 0.0
            if ch == "\n" or x + w > width:
                lines.append(line)
                line, x = [], 0.0
                if ch == "\n":
                    continue
            line.append((x, ch, colour))
            x += w
    lines.append(line)
    return lines


NOT_RESET = "<not reset>"


def ansi_text(prompt: str | None, completion: str, status: str = "") -> str:
    """``prompt│completion  status``: ``│`` marks where the completion starts (``prompt=None``: not reset)."""
    if prompt is None:
        return NOT_RESET
    return f"{prompt}\u2502{completion}" + (f"  {status}" if status else "")


def text_frame(prompt: str | None, completion: str, status: str = "") -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image of ``prompt`` (grey) followed by ``completion`` (blue) and a status line
    (``prompt=None``: not reset)."""
    image_mod = require("PIL.Image", 'render_mode="rgb_array" (Pillow)')
    draw_mod = require("PIL.ImageDraw", 'render_mode="rgb_array" (Pillow)')
    H, W = FRAME_SIZE
    image = image_mod.new("RGB", (W, H), _BACKGROUND)
    draw, font = draw_mod.Draw(image), _font()
    lines = _layout([(NOT_RESET if prompt is None else prompt, _PROMPT), (completion, _COMPLETION)], W - 2 * _MARGIN)
    fit = (H - 2 * _MARGIN) // _LINE - 1  # one line kept for the status
    if len(lines) > fit:
        lines = [[(0.0, "\u2026", _PROMPT)]] + lines[len(lines) - fit + 1:]  # the end of the text, after "…"
    for row, line in enumerate(lines):
        for x, ch, colour in line:
            draw.text((_MARGIN + x, _MARGIN + row * _LINE), ch, fill=colour, font=font)
    if status:
        draw.text((_MARGIN, H - _MARGIN - _LINE), status, fill=_STATUS, font=font)
    return np.asarray(image, dtype=np.uint8).copy()  # (H, W, 3)
