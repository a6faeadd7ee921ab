"""Vector names with their last version, so versions are never reused after removal.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 07:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vector_names",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_vector_names")),
    )
    # every existing name starts from its highest version so far
    op.execute(
        "INSERT INTO vector_names (name, last_version, created_at) "
        "SELECT name, MAX(version), MIN(created_at) FROM task_vectors GROUP BY name"
    )


def downgrade() -> None:
    op.drop_table("vector_names")
