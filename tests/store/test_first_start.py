"""First start with several replicas (issue 21): replicas that start together on an empty
database make one first admin and one demo business between them, and none of them fails.

Found by the chart's image test (tests/deploy/test_image.py): two pods starting on a fresh
PostgreSQL both counted no users, both inserted ``admin``, and one crashed on the unique name
and was restarted by its kubelet.
"""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from gaia.bootstrap import ensure_admin, ensure_demo
from gaia.store.database import Database
from gaia.store.models import Business, User

REPLICAS = 8


def test_replicas_starting_together_make_one_admin_and_one_demo(database_url: str) -> None:
    barrier = threading.Barrier(REPLICAS)
    passwords: list[str | None] = []
    demos: list[bool] = []
    failures: list[BaseException] = []

    def start() -> None:
        db = Database(database_url)  # an engine of its own, as a replica has
        try:
            barrier.wait()
            passwords.append(ensure_admin(db))
            demos.append(ensure_demo(db))
        except BaseException as exc:
            failures.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=start) for _ in range(REPLICAS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert sum(password is not None for password in passwords) == 1
    assert demos.count(True) == 1
    db = Database(database_url)
    with db.read_session() as session:
        assert session.scalar(select(func.count(User.id))) == 1
        assert session.scalar(select(func.count(Business.id))) == 1
    db.dispose()
