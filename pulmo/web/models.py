"""The platform's tables (SQLAlchemy 2). Every study, patient and instance belongs to one
organisation (the hospital that owns the data); users see their organisation's studies and the
ones shared with them. Times are UTC. Schema changes go through Alembic (``migrations/``)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("admin", "radiologist", "clinician")
STATUSES = ("queued", "running", "done", "failed")
LANGUAGES = ("en", "zh-CN")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Organisation(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    language: Mapped[str] = mapped_column(String(10), default="en")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    organisation: Mapped[Organisation] = relationship(lazy="joined")


class WebSession(Base):
    """A browser session: the cookie holds a random token, the table its SHA-256."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ApiToken(Base):
    """A bearer token for the API (the table holds its SHA-256)."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginAttempt(Base):
    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)
    __table_args__ = (Index("ix_login_attempts_who", "username", "address", "at"),)


class Patient(Base):
    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    patient_key: Mapped[str] = mapped_column(String(128))   # DICOM PatientID, or one Pulmo made
    name: Mapped[str] = mapped_column(String(200), default="")
    birth_date: Mapped[str] = mapped_column(String(10), default="")
    sex: Mapped[str] = mapped_column(String(10), default="")
    synthetic: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("organisation_id", "patient_key"),)


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(80))
    description: Mapped[str] = mapped_column(String(200), default="")
    study_date: Mapped[str] = mapped_column(String(10), default="")
    source: Mapped[str] = mapped_column(String(20), default="upload")
    synthetic: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    status: Mapped[str] = mapped_column(String(10), default="queued")
    error: Mapped[str] = mapped_column(Text, default="")
    n_instances: Mapped[int] = mapped_column(Integer, default=0)
    # headline results, copied from results for the worklist (sorted and filtered without JSON)
    flag: Mapped[str] = mapped_column(String(16), default="")        # positive / negative / indeterminate / ""
    percent_involved: Mapped[float | None] = mapped_column(Float, nullable=True)
    severity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    severity_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    nodules: Mapped[int] = mapped_column(Integer, default=0)
    triage_risk: Mapped[str] = mapped_column(String(10), default="")  # low / medium / high / ""
    triage_prob30: Mapped[float | None] = mapped_column(Float, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)         # read these first: higher first
    results: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    patient: Mapped[Patient] = relationship(lazy="joined")
    __table_args__ = (UniqueConstraint("organisation_id", "study_uid"),
                      Index("ix_studies_worklist", "organisation_id", "priority", "received_at"),
                      Index("ix_studies_status", "organisation_id", "status", "received_at"),
                      # the worklist's other orders and filters (migration 0003; on PostgreSQL the
                      # percent and risk indexes are declared DESC NULLS LAST, as the worklist sorts)
                      Index("ix_studies_received", "organisation_id", "received_at"),
                      Index("ix_studies_percent", "organisation_id", "percent_involved", "received_at"),
                      Index("ix_studies_risk", "organisation_id", "triage_prob30", "received_at"),
                      Index("ix_studies_flag", "organisation_id", "flag", "priority", "received_at"),
                      Index("ix_studies_status_priority", "organisation_id", "status", "priority", "received_at"),
                      Index("ix_studies_org_patient", "organisation_id", "patient_id"))


class Instance(Base):
    """One stored DICOM instance; deduplicated by SOP Instance UID within an organisation."""

    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    sop_uid: Mapped[str] = mapped_column(String(80))
    series_uid: Mapped[str] = mapped_column(String(80), default="")
    key: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(Integer)
    __table_args__ = (UniqueConstraint("organisation_id", "sop_uid"),)


class Job(Base):
    """An analysis to run. Its state lives here: a worker claims it, beats its heartbeat while
    it runs, and a stale one (worker killed) is claimed again, up to ``max_attempts``."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20), default="analyze")
    state: Mapped[str] = mapped_column(String(10), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    worker: Mapped[str] = mapped_column(String(100), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (Index("ix_jobs_state", "state", "created_at"),)


class ClinicalData(Base):
    """The triage features entered or uploaded for a study's patient, and the last prediction."""

    __tablename__ = "clinical_data"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), unique=True)
    features: Mapped[dict] = mapped_column(JSON)
    triage: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)


class Report(Base):
    __tablename__ = "reports"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), unique=True)
    impression: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(10), default="draft")   # draft / signed
    signed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    signed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)


class StudyShare(Base):
    """A study shared for consultation with a user of another organisation."""

    __tablename__ = "study_shares"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    shared_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("study_id", "user_id"),)


class Comment(Base):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("comments.id"), nullable=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    author: Mapped[User] = relationship(lazy="joined")


class ShareLink(Base):
    """A read-only "cloud film" link to one study (the table holds the token's SHA-256)."""

    __tablename__ = "share_links"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_hint: Mapped[str] = mapped_column(String(8), default="")
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    pin_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)


class AuditEntry(Base):
    """Append-only: each entry's ``hash`` is SHA-256 over its content and the previous entry's
    hash, so a changed or deleted entry breaks the chain (:func:`pulmo.web.services.audit.verify`)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    username: Mapped[str] = mapped_column(String(100), default="")
    organisation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(40), index=True)
    target_type: Mapped[str] = mapped_column(String(20), default="")
    target_id: Mapped[str] = mapped_column(String(80), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Setting(Base):
    """Platform settings an admin changes at run time (the imported triage model, ...)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


NODE_ROLES = ("source", "destination", "both")
DELIVERY_STATUSES = ("pending", "sent", "failed")


class DicomNode(Base):
    """A PACS or modality of an organisation on the DICOM network. A ``source`` (or ``both``) may
    send instances to Pulmo's Storage SCP (its calling AE title names the organisation they belong
    to); a ``destination`` (or ``both``) receives the results of the organisation's analyses."""

    __tablename__ = "dicom_nodes"
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    ae_title: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(12))
    #: a DICOMweb destination: results go by STOW-RS to ``{stow_url}/studies`` instead of C-STORE
    stow_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    organisation: Mapped[Organisation] = relationship(lazy="joined")
    __table_args__ = (Index("ix_dicom_nodes_ae", "ae_title"),)


class Delivery(Base):
    """The results (SEG, SR, SC) of a study's latest analysis, to one destination node: one row per
    study and node, set back to ``pending`` when a new analysis replaces the result (its
    ``result_version``: the analysis's ``created`` stamp) or on a manual resend."""

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("dicom_nodes.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    result_version: Mapped[str] = mapped_column(String(40), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    first_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    sent_version: Mapped[str] = mapped_column(String(40), default="")
    instances: Mapped[int] = mapped_column(Integer, default=0)
    node: Mapped[DicomNode] = relationship(lazy="joined")
    __table_args__ = (UniqueConstraint("study_id", "node_id"),
                      Index("ix_deliveries_due", "status", "next_attempt_at"))


class DicomArrival(Base):
    """A study receiving instances over the network: present while instances have arrived that
    no analysis was queued for yet; the listener queues the analysis once ``last_at`` is older
    than the quiet period (``Settings.dicom_quiet_s``) and removes the row."""

    __tablename__ = "dicom_arrivals"
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    first_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    instances: Mapped[int] = mapped_column(Integer, default=0)
