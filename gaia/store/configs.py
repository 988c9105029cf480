"""ConfigMaps and Secrets at rest: one ``config_items`` table, the ``secret`` flag tells them apart.

- A ConfigMap keeps its data in the clear in ``data``.
- A Secret keeps its data **only** in ``data_encrypted``: the Fernet encryption (``SecretBox``) of
  the JSON of the whole mapping. ``data`` then maps each key name to ``""``, so that key names can
  be listed and checked (an app referring to a missing key) without decrypting, while neither a
  value nor its length is stored in the clear (only the ciphertext's total length shows).

``store_data`` and ``read_data`` are the only two places that know this layout; routes and the
app controller go through them (``load_config_data`` is the controller's entry point). The
create/replace/delete functions below are what the configmaps and secrets routes call; they take
``secret`` to say which kind, and name it in their errors ("ConfigMap" or "Secret").
See docs/architecture.md, "store".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict, NotFound
from gaia.security import SecretBox
from gaia.store.models import Business, ConfigItem, utcnow
from gaia.store.paging import page_of


def store_data(item: ConfigItem, data: dict[str, str], *, secrets: SecretBox) -> None:
    """Put ``data`` into ``item`` the way its kind is stored (encrypted for a Secret)."""
    if item.secret:
        item.data = dict.fromkeys(data, "")
        item.data_encrypted = secrets.encrypt(json.dumps(data, sort_keys=True))
    else:
        item.data = dict(data)
        item.data_encrypted = None


def read_data(item: ConfigItem, *, secrets: SecretBox) -> dict[str, str]:
    """The data of ``item`` in the clear (decrypted for a Secret)."""
    if not item.secret:
        return dict(item.data)
    if item.data_encrypted is None:
        return {}
    decoded = json.loads(secrets.decrypt(item.data_encrypted))
    if not isinstance(decoded, dict):
        raise ValueError(f"stored secret '{item.name}' is not a mapping")
    return {str(k): str(v) for k, v in decoded.items()}


def find_config_item(
    session: Session, *, business_id: int, name: str, secret: bool
) -> ConfigItem | None:
    return session.scalars(
        select(ConfigItem).where(
            ConfigItem.business_id == business_id,
            ConfigItem.secret == secret,
            ConfigItem.name == name,
        )
    ).one_or_none()


def load_config_data(
    session: Session, *, secrets: SecretBox, business_id: int, name: str, secret: bool
) -> dict[str, str] | None:
    """The data of a business's ConfigMap or Secret by name, decrypted; ``None`` if missing."""
    item = find_config_item(session, business_id=business_id, name=name, secret=secret)
    return None if item is None else read_data(item, secrets=secrets)


def kind_title(*, secret: bool) -> str:
    """The kind as messages name it."""
    return "Secret" if secret else "ConfigMap"


def page_config_items(
    session: Session, *, business_id: int, secret: bool, limit: int, cursor: str | None
) -> tuple[list[ConfigItem], str | None]:
    """One kind's items of a business, by name."""
    stmt = select(ConfigItem).where(
        ConfigItem.business_id == business_id, ConfigItem.secret == secret
    )
    return page_of(session, stmt, key=ConfigItem.name, limit=limit, cursor=cursor)


def config_item(session: Session, *, business: Business, name: str, secret: bool) -> ConfigItem:
    """The item ``name`` of one kind; ``NotFound`` naming the kind and the business."""
    item = find_config_item(session, business_id=business.id, name=name, secret=secret)
    if item is None:
        raise NotFound(
            f"{kind_title(secret=secret)} '{name}' not found in business '{business.name}'"
        )
    return item


def create_config_item(
    session: Session,
    *,
    secrets: SecretBox,
    business: Business,
    secret: bool,
    name: str,
    description: str,
    data: dict[str, str],
    created_by: str,
) -> ConfigItem:
    """A new ConfigMap or Secret; ``Conflict`` if the business has one of that kind and name."""
    if find_config_item(session, business_id=business.id, name=name, secret=secret):
        raise Conflict(
            f"{kind_title(secret=secret)} '{name}' already exists in business '{business.name}'"
        )
    now = utcnow()
    item = ConfigItem(
        business_id=business.id,
        name=name,
        secret=secret,
        description=description,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    store_data(item, data, secrets=secrets)
    session.add(item)
    session.flush()
    return item


@dataclass(frozen=True)
class Replaced:
    """What ``replace_config_item`` did: ``before`` is the old data, ``None`` when it could not
    be decrypted (a key this installation no longer has; replacing is then the repair)."""

    item: ConfigItem
    before: dict[str, str] | None
    description_changed: bool


def replace_config_item(
    session: Session,
    *,
    secrets: SecretBox,
    business: Business,
    secret: bool,
    name: str,
    description: str,
    data: dict[str, str],
) -> Replaced:
    """Replace the data and description of an item as a whole."""
    item = config_item(session, business=business, name=name, secret=secret)
    try:
        before: dict[str, str] | None = read_data(item, secrets=secrets)
    except ValueError:
        before = None
    store_data(item, data, secrets=secrets)
    description_changed = item.description != description
    if description_changed:
        item.description = description
    item.updated_at = utcnow()
    return Replaced(item=item, before=before, description_changed=description_changed)


def delete_config_item(
    session: Session, *, business: Business, name: str, secret: bool
) -> list[str]:
    """Delete an item; returns its key names (for the record, never its values)."""
    item = config_item(session, business=business, name=name, secret=secret)
    keys = list(item.data)
    session.delete(item)
    return keys
