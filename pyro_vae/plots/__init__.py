"""Figures, one module per model; each function draws one figure and saves it as PNG."""
