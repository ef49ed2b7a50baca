"""DICOM network: nodes (sources and destinations), deliveries of results, studies arriving

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dicom_nodes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('ae_title', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=12), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('dicom_nodes', schema=None) as batch_op:
        batch_op.create_index('ix_dicom_nodes_ae', ['ae_title'], unique=False)
        batch_op.create_index(batch_op.f('ix_dicom_nodes_organisation_id'), ['organisation_id'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('result_version', sa.String(length=40), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('first_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.Column('sent_version', sa.String(length=40), nullable=False),
    sa.Column('instances', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['dicom_nodes.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_id', 'node_id')
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_node_id'), ['node_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_study_id'), ['study_id'], unique=False)

    op.create_table('dicom_arrivals',
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('first_at', sa.DateTime(), nullable=False),
    sa.Column('last_at', sa.DateTime(), nullable=False),
    sa.Column('calling_ae', sa.String(length=16), nullable=False),
    sa.Column('instances', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('study_id')
    )
    with op.batch_alter_table('dicom_arrivals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dicom_arrivals_last_at'), ['last_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dicom_arrivals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dicom_arrivals_last_at'))
    op.drop_table('dicom_arrivals')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_study_id'))
        batch_op.drop_index(batch_op.f('ix_deliveries_node_id'))
        batch_op.drop_index('ix_deliveries_due')
    op.drop_table('deliveries')
    with op.batch_alter_table('dicom_nodes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dicom_nodes_organisation_id'))
        batch_op.drop_index('ix_dicom_nodes_ae')
    op.drop_table('dicom_nodes')
