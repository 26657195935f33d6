"""web app: sessions, label queues, task settings

The tables of the web app under /app (prefloop.serve.web): sign-in sessions, each task's
labeling settings, the items of the labeling queues and the labelers' leases on them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 00:11:22.404348
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the dashboard lists a task's newest generations
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_generations_task_created", ["task_id", "created_at"], unique=False
        )
    op.create_table(
        "app_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_app_sessions_token_hash")),
    )
    op.create_table(
        "label_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("group_key", sa.String(length=64), nullable=False),
        sa.Column("generation_ids", sa.JSON(), nullable=False),
        sa.Column("arm_ids", sa.JSON(), nullable=False),
        sa.Column("arm_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("gold", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_label_items_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_items")),
        sa.UniqueConstraint("task_id", "kind", "group_key", name="uq_label_items_task_kind_group"),
    )
    with op.batch_alter_table("label_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_label_items_queue", ["task_id", "kind", "status", "id"], unique=False
        )

    op.create_table(
        "task_settings",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("overlap", sa.Integer(), nullable=False),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(length=20), nullable=False),
        sa.Column("rank_size", sa.Integer(), nullable=False),
        sa.Column("level_texts", sa.JSON(), nullable=False),
        sa.Column("guidelines", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_settings_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_settings")),
    )
    op.create_table(
        "label_leases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("labeler", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("order", sa.JSON(), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=True),
        sa.Column("feedback_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["label_items.id"],
            name=op.f("fk_label_leases_item_id_label_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_label_leases_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_leases")),
        sa.UniqueConstraint("item_id", "labeler", name="uq_label_leases_item_labeler"),
    )
    with op.batch_alter_table("label_leases", schema=None) as batch_op:
        batch_op.create_index("ix_label_leases_item_status", ["item_id", "status"], unique=False)
        batch_op.create_index(
            "ix_label_leases_labeler", ["task_id", "labeler", "status"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_index("ix_generations_task_created")
    with op.batch_alter_table("label_leases", schema=None) as batch_op:
        batch_op.drop_index("ix_label_leases_labeler")
        batch_op.drop_index("ix_label_leases_item_status")

    op.drop_table("label_leases")
    op.drop_table("task_settings")
    with op.batch_alter_table("label_items", schema=None) as batch_op:
        batch_op.drop_index("ix_label_items_queue")

    op.drop_table("label_items")
    op.drop_table("app_sessions")
