"""Roles and permissions: who may do what inside a business.

Four roles. ``platform-admin`` is a property of the user and allows everything everywhere. The
three business roles come from membership, one per (user, business):

- ``viewer`` reads the business: its apps, quotas, members, configurations, records and events;
- ``developer`` also changes what runs: apps, instances, configs (from the apps issue on);
- ``business-admin`` also manages the business itself: members, instance configurations.

Quotas and clusters are the platform's to hand out, so only a platform admin writes them.
Tenancy is enforced separately: a user who is not a member of a business gets *not found* for
everything in it, so a business's existence does not leak (see ``gaia.api.deps``).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    PLATFORM_ADMIN = "platform-admin"
    BUSINESS_ADMIN = "business-admin"
    DEVELOPER = "developer"
    VIEWER = "viewer"


BUSINESS_ROLES = (Role.BUSINESS_ADMIN, Role.DEVELOPER, Role.VIEWER)


class Permission(StrEnum):
    BUSINESS_READ = "business.read"
    BUSINESS_UPDATE = "business.update"
    MEMBER_MANAGE = "member.manage"
    QUOTA_READ = "quota.read"
    INSTANCE_CONFIG_WRITE = "instance_config.write"
    APP_WRITE = "app.write"
    ALERT_WRITE = "alert.write"  # policies, receivers, silences
    CHANNEL_MANAGE = "channel.manage"  # notification channels and their credentials


_VIEWER = frozenset({Permission.BUSINESS_READ, Permission.QUOTA_READ})
_DEVELOPER = _VIEWER | {Permission.APP_WRITE, Permission.ALERT_WRITE}
_BUSINESS_ADMIN = _DEVELOPER | {
    Permission.BUSINESS_UPDATE,
    Permission.MEMBER_MANAGE,
    Permission.INSTANCE_CONFIG_WRITE,
    Permission.CHANNEL_MANAGE,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.DEVELOPER: _DEVELOPER,
    Role.BUSINESS_ADMIN: _BUSINESS_ADMIN,
    Role.PLATFORM_ADMIN: frozenset(Permission),
}


def allows(role: Role | None, permission: Permission) -> bool:
    """Whether a business role grants a permission (``None``: not a member)."""
    if role is None:
        return False
    return permission in ROLE_PERMISSIONS[role]
