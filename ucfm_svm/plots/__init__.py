"""Figures. Every function returns a :class:`matplotlib.figure.Figure` and never shows it; the
CLI saves figures (PNG and PDF)."""
