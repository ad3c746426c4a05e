"""Reporting: heatmap overlays (and, with the evaluation issue, tables and figures across seeds)."""
