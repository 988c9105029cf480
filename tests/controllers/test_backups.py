"""Scheduled backups and backups asked for through the API (docs/backup.md), on SQLite and
PostgreSQL: the ``controllers`` loop takes them (``ScheduledBackups``, driven one pass at a
time), the API lists them as a page, newest first, with their state and progress, the
retention keeps the newest ``GAIA_BACKUP_KEEP``, and ``gaia_backup_*`` report the last one.
Each archive written is a real backup: its manifest lists the database part with its SHA-256."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gaia.clock import ManualClock
from gaia.controllers.backups import ScheduledBackups
from gaia.platform import Platform
from gaia.store import backups
from gaia.store.backup import read_manifest


def backup_loop(platform: Platform, **settings: object) -> ScheduledBackups:
    return ScheduledBackups(
        db=platform.db,
        settings=platform.settings.model_copy(update=settings),
        secrets=platform.secrets,
        clock=platform.clock,
    )


def one_pass(loop: ScheduledBackups) -> None:
    asyncio.run(loop.start(loops=1))
    assert loop.failures == 0


def metrics(platform: Platform) -> dict[str, float]:
    text = generate_latest(platform.metrics.registry).decode()
    return {
        sample.name
        + (f"{{{sample.labels['state']}}}" if "state" in sample.labels else ""): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("gaia_backup")
        for sample in family.samples
    }


def test_a_backup_asked_for_through_the_api_is_taken_by_the_loop(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    assert "gaia_backup_last_success_timestamp_seconds" not in metrics(platform)
    r = client.post("/api/v1/backups", headers=admin)
    assert r.status_code == 202, r.text
    asked = r.json()
    assert asked["state"] == "Pending" and asked["trigger"] == "api"
    assert asked["requested_by"] == "admin"
    again = client.post("/api/v1/backups", headers=admin)
    assert again.status_code == 409 and "pending" in again.json()["message"]

    loop = backup_loop(platform, backup_every_seconds=0)
    one_pass(loop)
    done = client.get(f"/api/v1/backups/{asked['id']}", headers=admin).json()
    assert done["state"] == "Succeeded", done
    assert done["started_at"] and done["finished_at"] and done["progress"] == ""
    archive = loop.folder / done["file_name"]
    assert archive.stat().st_size == done["size_bytes"]
    manifest = read_manifest(archive)
    assert [p.path for p in manifest.parts] == done["parts"]
    assert manifest.parts[0].kind == "database"
    assert manifest.key.included is False

    figures = metrics(platform)
    assert figures["gaia_backup_last_size_bytes"] == done["size_bytes"]
    assert figures["gaia_backup_last_duration_seconds"] >= 0
    assert figures["gaia_backup_last_success_timestamp_seconds"] > 0
    assert figures["gaia_backups{Succeeded}"] == 1


def test_the_schedule_takes_one_per_period_and_keeps_the_newest(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    clock = platform.clock
    assert isinstance(clock, ManualClock)
    loop = backup_loop(platform, backup_every_seconds=3600, backup_keep=2)
    one_pass(loop)
    one_pass(loop)  # within the hour: nothing new
    assert len(client.get("/api/v1/backups", headers=admin).json()["items"]) == 1
    for _ in range(3):
        clock.step(3600)
        one_pass(loop)
    listed = client.get("/api/v1/backups", headers=admin).json()["items"]
    assert [b["state"] for b in listed] == ["Succeeded", "Succeeded"]
    assert all(b["trigger"] == "schedule" for b in listed)
    assert listed[0]["id"] > listed[1]["id"]  # newest first
    on_disk = sorted(p.name for p in loop.folder.glob("*.tar"))
    assert on_disk == sorted(b["file_name"] for b in listed)
    for name in on_disk:
        manifest = read_manifest(loop.folder / name)
        assert manifest.parts[0].size > 0 and len(manifest.parts[0].sha256) == 64

    page = client.get("/api/v1/backups", params={"limit": 1}, headers=admin).json()
    assert [b["id"] for b in page["items"]] == [listed[0]["id"]]
    rest = client.get(
        "/api/v1/backups", params={"limit": 1, "cursor": page["next_cursor"]}, headers=admin
    ).json()
    assert [b["id"] for b in rest["items"]] == [listed[1]["id"]] and rest["next_cursor"] is None


def test_a_pass_with_nothing_to_do_takes_no_writer_turn(
    client: TestClient, admin: dict[str, str], platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop asks every few seconds: with nothing pending, nothing due and nothing to drop
    it only reads (on SQLite there is one writer at a time, and it belongs to the API)."""
    loop = backup_loop(platform, backup_every_seconds=3600, backup_keep=1)
    one_pass(loop)  # the schedule's first backup
    opened: list[int] = []
    write_session = platform.db.write_session

    def counted() -> Any:
        opened.append(1)
        return write_session()

    monkeypatch.setattr(platform.db, "write_session", counted)
    one_pass(loop)
    assert opened == []
    assert client.post("/api/v1/backups", headers=admin).status_code == 202
    one_pass(loop)  # one asked for: claimed, taken, and the older one dropped
    assert opened
    listed = client.get("/api/v1/backups", headers=admin).json()["items"]
    assert [(b["trigger"], b["state"]) for b in listed] == [("api", "Succeeded")]


def test_a_failed_backup_says_why_and_a_dead_leaders_running_one_is_failed(
    client: TestClient, admin: dict[str, str], platform: Platform, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the backup folder should be")
    loop = backup_loop(platform, backup_every_seconds=0, backup_dir=blocked)
    asked = client.post("/api/v1/backups", headers=admin).json()
    one_pass(loop)
    failed = client.get(f"/api/v1/backups/{asked['id']}", headers=admin).json()
    assert failed["state"] == "Failed" and "not-a-folder" in failed["message"]

    # a Running row at the start of a pass was left by another process
    with platform.db.write_session() as session:
        stale = backups.request_backup(session, trigger="api", by="admin", now=platform.clock.now())
        backups.claim_next(session, now=platform.clock.now())
        stale_id = stale.id
    one_pass(backup_loop(platform, backup_every_seconds=0))
    left = client.get(f"/api/v1/backups/{stale_id}", headers=admin).json()
    assert left["state"] == "Failed" and "stopped" in left["message"]
