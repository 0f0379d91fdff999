"""Drift between the served and the on-disk certificate, and the reload that ends it safely."""
