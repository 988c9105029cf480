"""ConfigMaps and Secrets at rest: one ``config_items`` table, the ``secret`` flag tells them apart.

- A ConfigMap keeps its data in the clear in ``data``.
- A Secret keeps its data **only** in ``data_encrypted``: the Fernet encryption (``SecretBox``) of
  the JSON of the whole mapping. ``data`` then maps each key name to ``""``, so that key names can
  be listed and checked (an app referring to a missing key) without decrypting, while neither a
  value nor its length is stored in the clear (only the ciphertext's total length shows).

``store_data`` and ``read_data`` are the only two places that know this layout; routes and the
app controller go through them (``load_config_data`` is the controller's entry point).
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.security import SecretBox
from gaia.store.models import ConfigItem


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
