"""Delivery: Gaia's image registry and CI/CD builds (issue 18)."""
