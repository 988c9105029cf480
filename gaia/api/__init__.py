"""The HTTP API: one router per resource, pydantic schemas, auth dependencies."""

from gaia.api.app import create_app

__all__ = ["create_app"]
