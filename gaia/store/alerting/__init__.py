"""Alerting's persistence: owned alert objects, policies and silences, records, the outbox.

- ``owned``: what every business- or platform-owned alert object shares (whose objects a listing
  covers, find by id, unique names, same-owner references, who still names an object);
- ``targets``: channels, receivers and receiver groups;
- ``policies``: policies' scope checks and writes, silences;
- ``records``: what the evaluator loads and writes per pass, record reads;
- ``outbox``: notification rows queued with their alert event, claimed with a lease by the
  delivery loop, closed with each send's result.

Nothing here speaks HTTP or sends anything; errors are ``gaia.domain.errors`` with the messages the
API shows. See docs/architecture.md (the store).
"""
