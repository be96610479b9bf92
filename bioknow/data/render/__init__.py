"""Renderers: a person (and a rendering choice) -> biography text with exact spans."""

from bioknow.data.render.bios import Rendering, Span, render_people

__all__ = ["Rendering", "Span", "render_people"]
