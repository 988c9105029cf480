"""The platform API (FastAPI): ``create_api``; routers in ``routes/``, request and response
models in ``schemas/``, the caller and tenancy in ``deps``. See docs/architecture.md."""

from gaia.api.app import create_api

__all__ = ["create_api"]
