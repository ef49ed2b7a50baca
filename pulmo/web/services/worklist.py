"""The worklist query: the studies a user may see (their organisation's, and the ones shared with
them), filtered, sorted (suspected pneumonia and high triage risk first by default) and paged,
with the count of every match.

It stays fast with 100,000 studies (``benchmarks/bench_web.py``):

* the visibility rule is two queries joined by ``UNION ALL`` (the organisation's studies; the
  few shared with the user) rather than one ``OR``, which kept the database from walking an
  index in the sort order: it read and sorted every visible row, results JSON included;
* each side walks an index in the sort order (migration 0003 has one per order and filter) on
  the narrow columns and stops after ``offset + limit`` rows; when the filters leave only a few
  studies (the count says so) they are looked up by the filters and sorted instead;
* the whole rows (patient joined, results JSON left out) are loaded for the page's ids only;
* a name search first finds the matching patients; a few: their studies are looked up by patient.

Studies without a value of the sort key (no percent involved, no triage risk) come last on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from sqlalchemy import ARRAY, Integer, any_, bindparam, exists, func, select, union_all
from sqlalchemy.orm import Session, defer

from pulmo.web.models import Patient, Study, StudyShare, User

#: The sort orders: the columns, all descending; the nullable ones with NULLs last.
SORT_KEYS = {"priority": (Study.priority, Study.received_at), "received": (Study.received_at,),
             "percent": (Study.percent_involved, Study.received_at),
             "risk": (Study.triage_prob30, Study.received_at)}
NULLABLE = {"percent_involved", "triage_prob30"}
#: A name search matching at most this many patients looks their studies up by patient.
FEW_PATIENTS = 2000
#: At most this many matching studies are looked up by the filters and sorted, not found by
#: walking the sort order's index (which would read every row when the filters match few).
SMALL_SET = 2000


def _desc(column, name: str):
    return column.desc().nulls_last() if name in NULLABLE else column.desc()


def page(session: Session, user: User, *, status: str | None = None, flag: str | None = None, q: str | None = None,
         sort: str = "priority", limit: int = 50, offset: int = 0) -> tuple[int, list[Study]]:
    """``(total, studies)``: how many visible studies match, and the page of them in order.
    ``flag`` "none": no flag yet; ``q``: the patient's name or ID contains it."""
    cond = []
    if status:
        cond.append(Study.status == status)
    if flag:
        cond.append(Study.flag == ("" if flag == "none" else flag))
    own = [Study.organisation_id == user.organisation_id, *cond]
    shared = [Study.id.in_(select(StudyShare.study_id).where(StudyShare.user_id == user.id)),
              Study.organisation_id != user.organisation_id, *cond]
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sqlite = session.get_bind().dialect.name == "sqlite"
        # SQLite's LIKE ignores the case of ASCII letters already (and its lower() knows no other)
        op = "like" if sqlite else "ilike"
        matches = getattr(Patient.name, op)(like, escape="\\") | getattr(Patient.patient_key, op)(like, escape="\\")
        # the matching patients, when few, are found once and their studies looked up by patient;
        # many: the sort order's index finds their studies soon
        found = list(session.execute(select(Patient.id).where(matches).limit(FEW_PATIENTS + 1)).scalars())
        if not found:
            return 0, []
        if len(found) > FEW_PATIENTS:
            own.append(Study.patient_id.in_(select(Patient.id).where(matches)))
        elif sqlite:
            own.append(Study.patient_id.in_(found))
        else:  # one array parameter
            own.append(Study.patient_id == any_(bindparam("patient_ids", found, type_=ARRAY(Integer))))
        shared.append(exists().where(Patient.id == Study.patient_id, matches))  # the few shared: one by one
    count = (select(func.count()).select_from(Study).where(*own).scalar_subquery()
             + select(func.count()).select_from(Study).where(*shared).scalar_subquery())
    total = session.execute(select(count)).scalar() or 0
    if total <= offset:
        return total, []
    keys = SORT_KEYS[sort]
    names = [c.key for c in keys]

    def side(where):  # one side: ids and sort keys (in order, the first offset + limit, unless few)
        s = select(Study.id.label("id"), *[c.label(f"k{i}") for i, c in enumerate(keys)]).where(*where)
        if total > SMALL_SET:
            s = s.order_by(*[_desc(c, n) for c, n in zip(keys, names)]).limit(offset + limit)
        return s.subquery()

    both = union_all(select(side(own)), select(side(shared))).subquery()
    ids = list(session.execute(
        select(both.c.id).order_by(*[_desc(both.c[f"k{i}"], n) for i, n in enumerate(names)])
        .limit(limit).offset(offset)).scalars())
    if not ids:
        return total, []
    rows = {s.id: s for s in session.execute(select(Study).options(defer(Study.results))
                                             .where(Study.id.in_(ids))).scalars()}
    return total, [rows[i] for i in ids if i in rows]
