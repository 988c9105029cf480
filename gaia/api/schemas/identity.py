"""Bodies of login, users and API tokens (``gaia.api.routes.auth`` and ``.users``).

Passwords flow in only (``LoginRequest``, ``UserCreate``, ``UserUpdate``) and a token's value
flows out exactly once (``LoginResponse``, ``TokenCreated``); no response carries a hash.
See docs/architecture.md, "api".
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field

from gaia.api.schemas.base import DisplayName, Language, Name, Password, Strict, Username
from gaia.domain.rbac import Role

if TYPE_CHECKING:
    from gaia.store.models import User


class LoginRequest(Strict):
    username: Annotated[str, Field(min_length=1, max_length=63)]
    password: Annotated[str, Field(min_length=1, max_length=256)]


class UserOut(BaseModel):
    username: str
    display_name: str
    platform_admin: bool
    disabled: bool
    language: str
    created_at: dt.datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            username=user.username,
            display_name=user.display_name,
            platform_admin=user.is_platform_admin,
            disabled=user.disabled,
            language=user.language,
            created_at=user.created_at,
        )


class LoginResponse(BaseModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_at: dt.datetime
    user: UserOut


class UserCreate(Strict):
    username: Username
    password: Password
    display_name: DisplayName = ""
    platform_admin: bool = False
    language: Language = "en"


class UserUpdate(Strict):
    display_name: DisplayName | None = None
    language: Language | None = None
    password: Password | None = None
    current_password: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="required when changing your own password"
    )
    platform_admin: bool | None = Field(default=None, description="platform admins only")
    disabled: bool | None = Field(default=None, description="platform admins only")


class MembershipOut(BaseModel):
    business: str
    role: Role


class MeOut(UserOut):
    memberships: list[MembershipOut]


class TokenCreate(Strict):
    name: Name
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        default=None, description="omit for a token that lasts until revoked"
    )


class TokenOut(BaseModel):
    id: int
    name: str
    kind: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="shown once; store it now")
