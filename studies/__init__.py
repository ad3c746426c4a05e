"""Measured studies behind claims in the README: each prints its numbers (``python -m studies.<name>``)."""
