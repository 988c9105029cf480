"""Who may do what in Gaia's image registry (issue 18; docs/registry.md): pure rules.

Repositories live in three kinds of namespace, named by the first path component:

- ``u/<user>/...``: personal. The owner pulls and pushes; nobody else sees it (a platform
  admin too, for support).
- ``public/...``: everyone pulls, even without logging in; platform admins push.
- ``<business>/...``: the business's. Its members pull (viewer and up); developers and business
  admins push; a platform admin does both. A business's pull account (the platform's own
  credentials, injected into the business's apps as a pull secret) pulls only; so does a
  node's account (its P2P agent's credentials), for the businesses with an instance on it.

The registry's ``delete`` action is never granted to a token: tags are deleted through Gaia's
API, which records who did it, so nothing disappears from the registry without a record.
``registry:catalog:*`` is a platform admin's.

``parse_scope`` reads the token request's ``scope`` parameter (the distribution token
specification: ``repository:<name>:<action>[,<action>...]``); ``grant`` answers with the
actions the caller gets, which may be fewer than asked (the registry then refuses the rest with
``insufficient_scope``) and never more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from gaia.domain.errors import InvalidRequest
from gaia.domain.rbac import Role

# the distribution specification's repository name grammar: path components of lowercase
# letters and digits, separated inside by one '.', one or two '_', or any number of '-'
COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"{COMPONENT}(?:/{COMPONENT})*")
MAX_REPOSITORY = 255
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
PERSONAL = "u"
PUBLIC = "public"
# business names a business may not take: they name the other kinds of namespace
RESERVED_NAMESPACES = frozenset({PERSONAL, PUBLIC})
ACTIONS = ("pull", "push", "delete", "*")
MAX_SCOPES = 16


class NamespaceKind(StrEnum):
    PERSONAL = "personal"
    PUBLIC = "public"
    BUSINESS = "business"


@dataclass(frozen=True, slots=True)
class RepositoryName:
    name: str  # the whole name, e.g. "shop/web" or "u/alice/tools/lint"
    kind: NamespaceKind
    namespace: str  # "u/alice", "public" or "shop"
    owner: str  # the user (personal), the business (business), "" (public)


def parse_repository(name: str) -> RepositoryName:
    """The repository ``name`` and its namespace, or ``InvalidRequest`` saying what is wrong."""
    if len(name) > MAX_REPOSITORY:
        raise InvalidRequest(f"a repository name has at most {MAX_REPOSITORY} characters")
    if not REPOSITORY.fullmatch(name):
        raise InvalidRequest(
            f"'{name[:80]}' is not a repository name: lowercase path components of letters and "
            "digits, separated by '/', with '.', '_' or '-' inside a component"
        )
    parts = name.split("/")
    if parts[0] == PERSONAL:
        if len(parts) < 3:
            raise InvalidRequest(
                f"'{name}': a personal repository is named u/<user>/<name>, e.g. u/alice/tools"
            )
        return RepositoryName(name, NamespaceKind.PERSONAL, f"{PERSONAL}/{parts[1]}", parts[1])
    if len(parts) < 2:
        raise InvalidRequest(
            f"'{name}': a repository lives in a namespace: <business>/{name}, "
            f"u/<you>/{name} or public/{name}"
        )
    if parts[0] == PUBLIC:
        return RepositoryName(name, NamespaceKind.PUBLIC, PUBLIC, "")
    return RepositoryName(name, NamespaceKind.BUSINESS, parts[0], parts[0])


@dataclass(frozen=True, slots=True)
class Scope:
    type: str  # "repository" or "registry"
    name: str
    actions: tuple[str, ...]

    def render(self, actions: tuple[str, ...] | None = None) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions if actions is None else actions)}"


def parse_scope(scope: str) -> Scope:
    """One ``scope`` parameter: ``repository:<name>:<actions>`` or ``registry:catalog:*``."""
    kind, _, rest = scope.partition(":")
    name, _, actions_text = rest.rpartition(":")
    if kind not in ("repository", "registry") or not name or not actions_text:
        raise InvalidRequest(
            f"scope '{scope[:120]}' is not <type>:<name>:<actions> "
            "(e.g. repository:shop/web:pull,push)"
        )
    actions = tuple(dict.fromkeys(a.strip() for a in actions_text.split(",") if a.strip()))
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise InvalidRequest(f"scope '{scope[:120]}': unknown action(s) {', '.join(unknown)}")
    if kind == "registry" and name != "catalog":
        raise InvalidRequest(f"scope '{scope[:120]}': the only registry resource is 'catalog'")
    return Scope(kind, name, actions)


@dataclass(frozen=True)
class RegistryCaller:
    """What the rules need to know of whoever asks for a token."""

    username: str | None = None  # None: anonymous
    is_platform_admin: bool = False
    roles: dict[str, Role] = field(default_factory=dict)  # business name -> role
    # a business's pull account: pulls its business's repositories (and public ones), no more
    pull_account_of: str | None = None
    # a node's account (its P2P agent): pulls the repositories of the businesses with an
    # instance on the node (and public ones), no more: the node boundary Kubernetes itself
    # draws for images cached on a node
    node_businesses: frozenset[str] | None = None
    # a pipeline's build account: pushes to one repository (the pipeline's), pulls its business's
    build_account_of: RepositoryName | None = None


PULL = frozenset({"pull"})
PULL_PUSH = frozenset({"pull", "push"})


def allowed(caller: RegistryCaller, repo: RepositoryName) -> frozenset[str]:
    """Every action ``caller`` may take on ``repo`` (``delete`` never: see the module doc)."""
    if repo.kind is NamespaceKind.PUBLIC:
        return PULL_PUSH if caller.is_platform_admin else PULL
    if caller.build_account_of is not None:
        built = caller.build_account_of
        if repo.name == built.name:
            return PULL_PUSH
        return PULL if repo.kind is built.kind and repo.owner == built.owner else frozenset()
    if caller.pull_account_of is not None:
        mine = repo.kind is NamespaceKind.BUSINESS and repo.owner == caller.pull_account_of
        return PULL if mine else frozenset()
    if caller.node_businesses is not None:
        hosted = repo.kind is NamespaceKind.BUSINESS and repo.owner in caller.node_businesses
        return PULL if hosted else frozenset()
    if caller.username is None:
        return frozenset()
    if caller.is_platform_admin:
        return PULL_PUSH
    if repo.kind is NamespaceKind.PERSONAL:
        return PULL_PUSH if repo.owner == caller.username else frozenset()
    role = caller.roles.get(repo.owner)
    if role is None:
        return frozenset()
    return PULL if role is Role.VIEWER else PULL_PUSH


def grant(caller: RegistryCaller, scope: Scope) -> tuple[str, ...]:
    """The actions of ``scope`` that ``caller`` gets (possibly none), in the asked order."""
    if scope.type == "registry":
        return ("*",) if caller.is_platform_admin else ()
    try:
        repo = parse_repository(scope.name)
    except InvalidRequest:
        return ()  # the registry refuses the name itself; no token names it
    may = allowed(caller, repo)
    out: list[str] = []
    for action in scope.actions:
        if action == "*":
            out.extend(a for a in ("pull", "push") if a in may and a not in out)
        elif action in may and action not in out:
            out.append(action)
    return tuple(out)
