"""pipelines: CI/CD pipelines of a business, their runs and the runs' log lines

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 07:00:00.000000

Issue 18. A pipeline clones a git branch, builds it with buildah, pushes the image into the
business's namespace of Gaia's registry and may gray-upgrade an app to it. Runs are claimed by the
runner loop of any replica (``state`` + ``lease_until``); their log lines are kept bounded in
``pipeline_run_logs``. Dropping the tables on downgrade loses the pipelines and their history,
not the images (they stay in the registry).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("business_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("git_url", sa.String(length=2048), nullable=False),
        sa.Column("branch", sa.String(length=255), nullable=False),
        sa.Column("dockerfile", sa.String(length=1024), nullable=False),
        sa.Column("context", sa.String(length=1024), nullable=False),
        sa.Column("build_args", sa.JSON(), nullable=False),
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("git_credentials_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("deploy_app", sa.String(length=40), nullable=True),
        sa.Column("deploy_instances", sa.JSON(), nullable=True),
        sa.Column("schedule_minutes", sa.Integer(), nullable=True),
        sa.Column("webhook_secret_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("next_run_number", sa.Integer(), nullable=False),
        sa.Column("last_scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_pipelines_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
        sa.UniqueConstraint("business_id", "name", name=op.f("uq_pipelines_business_id")),
    )
    op.create_index(op.f("ix_pipelines_business_id"), "pipelines", ["business_id"], unique=False)
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("business_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("started_by", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("failure", sa.JSON(), nullable=True),
        sa.Column("commit", sa.String(length=64), nullable=False),
        sa.Column("image", sa.String(length=512), nullable=False),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("upgrade_id", sa.Integer(), nullable=True),
        sa.Column("log_lines", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name=op.f("fk_pipeline_runs_pipeline_id_pipelines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_runs")),
        sa.UniqueConstraint("pipeline_id", "number", name=op.f("uq_pipeline_runs_pipeline_id")),
    )
    op.create_index("ix_pipeline_runs_state", "pipeline_runs", ["state"], unique=False)
    op.create_index(
        op.f("ix_pipeline_runs_pipeline_id"), "pipeline_runs", ["pipeline_id"], unique=False
    )
    op.create_index(
        op.f("ix_pipeline_runs_business_id"), "pipeline_runs", ["business_id"], unique=False
    )
    op.create_table(
        "pipeline_run_logs",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["pipeline_runs.id"],
            name=op.f("fk_pipeline_run_logs_run_id_pipeline_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_pipeline_run_logs")),
    )


def downgrade() -> None:
    op.drop_table("pipeline_run_logs")
    op.drop_index(op.f("ix_pipeline_runs_business_id"), table_name="pipeline_runs")
    op.drop_index(op.f("ix_pipeline_runs_pipeline_id"), table_name="pipeline_runs")
    op.drop_index("ix_pipeline_runs_state", table_name="pipeline_runs")
    op.drop_table("pipeline_runs")
    op.drop_index(op.f("ix_pipelines_business_id"), table_name="pipelines")
    op.drop_table("pipelines")
