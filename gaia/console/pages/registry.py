"""The image registry's pages (issue 18; docs/registry.md): namespaces with their usage and
quota, the repositories in them, and a repository's tags (with the reference to pull, who pushed
it and when; a delete button for those who may push there).

Everything comes from the API (``/api/v1/registry...``), so every user sees exactly the
namespaces the API shows them: their own, ``public`` and their businesses'.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from gaia.console.listing import every_item
from gaia.console.web import (
    ConsoleApi,
    ConsoleUser,
    Translate,
    User,
    redirect,
    refusal_page,
    render,
    translator,
)

router = APIRouter(include_in_schema=False)
BASE = "/console/registry"
Namespace = Annotated[str | None, Query(max_length=127)]
Repository = Annotated[str, Path(max_length=255, pattern=r"^[a-z0-9][a-z0-9._/-]*$")]
Tag = Annotated[str, Path(max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")]


def size(count: int | None) -> str:
    if count is None:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count} B"


def _t(user: ConsoleUser) -> Translate:
    return translator(user.language)


@router.get("/console/registry")
async def registry_page(request: Request, user: User, namespace: Namespace = None) -> Response:
    api = ConsoleApi(request, user)
    info = await api.get("/api/v1/registry")
    spaces = await every_item(api, "/api/v1/registry/namespaces")
    params = {"namespace": namespace} if namespace else {}
    repositories = await every_item(api, "/api/v1/registry/repositories", **params)
    if not info.ok:
        return refusal_page(request, user, info, template="registry_error.html", section="registry")
    return render(
        request,
        user,
        "registry.html",
        {
            "info": info.data,
            "namespaces": [
                {
                    **n,
                    "used": size(n["used_bytes"]),
                    "quota": size(n["quota_bytes"]),
                    "full": n["quota_bytes"] is not None and n["used_bytes"] >= n["quota_bytes"],
                }
                for n in (spaces.data if spaces.ok else [])
            ],
            "repositories": [
                {**r, "size_text": size(r["size"])}
                for r in (repositories.data if repositories.ok else [])
            ],
            "namespace": namespace,
            "error": spaces.error or repositories.error,
        },
        section="registry",
    )


@router.get("/console/registry/repositories/{repository:path}")
async def repository_page(request: Request, user: User, repository: Repository) -> Response:
    api = ConsoleApi(request, user)
    tags = await every_item(api, f"/api/v1/registry/repositories/{repository}/tags")
    if not tags.ok:
        return refusal_page(request, user, tags, template="registry_error.html", section="registry")
    spaces = await every_item(api, "/api/v1/registry/namespaces")
    namespace = (
        "/".join(repository.split("/")[:2])
        if repository.startswith("u/")
        else (repository.split("/")[0])
    )
    can_push = any(
        n["namespace"] == namespace and n["can_push"] for n in (spaces.data if spaces.ok else [])
    )
    return render(
        request,
        user,
        "registry_repository.html",
        {
            "repository": repository,
            "namespace": namespace,
            "tags": [{**t, "size_text": size(t["size"])} for t in tags.data],
            "can_push": can_push,
        },
        section="registry",
    )


@router.post(
    "/console/registry/repositories/{repository:path}/tags/{tag}/delete", response_model=None
)
async def tag_delete(request: Request, user: User, repository: Repository, tag: Tag) -> Response:
    back = f"{BASE}/repositories/{repository}"
    result = await ConsoleApi(request, user).delete(
        f"/api/v1/registry/repositories/{repository}/tags/{tag}"
    )
    if result.ok:
        return redirect(back, ok=_t(user)("deleted tag {tag}", tag=tag))
    return redirect(back, error=result.error)
