"""Components may be ``xor`` (an exact fine-tune as its bits XOR the base's); the database names the kinds.

A tvstore from before this revision would read an ``xor`` component as
neither ``add`` nor ``fix`` and skip it, rebuilding the base instead of the
fine-tune. Bumping the schema makes such a release refuse the registry
("made by a newer tvstore") instead, and the check constraint keeps any
other unknown kind out. Existing rows (``add`` and ``fix``) stay as they are.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:45:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_KINDS = "kind IN ('add', 'fix', 'xor')"


def upgrade() -> None:
    with op.batch_alter_table("components") as batch:
        batch.create_check_constraint("kind", _KINDS)


def downgrade() -> None:
    with op.batch_alter_table("components") as batch:
        batch.drop_constraint("kind", type_="check")
