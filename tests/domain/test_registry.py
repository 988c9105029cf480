"""The registry's access rules (gaia/domain/registry.py): names, scopes, who gets what."""

from __future__ import annotations

import pytest

from gaia.domain.errors import InvalidRequest
from gaia.domain.rbac import Role
from gaia.domain.registry import (
    NamespaceKind,
    RegistryCaller,
    Scope,
    grant,
    parse_repository,
    parse_scope,
)

ANON = RegistryCaller()
ADMIN = RegistryCaller(username="root", is_platform_admin=True)
ALICE = RegistryCaller(
    username="alice",
    roles={"shop": Role.DEVELOPER, "bank": Role.VIEWER, "ops": Role.BUSINESS_ADMIN},
)
SHOP_PULL = RegistryCaller(pull_account_of="shop")


def scope(name: str, actions: str = "pull,push") -> Scope:
    return parse_scope(f"repository:{name}:{actions}")


@pytest.mark.parametrize(
    ("name", "kind", "namespace", "owner"),
    [
        ("shop/web", NamespaceKind.BUSINESS, "shop", "shop"),
        ("shop/tools/lint", NamespaceKind.BUSINESS, "shop", "shop"),
        ("u/alice/tools", NamespaceKind.PERSONAL, "u/alice", "alice"),
        ("public/busybox", NamespaceKind.PUBLIC, "public", ""),
        ("a-b/c__d/e.f", NamespaceKind.BUSINESS, "a-b", "a-b"),
    ],
)
def test_names_and_their_namespace(
    name: str, kind: NamespaceKind, namespace: str, owner: str
) -> None:
    repo = parse_repository(name)
    assert (repo.kind, repo.namespace, repo.owner) == (kind, namespace, owner)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("web", "lives in a namespace"),
        ("u/alice", "u/<user>/<name>"),
        ("Shop/web", "not a repository name"),
        ("shop//web", "not a repository name"),
        ("shop/web/", "not a repository name"),
        ("shop/a..b", "not a repository name"),
        ("s/" + "x" * 260, "at most 255"),
    ],
)
def test_bad_names_say_why(name: str, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says.replace("<", ".").replace(">", ".")):
        parse_repository(name)


def test_scopes_parse_and_refuse_nonsense() -> None:
    assert parse_scope("repository:shop/web:pull,push,pull") == Scope(
        "repository", "shop/web", ("pull", "push")
    )
    assert parse_scope("registry:catalog:*").actions == ("*",)
    for bad in ("repository:shop/web", "thing:x:pull", "repository:shop/web:steal", "registry:x:*"):
        with pytest.raises(InvalidRequest):
            parse_scope(bad)


def test_business_repositories_follow_the_business_roles() -> None:
    assert grant(ALICE, scope("shop/web")) == ("pull", "push")  # developer
    assert grant(ALICE, scope("ops/web")) == ("pull", "push")  # business admin
    assert grant(ALICE, scope("bank/web")) == ("pull",)  # viewer
    assert grant(ALICE, scope("other/web")) == ()  # not a member
    assert grant(ANON, scope("shop/web")) == ()
    assert grant(ADMIN, scope("other/web")) == ("pull", "push")


def test_personal_repositories_are_their_owners() -> None:
    assert grant(ALICE, scope("u/alice/tools")) == ("pull", "push")
    assert grant(ALICE, scope("u/bob/tools")) == ()
    assert grant(ANON, scope("u/alice/tools", "pull")) == ()


def test_public_repositories_are_pulled_by_all_and_pushed_by_admins() -> None:
    for caller in (ANON, ALICE, SHOP_PULL):
        assert grant(caller, scope("public/busybox")) == ("pull",)
    assert grant(ADMIN, scope("public/busybox")) == ("pull", "push")


def test_a_pull_account_pulls_its_business_only() -> None:
    assert grant(SHOP_PULL, scope("shop/web")) == ("pull",)
    assert grant(SHOP_PULL, scope("bank/web")) == ()
    assert grant(SHOP_PULL, scope("u/alice/tools")) == ()
    assert grant(SHOP_PULL, parse_scope("registry:catalog:*")) == ()


def test_delete_is_never_granted_and_star_means_pull_and_push() -> None:
    assert grant(ADMIN, scope("shop/web", "delete")) == ()
    assert grant(ALICE, scope("shop/web", "*")) == ("pull", "push")
    assert grant(ALICE, scope("bank/web", "*")) == ("pull",)
    assert grant(ADMIN, parse_scope("registry:catalog:*")) == ("*",)
    assert grant(ALICE, parse_scope("registry:catalog:*")) == ()


def test_a_node_account_pulls_for_the_businesses_on_its_node() -> None:
    node = RegistryCaller(node_businesses=frozenset({"shop"}))
    assert grant(node, scope("shop/web")) == ("pull",)
    assert grant(node, scope("bank/web")) == ()
    assert grant(node, scope("u/alice/tools")) == ()
    assert grant(node, scope("public/busybox")) == ("pull",)
    assert grant(RegistryCaller(node_businesses=frozenset()), scope("shop/web")) == ()


def test_a_build_account_pushes_only_to_its_repository_and_pulls_its_business() -> None:
    from gaia.domain.registry import RegistryCaller, allowed, parse_repository

    caller = RegistryCaller(build_account_of=parse_repository("alpha/web"))
    assert allowed(caller, parse_repository("alpha/web")) == frozenset({"pull", "push"})
    assert allowed(caller, parse_repository("alpha/base")) == frozenset({"pull"})
    assert allowed(caller, parse_repository("beta/web")) == frozenset()
    assert allowed(caller, parse_repository("u/dev/web")) == frozenset()
    assert allowed(caller, parse_repository("public/busybox")) == frozenset({"pull"})
