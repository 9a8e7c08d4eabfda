"""Rendering of result dataclasses: rich tables, JSON and plots. No computation happens here."""
