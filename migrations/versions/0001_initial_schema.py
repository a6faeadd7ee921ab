"""Initial schema: bases, task vectors, tensors, components, blobs, masks, lineage, tags.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-24 06:25:31.901161
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('base_models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('num_params', sa.BigInteger(), nullable=False),
    sa.Column('raw_bytes', sa.BigInteger(), nullable=False),
    sa.Column('stored_bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_base_models')),
    sa.UniqueConstraint('name', name=op.f('uq_base_models_name'))
    )
    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_base_models_digest'), ['digest'], unique=False)

    op.create_table('blobs',
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('digest', name=op.f('pk_blobs'))
    )
    op.create_table('base_files',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('base_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('blob_digest', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['base_id'], ['base_models.id'], name=op.f('fk_base_files_base_id_base_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['blob_digest'], ['blobs.digest'], name=op.f('fk_base_files_blob_digest_blobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_base_files')),
    sa.UniqueConstraint('base_id', 'path', name=op.f('uq_base_files_base_id'))
    )
    with op.batch_alter_table('base_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_base_files_blob_digest'), ['blob_digest'], unique=False)

    op.create_table('base_tensors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('base_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('dtype', sa.String(length=8), nullable=False),
    sa.Column('shape', sa.JSON(), nullable=False),
    sa.Column('codec', sa.JSON(), nullable=False),
    sa.Column('blob_digest', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['base_id'], ['base_models.id'], name=op.f('fk_base_tensors_base_id_base_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['blob_digest'], ['blobs.digest'], name=op.f('fk_base_tensors_blob_digest_blobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_base_tensors')),
    sa.UniqueConstraint('base_id', 'name', name=op.f('uq_base_tensors_base_id'))
    )
    with op.batch_alter_table('base_tensors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_base_tensors_blob_digest'), ['blob_digest'], unique=False)

    op.create_table('masks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('tensor_name', sa.Text(), nullable=False),
    sa.Column('shape', sa.JSON(), nullable=False),
    sa.Column('blob_digest', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['blob_digest'], ['blobs.digest'], name=op.f('fk_masks_blob_digest_blobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_masks'))
    )
    with op.batch_alter_table('masks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_masks_blob_digest'), ['blob_digest'], unique=False)
        batch_op.create_index(batch_op.f('ix_masks_name'), ['name'], unique=False)

    op.create_table('task_vectors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('base_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('codec', sa.JSON(), nullable=False),
    sa.Column('raw_bytes', sa.BigInteger(), nullable=False),
    sa.Column('stored_bytes', sa.BigInteger(), nullable=False),
    sa.Column('num_params', sa.BigInteger(), nullable=False),
    sa.Column('num_tensors', sa.Integer(), nullable=False),
    sa.Column('rel_l2', sa.Float(), nullable=True),
    sa.Column('cosine', sa.Float(), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('recipe', sa.JSON(), nullable=True),
    sa.Column('source_digest', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['base_id'], ['base_models.id'], name=op.f('fk_task_vectors_base_id_base_models'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_vectors')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_task_vectors_name'))
    )
    with op.batch_alter_table('task_vectors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_vectors_base_id'), ['base_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_task_vectors_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_task_vectors_source_digest'), ['source_digest'], unique=False)

    op.create_table('lineage',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('child_id', sa.Integer(), nullable=False),
    sa.Column('relation', sa.String(length=32), nullable=False),
    sa.Column('parent_vector_id', sa.Integer(), nullable=True),
    sa.Column('parent_base_id', sa.Integer(), nullable=True),
    sa.Column('parent_note', sa.Text(), nullable=False),
    sa.Column('weight', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['child_id'], ['task_vectors.id'], name=op.f('fk_lineage_child_id_task_vectors'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_base_id'], ['base_models.id'], name=op.f('fk_lineage_parent_base_id_base_models'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['parent_vector_id'], ['task_vectors.id'], name=op.f('fk_lineage_parent_vector_id_task_vectors'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lineage'))
    )
    with op.batch_alter_table('lineage', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lineage_child_id'), ['child_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_lineage_parent_vector_id'), ['parent_vector_id'], unique=False)

    op.create_table('tags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('tag', sa.String(length=200), nullable=False),
    sa.Column('vector_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['vector_id'], ['task_vectors.id'], name=op.f('fk_tags_vector_id_task_vectors'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tags')),
    sa.UniqueConstraint('name', 'tag', name=op.f('uq_tags_name'))
    )
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tags_vector_id'), ['vector_id'], unique=False)

    op.create_table('vector_tensors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('vector_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('role', sa.String(length=8), nullable=False),
    sa.Column('dtype', sa.String(length=8), nullable=False),
    sa.Column('shape', sa.JSON(), nullable=False),
    sa.Column('codec', sa.JSON(), nullable=False),
    sa.Column('raw_bytes', sa.BigInteger(), nullable=False),
    sa.Column('stored_bytes', sa.BigInteger(), nullable=False),
    sa.Column('rel_l2', sa.Float(), nullable=True),
    sa.Column('cosine', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['vector_id'], ['task_vectors.id'], name=op.f('fk_vector_tensors_vector_id_task_vectors'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vector_tensors')),
    sa.UniqueConstraint('vector_id', 'name', name=op.f('uq_vector_tensors_vector_id'))
    )
    op.create_table('components',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tensor_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('codec', sa.JSON(), nullable=False),
    sa.Column('blob_digest', sa.String(length=64), nullable=False),
    sa.Column('scale', sa.Float(), nullable=False),
    sa.Column('mask_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['blob_digest'], ['blobs.digest'], name=op.f('fk_components_blob_digest_blobs')),
    sa.ForeignKeyConstraint(['mask_id'], ['masks.id'], name=op.f('fk_components_mask_id_masks'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['tensor_id'], ['vector_tensors.id'], name=op.f('fk_components_tensor_id_vector_tensors'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_components')),
    sa.UniqueConstraint('tensor_id', 'position', name=op.f('uq_components_tensor_id'))
    )
    with op.batch_alter_table('components', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_components_blob_digest'), ['blob_digest'], unique=False)
        batch_op.create_index(batch_op.f('ix_components_mask_id'), ['mask_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('components', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_components_mask_id'))
        batch_op.drop_index(batch_op.f('ix_components_blob_digest'))

    op.drop_table('components')
    op.drop_table('vector_tensors')
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tags_vector_id'))

    op.drop_table('tags')
    with op.batch_alter_table('lineage', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lineage_parent_vector_id'))
        batch_op.drop_index(batch_op.f('ix_lineage_child_id'))

    op.drop_table('lineage')
    with op.batch_alter_table('task_vectors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_vectors_source_digest'))
        batch_op.drop_index(batch_op.f('ix_task_vectors_name'))
        batch_op.drop_index(batch_op.f('ix_task_vectors_base_id'))

    op.drop_table('task_vectors')
    with op.batch_alter_table('masks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_masks_name'))
        batch_op.drop_index(batch_op.f('ix_masks_blob_digest'))

    op.drop_table('masks')
    with op.batch_alter_table('base_tensors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_base_tensors_blob_digest'))

    op.drop_table('base_tensors')
    with op.batch_alter_table('base_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_base_files_blob_digest'))

    op.drop_table('base_files')
    op.drop_table('blobs')
    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_base_models_digest'))

    op.drop_table('base_models')
