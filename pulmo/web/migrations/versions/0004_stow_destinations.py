"""DICOMweb destinations: a node may receive results by STOW-RS (``dicom_nodes.stow_url``)

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dicom_nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stow_url', sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('dicom_nodes', schema=None) as batch_op:
        batch_op.drop_column('stow_url')
