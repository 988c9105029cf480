"""Bad input never yields a 5xx: schemathesis fuzzes every operation of the OpenAPI document.

Runs as the platform admin (the widest reach) against the full ASGI app, on SQLite and on
PostgreSQL, with a seeded business, cluster and instance configuration so that generated paths
sometimes hit real objects. The only check is that nothing answers 5xx: 4xx answers to nonsense are
the point.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from sqlalchemy import select

from gaia.app import Platform, create_app
from gaia.domain.resources import ResourceVector
from gaia.security import new_token, token_digest
from gaia.store.models import Business, Cluster, InstanceConfig, Quota, Token, User

EXAMPLES = 15


def fresh_admin_token(platform: Platform) -> str:
    """A new admin token per case: a fuzzed logout or password change may revoke the last one."""
    token = new_token()
    with platform.db.write_session() as s:
        admin = s.scalars(select(User).where(User.username == "admin")).one()
        s.add(Token(user_id=admin.id, kind="api", name="fuzz", digest=token_digest(token)))
    return token


@pytest.fixture
def seeded(platform: Platform) -> Platform:
    with platform.db.write_session() as s:
        biz = Business(name="demo")
        cluster = Cluster(name="sim-demo", kind="sim", sim_spec={})
        s.add_all([biz, cluster])
        s.flush()
        quota = Quota(business_id=biz.id, cluster_id=cluster.id)
        quota.set_hard(ResourceVector.from_api({"cpu": 8, "gpu": 2}))
        quota.set_used(ResourceVector())
        shape = InstanceConfig(scope="platform", name="small", cpu=1000)
        s.add_all([quota, shape])
    return platform


@pytest.fixture
def api_schema(platform: Platform) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_asgi(
        "/api/openapi.json", create_app(platform, run_loops=False)
    )


# Schemathesis's pytest plugin does not support pytest 9 yet; its Python API drives Hypothesis
# directly, one strategy per operation and generation mode.
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def test_api_answers_bad_input_without_server_errors(
    api_schema: schemathesis.schemas.BaseSchema, seeded: Platform
) -> None:
    server_errors: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in MODES:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def run(case: schemathesis.Case) -> None:
                headers = {"Authorization": f"Bearer {fresh_admin_token(seeded)}"}
                response = case.call(headers=headers)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    server_errors.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: "
                        f"{response.text[:300]} (body={case.body!r:.200})"
                    )

            try:
                run()
            except Unsatisfiable:
                # No invalid input exists for an operation without parameters or body.
                assert mode is schemathesis.GenerationMode.NEGATIVE
    assert operations >= 40
    # The fuzzer really ran: many calls, successes and refusals both.
    assert sum(statuses.values()) >= operations * EXAMPLES
    assert statuses[200] > 0 and statuses[422] > 0 and statuses[404] > 0
    assert server_errors == []
