"""Persistence: ORM models, migrations, and the operations that must be transactional."""
