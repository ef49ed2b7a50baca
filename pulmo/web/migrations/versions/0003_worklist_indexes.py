"""worklist indexes: every sort order of the worklist, and its status, flag and patient filters,
walk an index (fast with 100,000 studies; see pulmo/web/services/worklist.py and
benchmarks/bench_web.py)

Revision ID: 0003
Revises: 0002
"""
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

#: name: columns. The worklist sorts descending, the nullable keys with NULLs last: SQLite walks a
#: plain index backwards in that order (NULL sorts first there), PostgreSQL needs it declared.
INDEXES = {
    "ix_studies_received": ["organisation_id", "received_at"],
    "ix_studies_percent": ["organisation_id", "percent_involved", "received_at"],
    "ix_studies_risk": ["organisation_id", "triage_prob30", "received_at"],
    "ix_studies_flag": ["organisation_id", "flag", "priority", "received_at"],
    "ix_studies_status_priority": ["organisation_id", "status", "priority", "received_at"],
    "ix_studies_org_patient": ["organisation_id", "patient_id"],
}
NULLS_LAST = {"ix_studies_percent", "ix_studies_risk"}


def upgrade() -> None:
    from sqlalchemy import text

    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, columns in INDEXES.items():
        if postgresql and name in NULLS_LAST:
            columns = [columns[0], text(f"{columns[1]} DESC NULLS LAST"), text(f"{columns[2]} DESC")]
        op.create_index(name, "studies", columns)


def downgrade() -> None:
    for name in reversed(list(INDEXES)):
        op.drop_index(name, table_name="studies")
