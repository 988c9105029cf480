"""The store's change mark (``gaia.store.apps.change_mark`` / ``changed_apps``), which tells a
quiet app controller what changed since its last look, on a real PostgreSQL: there a row gets
its id when it is inserted, so a transaction may commit after one with a higher id, and a mark
made of the highest ids alone would never see it (until the controller's resync)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.store import apps as store_apps
from gaia.store.database import Database
from gaia.store.models import App, Business, Cluster, OperationRecord, utcnow

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    with db.write_session() as session:
        business = Business(name="alpha", created_at=utcnow())
        cluster = Cluster(name="sim-1", kind="sim")
        session.add_all([business, cluster])
        session.flush()
        for name in ("web", "api"):
            session.add(
                App(
                    business_id=business.id, name=name, cluster_id=cluster.id, default_template="v1"
                )
            )
    yield db
    db.dispose()


def app_ids(db: Database) -> dict[str, int]:
    with db.read_session() as session:
        return {a.name: a.id for a in session.scalars(select(App))}


def record(session: Session, app: str, *, result: str = "success") -> int:
    """An operation record of a call on ``app``'s path, as the API writes one; its id."""
    row = OperationRecord(
        actor="dev",
        action="scale out app",
        method="POST",
        path=f"/api/v1/businesses/alpha/apps/{app}/scale-out",
        result=result,
        status_code=200 if result == "success" else 409,
        touches=store_apps.touches_app("alpha", app) if result == "success" else "",
    )
    session.add(row)
    session.flush()  # the id is taken now, as the API's insert takes it
    return row.id


def changes(
    db: Database, since: store_apps.ChangeMark, now: dt.datetime = T0
) -> tuple[store_apps.ChangeMark, set[int] | None]:
    with db.read_session() as session:
        return store_apps.changed_apps(session, since=since, now=now)


def test_a_record_that_commits_after_a_higher_one_is_seen_at_the_next_look(db: Database) -> None:
    ids = app_ids(db)
    with db.read_session() as session:
        mark = store_apps.change_mark(session, now=T0)
    slow = Session(db.engine)
    try:
        late = record(slow, "web")  # another replica's request, not committed yet
        with db.write_session() as session:
            early = record(session, "api")
        assert early > late
        mark, concerned = changes(db, mark)
        assert concerned == {ids["api"]}
        assert mark.top[0] == early and late in mark.missing[0]
        # nothing new: the missing id is asked for again, and still missing
        mark, concerned = changes(db, mark)
        assert concerned == set() and late in mark.missing[0]
        slow.commit()
    finally:
        slow.close()
    mark, concerned = changes(db, mark)
    assert concerned == {ids["web"]}  # a max-id mark would say nothing changed
    assert not any(mark.missing)
    assert changes(db, mark) == (mark, set())  # and then nothing, with the three lookups alone


def test_a_full_pass_mark_sees_an_insert_in_flight_below_the_top(db: Database) -> None:
    """A full pass reads its mark with its snapshot: a record in flight below the top then is
    in neither, and is looked at when it commits."""
    ids = app_ids(db)
    slow = Session(db.engine)
    try:
        late = record(slow, "web")
        with db.write_session() as session:
            record(session, "api")
        with db.read_session() as session:
            mark = store_apps.change_mark(session, now=T0)
        assert late in mark.missing[0]
        slow.commit()
    finally:
        slow.close()
    _, concerned = changes(db, mark)
    assert concerned == {ids["web"]}


def test_an_id_that_never_commits_is_waited_for_a_while_then_forgotten(db: Database) -> None:
    """A rolled-back insert leaves its id unused for good: it is asked for at each look for
    ``GAP_WAIT``, then dropped, and the quiet look is three lookups again."""
    with db.read_session() as session:
        mark = store_apps.change_mark(session, now=T0)
    with Session(db.engine) as aborted:
        gone = record(aborted, "web")
        aborted.rollback()
    with db.write_session() as session:
        record(session, "api", result="failure")  # failed: concerns no app
    mark, concerned = changes(db, mark)
    assert concerned == set() and gone in mark.missing[0]
    later = T0 + store_apps.GAP_WAIT - dt.timedelta(seconds=1)
    mark, concerned = changes(db, mark, later)
    assert concerned == set() and gone in mark.missing[0]
    mark, concerned = changes(db, mark, T0 + store_apps.GAP_WAIT)
    assert concerned == set() and not any(mark.missing)
    assert changes(db, mark, T0 + store_apps.GAP_WAIT) == (mark, set())


def test_more_ids_than_a_look_reads_make_a_full_pass(db: Database) -> None:
    with db.read_session() as session:
        mark = store_apps.change_mark(session, now=T0)
    with db.write_session() as session:
        for _ in range(store_apps.CHANGES_READ + 1):
            record(session, "web")
    _, concerned = changes(db, mark)
    assert concerned is None
