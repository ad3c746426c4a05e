"""Reporting: heatmap overlays, aggregation across seeds, significance tests, tables, figures and report.md."""
