"""A study's report: the impression a radiologist writes (pre-filled from the AI results), its
signing and amending, and the PDF.

Who may do what (:mod:`pulmo.web.services.access`): every user who may see the study reads the
report and downloads the PDF; a radiologist of the organisation that owns the study edits the
impression, signs it and amends a signed report (it becomes a draft again). A study without a
report row gets a draft whose impression is written from the AI results, in the reader's
language, saying that Pulmo wrote it and that it must be checked.

The PDF (reportlab, no font downloads: Helvetica for Latin text and reportlab's built-in CID
font ``STSong-Light`` for Chinese and anything else Helvetica lacks) holds the patient and the
study (SYNTHETIC marked), the research-tool statement, the impression with its status, the
findings per lung and region, the severity, the pneumonia flag, nodules, warnings, the key axial
image rendered from the viewer volume, the triage result when clinical data exist, and the
version and method of Pulmo.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from xml.sax.saxutils import escape

import numpy as np
from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo import DISCLAIMER, __version__
from pulmo.web import i18n
from pulmo.web.models import ClinicalData, Report, Study, User, utcnow
from pulmo.web.services import access, audit
from pulmo.web.services.analysis import study_prefix

MAX_IMPRESSION = 20000
CJK_FONT = "STSong-Light"
RESEARCH_TOOL = "Research tool, not a certified medical device."
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# ----------------------------------------------------------------------------- state and actions


def _(lang: str, text: str, /, **values) -> str:
    return i18n.translate(lang, text, **values)


def find(session: Session, study: Study, lock: bool = False) -> Report | None:
    q = select(Report).where(Report.study_id == study.id)
    if lock:
        q = q.with_for_update()
    return session.execute(q).scalar()


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat(timespec="seconds") + "Z" if t else None


def may_edit(study: Study, user: User | None) -> bool:
    """A radiologist of the organisation that owns the study."""
    return user is not None and study.organisation_id == user.organisation_id and user.role in access.EDIT_REPORT


def state(session: Session, study: Study, user: User | None, lang: str) -> dict:
    """The report as ``GET /api/studies/{id}/report`` gives it (a draft from the AI results when
    there is no report yet); ``user`` None (a share link's visitor) may do nothing with it."""
    report = find(session, study)
    status = report.status if report else "draft"
    signer = session.get(User, report.signed_by) if report and report.signed_by else None
    editor = may_edit(study, user)
    draft = status != "signed"
    return {"impression": report.impression if report else draft_impression(session, study, lang),
            "status": status, "signed_by": signer.username if signer else None,
            "signed_at": _iso(report.signed_at) if report and status == "signed" else None,
            "can_edit": editor and draft, "can_sign": editor and draft and study.status == "done",
            "can_amend": editor and not draft}


def clean_text(text: str) -> str:
    """The impression as stored: control characters (other than tab and line breaks) removed,
    line breaks normalised."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def save(session: Session, study: Study, user: User, text: str, address: str = "") -> Report:
    """Store the impression of a draft (409 when the report is signed)."""
    text = clean_text(text)
    if len(text) > MAX_IMPRESSION:
        raise HTTPException(422, f"the impression is longer than {MAX_IMPRESSION} characters")
    report = find(session, study, lock=True)
    if report is not None and report.status == "signed":
        raise HTTPException(409, "the report is signed: amend it first to change the impression")
    if report is None:
        report = Report(study_id=study.id, status="draft")
        session.add(report)
    report.impression, report.updated_by, report.updated_at = text, user.id, utcnow()
    session.flush()
    audit.record(session, "report.update", user, "study", study.id, address, {"characters": len(text)})
    return report


def sign(session: Session, study: Study, user: User, address: str = "", lang: str = "en") -> Report:
    """Sign the report: who and when (409 when already signed or the analysis is not done). A
    study without a saved impression is signed with the AI draft in the signer's language."""
    if study.status != "done":
        raise HTTPException(409, f"the analysis is not done (status {study.status}): nothing to sign yet")
    report = find(session, study, lock=True)
    if report is not None and report.status == "signed":
        raise HTTPException(409, "the report is already signed")
    if report is None:
        report = Report(study_id=study.id, impression=draft_impression(session, study, lang), status="draft")
        session.add(report)
    if not report.impression.strip():
        raise HTTPException(422, "the impression is empty: write it before signing")
    now = utcnow()
    report.status, report.signed_by, report.signed_at = "signed", user.id, now
    report.updated_by, report.updated_at = user.id, now
    session.flush()
    audit.record(session, "report.sign", user, "study", study.id, address,
                 {"signed_at": _iso(now), "characters": len(report.impression)})
    return report


def amend(session: Session, study: Study, user: User, address: str = "") -> Report:
    """A signed report becomes a draft again (409 when it is not signed); the signature it had is
    kept in the audit log."""
    report = find(session, study, lock=True)
    if report is None or report.status != "signed":
        raise HTTPException(409, "the report is not signed: there is nothing to amend")
    signer = session.get(User, report.signed_by) if report.signed_by else None
    before = {"signed_by": signer.username if signer else None, "signed_at": _iso(report.signed_at)}
    report.status, report.signed_by, report.signed_at = "draft", None, None
    report.updated_by, report.updated_at = user.id, utcnow()
    session.flush()
    audit.record(session, "report.amend", user, "study", study.id, address, {"was": before})
    return report


# ----------------------------------------------------------------------------- the AI draft


def _f(v, nd: int = 1) -> str:
    return "–" if v is None else f"{float(v):.{nd}f}"


def region_name(lang: str, name: str | None, capital: bool = False) -> str:
    """A lobe or zone name of the analysis in ``lang`` (``capital``: first letter upper case)."""
    text = _(lang, name) if name else ""
    return text[:1].upper() + text[1:] if capital else text


def _pattern(lang: str, total: dict) -> str:
    share = total.get("ggo_share_of_lesion_pct")
    if share is None:
        return _(lang, "ground-glass opacity and consolidation")
    if share >= 80:
        return _(lang, "predominantly ground-glass opacity")
    if share <= 20:
        return _(lang, "predominantly consolidation")
    return _(lang, "mixed ground-glass opacity and consolidation")


def _sides(lang: str, lungs: dict, min_ml: float) -> str:
    right = (lungs.get("right") or {}).get("lesion_ml") or 0.0
    left = (lungs.get("left") or {}).get("lesion_ml") or 0.0
    floor = max(min_ml, 1e-9)
    if right >= floor and left >= floor:
        return _(lang, "both lungs")
    if right >= left:
        return _(lang, "the right lung")
    return _(lang, "the left lung")


def severity_text(lang: str, sev: dict | None) -> str:
    if not sev:
        return ""
    if sev.get("value") is None:
        return _(lang, "Severity: not scored, because the scan does not cover both lungs from apex to base.")
    if sev.get("kind") == "lobar":
        return _(lang, "Severity: CT severity score, lobar (Pan et al. 2020): {value}/{max}.",
                 value=sev["value"], max=sev["max"])
    return _(lang, "Severity: zone-based CT severity score (6 zones × 0–5, adapted from the lobar score of Pan et "
                   "al. 2020, not the validated lobar score): {value}/{max}.", value=sev["value"], max=sev["max"])


def flag_text(lang: str, pn: dict | None) -> str:
    if not pn:
        return ""
    flag = pn.get("flag")
    values = {"score": _f(pn.get("score")), "threshold": _f(pn.get("threshold"))}
    if flag is True:
        return _(lang, "Pneumonia screening flag: positive ({score} % of the lungs involved, threshold {threshold} %); "
                       "a screening flag, not a diagnosis.", **values)
    if flag == "indeterminate":
        return _(lang, "Pneumonia screening flag: indeterminate ({score} % of the lungs involved, but the lungs read "
                       "dense overall, which a density-based score cannot tell from pneumonia).", **values)
    return _(lang, "Pneumonia screening flag: negative ({score} % of the lungs involved, below the threshold of "
                   "{threshold} %).", **values)


def nodule_text(lang: str, n: dict) -> str:
    kind = _(lang, "mass") if n.get("kind") == "mass" else _(lang, "nodule")
    side = _(lang, "right lung") if n.get("lung") == "right" else _(lang, "left lung")
    where = region_name(lang, n.get("region")) or side
    return _(lang, "No. {number}: {kind}, {diameter} mm, {where}", number=n.get("number", "?"), kind=kind,
             diameter=_f(n.get("diameter_mm")), where=where)


def warning_text(w: dict) -> str:
    return str(w.get("message") or w.get("code") or "")


def draft_impression(session: Session, study: Study, lang: str) -> str:
    """A short clinician-style summary of the AI results, marked as written by Pulmo."""
    head = _(lang, "AI draft written by Pulmo {version} from the automatic analysis: check every statement against "
                   "the images and edit it before signing.", version=__version__)
    if study.status != "done" or not study.results:
        return head + "\n" + _(lang, "No AI results yet: the analysis is {status}.", status=_(lang, study.status))
    r = study.results
    q = r.get("quantification") or {}
    lines = [head]
    if not r.get("assessable", True) or not q:
        lines.append(_(lang, "The study is not assessable by Pulmo (see the warnings): no severity score and no "
                             "pneumonia flag."))
        for w in r.get("warnings") or []:
            lines.append(_(lang, "Warning: {text}", text=warning_text(w)))
        return "\n".join(lines)
    lungs = q.get("lungs") or {}
    total = lungs.get("total") or {}
    sev = q.get("severity") or {}
    pn = q.get("pneumonia") or {}
    nodules = q.get("nodules") or []
    cov = q.get("coverage") or {}
    lesion = total.get("lesion_ml") or 0.0
    if lesion > 0:
        lines.append(_(lang, "Findings: {pattern} in {sides}, involving {pct} % of the lung volume in view (right lung "
                             "{right} %, left lung {left} %); ground glass {ggo} mL, consolidation {cons} mL.",
                       pattern=_pattern(lang, total), sides=_sides(lang, lungs, sev.get("region_min_ml") or 0.0),
                       pct=_f(total.get("percent_involved")),
                       right=_f((lungs.get("right") or {}).get("percent_involved")),
                       left=_f((lungs.get("left") or {}).get("percent_involved")),
                       ggo=_f(total.get("ggo_ml")), cons=_f(total.get("consolidation_ml"))))
        top = sorted((g for g in q.get("regions") or [] if (g.get("lesion_ml") or 0) > 0),
                     key=lambda g: -(g.get("percent_involved") or 0))[:3]
        if top:
            sep = _(lang, ", ")
            lines.append(_(lang, "Most involved: {regions}.", regions=sep.join(
                f"{region_name(lang, g.get('name'))} {_f(g.get('percent_involved'))} %" for g in top)))
    else:
        lines.append(_(lang, "Findings: no ground-glass opacity or consolidation found in the lungs."))
    if sev:
        lines.append(severity_text(lang, sev))
    if pn:
        lines.append(flag_text(lang, pn))
    if nodules:
        sep = _(lang, "; ")
        lines.append(_(lang, "Nodules / focal opacities (not counted as pneumonia): {list}; to be assessed by the "
                             "radiologist (Fleischner Society guidelines).",
                       list=sep.join(nodule_text(lang, n) for n in nodules[:5])
                       + (sep + _(lang, "{n} more", n=len(nodules) - 5) if len(nodules) > 5 else "")))
    else:
        lines.append(_(lang, "No nodules or masses found."))
    if cov and not cov.get("complete", True):
        lines.append(_(lang, "Coverage: the scan does not cover both lungs from apex to base; the figures cover the "
                             "part in view."))
    for w in r.get("warnings") or []:
        if w.get("code") == "partial_coverage" and cov and not cov.get("complete", True):
            continue
        lines.append(_(lang, "Warning: {text}", text=warning_text(w)))
    flag = pn.get("flag")
    pct = _f(total.get("percent_involved"))
    if flag is True:
        summary = _(lang, "Impression: opacities suggestive of pneumonia on the AI screening, {pct} % of the lungs "
                          "involved.", pct=pct)
    elif flag == "indeterminate":
        summary = _(lang, "Impression: indeterminate on the AI screening (dense lungs); review the images.")
    elif lesion > 0:
        summary = _(lang, "Impression: no pneumonia pattern on the AI screening (small opacities, {pct} % of the "
                          "lungs, below the screening threshold).", pct=pct)
    else:
        summary = _(lang, "Impression: no pneumonia pattern on the AI screening.")
    if nodules:
        summary += " " + _(lang, "{n} nodule(s) or mass(es) to be assessed.", n=len(nodules))
    lines.append(summary)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- key image


def key_axial_png(storage, study: Study) -> tuple[bytes, int, int] | None:
    """The key axial slice (``viewer/meta.json``'s ``key_slice``) in the lung window with the
    overlays (lung outlines, ground glass yellow, consolidation red, nodules magenta), square
    pixels; ``(png, width, height)``, or None when the viewer files are not there."""
    from PIL import Image

    from pulmo.ct.report.images import overlay, window

    prefix = study_prefix(study)
    hu_path = storage.local_path(prefix + "/viewer/hu.npy")
    lab_path = storage.local_path(prefix + "/viewer/labels.npy")
    meta_path = storage.local_path(prefix + "/viewer/meta.json")
    if study.status != "done" or not (hu_path.is_file() and lab_path.is_file() and meta_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    hu = np.load(hu_path, mmap_mode="r")
    labels = np.load(lab_path, mmap_mode="r")
    z = int(min(max(int(meta.get("key_slice", hu.shape[0] // 2)), 0), hu.shape[0] - 1))
    lab = np.asarray(labels[z])
    rgb = overlay(window(np.asarray(hu[z], np.float32)), lab & 3, (lab >> 2) & 3, nodules=lab >> 7)
    sy, sx = (meta.get("spacing_zyx_mm") or [1.0, 1.0, 1.0])[1:]
    im = Image.fromarray(rgb)
    if abs(sy - sx) > 1e-3 * sx:
        im = im.resize((im.width, max(1, int(round(im.height * sy / sx)))), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=3)
    return buf.getvalue(), im.width, im.height


# ----------------------------------------------------------------------------- PDF

_FONTS_READY = False


def _fonts() -> None:
    global _FONTS_READY
    if not _FONTS_READY:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.cidfonts import UnicodeCIDFont

        pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))
        _FONTS_READY = True


def _latin(ch: str) -> bool:
    try:
        ch.encode("cp1252")
        return True
    except UnicodeEncodeError:
        return False


def rich(text, bold: bool = False) -> str:
    """``text`` as reportlab paragraph markup: escaped, runs of characters Helvetica lacks (Chinese,
    ≥, ...) in the CID font, line breaks kept."""
    return "".join(_segment(run, latin, bold) for run, latin in runs("" if text is None else str(text)))


def runs(text: str) -> list[tuple[str, bool]]:
    """``text`` cut into runs of characters Helvetica has (True) or lacks (False); line breaks
    go with Helvetica."""
    out: list[tuple[str, bool]] = []
    for ch in text:
        latin = ch == "\n" or _latin(ch)
        if out and out[-1][1] == latin:
            out[-1] = (out[-1][0] + ch, latin)
        else:
            out.append((ch, latin))
    return out


def draw_mixed(canvas, x: float, y: float, text: str, size: float) -> None:
    """One line on a canvas: Helvetica, and the CID font for what Helvetica lacks."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    for run, latin in runs(text):
        font = "Helvetica" if latin else CJK_FONT
        canvas.setFont(font, size)
        canvas.drawString(x, y, run)
        x += stringWidth(run, font, size)


def _segment(s: str, latin: bool, bold: bool) -> str:
    body = escape(s).replace("\n", "<br/>")
    if latin:
        return f"<b>{body}</b>" if bold else body
    return f'<font name="{CJK_FONT}">{body}</font>'


def _breakable(text: str, width: int = 60) -> str:
    """Very long unbroken tokens split so that a line can wrap (the PDF only)."""
    return re.sub(rf"\S{{{width + 1},}}", lambda m: " ".join(m.group(0)[i:i + width]
                                                           for i in range(0, len(m.group(0)), width)), text)


def _date(value: str | None) -> str:
    v = (value or "").strip()
    return f"{v[:4]}-{v[4:6]}-{v[6:]}" if len(v) == 8 and v.isdigit() else (v or "–")


def _utc(t: dt.datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC") if t else "–"


def pdf(session: Session, storage, study: Study, user: User | None, lang: str) -> bytes:
    """The report as PDF bytes, in ``lang`` (``en`` or ``zh-CN``), for ``user`` (None: a share
    link's visitor; the caller checks access and records the export)."""
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        Image,
        KeepTogether,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    _fonts()
    lang = lang if lang in i18n.LANGUAGES else i18n.DEFAULT
    wrap = "CJK" if lang == "zh-CN" else None
    ink, muted, line = colors.HexColor("#1d2430"), colors.HexColor("#5b6577"), colors.HexColor("#c9d0db")

    def style(name, size=9.5, leading=None, **kw):
        s = ParagraphStyle(name, fontName="Helvetica", fontSize=size, leading=leading or size * 1.3,
                           textColor=kw.pop("textColor", ink), alignment=TA_LEFT, **kw)
        if wrap:
            s.wordWrap = wrap
        return s

    body, small = style("body"), style("small", 8, textColor=muted)
    h1, h2 = style("h1", 16, 20, spaceAfter=2), style("h2", 11.5, 15, spaceBefore=8, spaceAfter=3)
    cell, cell_b = style("cell", 8.5, 10.5), style("cellb", 8.5, 10.5)
    t = lambda m, **v: _(lang, m, **v)
    P = lambda text, st=body, bold=False: Paragraph(rich(text, bold), st)

    report = find(session, study)
    rep = state(session, study, user, lang)
    patient = study.patient
    synthetic = bool(study.synthetic or patient.synthetic)
    results = study.results if study.status == "done" else None
    q = (results or {}).get("quantification") or {}
    story = []

    # title, synthetic mark, research-tool statement
    story.append(P(t("Pulmo chest-CT report"), h1, bold=True))
    if synthetic:
        story.append(_box(P(t("SYNTHETIC: data made by Pulmo, not a patient."), style("syn", 10, textColor=colors.HexColor("#4b2e98")), True),
                          colors.HexColor("#ece6fb"), colors.HexColor("#8f7ad6")))
        story.append(Spacer(1, 3))
    story.append(_box([P(t(RESEARCH_TOOL), style("rt", 12, 15, textColor=colors.HexColor("#6b4b00")), True),
                       P(t(DISCLAIMER), style("rt2", 9, textColor=colors.HexColor("#6b4b00")))],
                      colors.HexColor("#fff3cd"), colors.HexColor("#e0c060")))
    story.append(Spacer(1, 6))

    # patient and study
    facts = [
        (t("Patient"), (patient.name or "–") + (" (" + t("synthetic") + ")" if synthetic else "")),
        (t("Patient ID"), patient.patient_key or "–"), (t("Sex"), patient.sex or "–"),
        (t("Birth date"), _date(patient.birth_date)), (t("Study date"), _date(study.study_date)),
        (t("Description"), study.description or "–"), (t("Study"), f"#{study.id}"),
        (t("Organisation"), _org_name(session, study)), (t("Analysis"), t(study.status)),
        (t("Received"), _utc(study.received_at)),
    ]
    rows, pair = [], []
    for label, value in facts:
        pair += [P(label, style("fl", 8, textColor=muted)), P(_breakable(str(value)), cell)]
        if len(pair) == 4:
            rows.append(pair)
            pair = []
    if pair:
        rows.append(pair + ["", ""])
    ft = Table(rows, colWidths=[26 * mm, 59 * mm, 26 * mm, 59 * mm])
    ft.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                            ("TOPPADDING", (0, 0), (-1, -1), 1), ("LINEBELOW", (0, -1), (-1, -1), 0.5, line)]))
    story.append(ft)

    # impression and its status
    story.append(P(t("Impression"), h2, bold=True))
    if rep["status"] == "signed":
        status_line = t("Signed by {user} on {time}", user=rep["signed_by"] or "?",
                        time=_utc(report.signed_at if report else None))
        story.append(_box(P(status_line, style("sig", 10, textColor=colors.HexColor("#1c5a36")), True),
                          colors.HexColor("#d9efe2"), colors.HexColor("#7dbf97")))
    else:
        story.append(_box(P(t("DRAFT - not signed"), style("dr", 10.5, textColor=colors.HexColor("#8a1f14")), True),
                          colors.HexColor("#fbebc5"), colors.HexColor("#d9a441")))
    story.append(Spacer(1, 3))
    for para in (rep["impression"] or "").split("\n"):
        story.append(P(_breakable(para) if para.strip() else " ", body))

    # findings
    story.append(P(t("Findings"), h2, bold=True))
    if results is None:
        story.append(P(t("No results: the analysis is {status}.", status=t(study.status))))
    elif not results.get("assessable", True) or not q:
        story.append(P(t("The study is not assessable by Pulmo (see the warnings): no severity score and no "
                         "pneumonia flag.")))
    else:
        total = (q.get("lungs") or {}).get("total") or {}
        summary = [flag_text(lang, q.get("pneumonia")), (q.get("pneumonia") or {}).get("note") and
                   t("Note: {note}", note=t(q["pneumonia"]["note"])),
                   severity_text(lang, q.get("severity")),
                   t("Lung involved: {pct} % ({ml} mL of {volume} mL).", pct=_f(total.get("percent_involved")),
                     ml=_f(total.get("lesion_ml")), volume=_f(total.get("volume_ml"), 0))]
        if (q.get("pneumonia") or {}).get("flag") == "indeterminate" and q["pneumonia"].get("reason"):
            summary.append(t("Why indeterminate: {reason}", reason=q["pneumonia"]["reason"]))
        texts = [P(s) for s in summary if s]
        image = key_axial_png(storage, study)
        if image is not None:
            png, w, h = image
            side = 78 * mm
            scale = side / max(w, h)
            img = Image(io.BytesIO(png), width=w * scale, height=h * scale)
            cap = P(t("Key axial image (slice {n}), lung window, radiological view: the patient's right is on the "
                      "left of the image. Blue and green outlines: right and left lung; yellow: ground glass; red: "
                      "consolidation; magenta: nodules.", n=_key_slice(storage, study) + 1), small)
            grid = Table([[texts, [img, Spacer(1, 2), cap]]], colWidths=[92 * mm, 82 * mm], hAlign="LEFT")
            grid.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                      ("RIGHTPADDING", (0, 0), (0, -1), 8)]))
            story.append(grid)
        else:
            story.extend(texts)
            story.append(P(t("No key image: the images of this study are not available."), small))
        kind = "lobes" if (results.get("regions") or {}).get("kind") == "lobes" else "zones"
        block = [P(t("Per lung and region ({kind})", kind=t(kind)), h2, bold=True),
                 _region_table(q, lang, cell, cell_b, mm, colors, line)]
        sev = q.get("severity") or {}
        if sev.get("region_min_ml") is not None:
            block.append(P(t("A region scores 0 unless its lesion reaches {ml} mL and {pct} % of the region.",
                             ml=_f(sev.get("region_min_ml")), pct=_f(sev.get("region_min_pct"))), small))
        story.append(KeepTogether(block))
        story.append(P(t("Nodules / focal opacities (not counted as pneumonia)"), h2, bold=True))
        nodules = q.get("nodules") or []
        if nodules:
            head = [t("No."), t("Kind"), t("Diameter (mm)"), t("Long axis (mm)"), t("Volume (mL)"), t("Mean HU"),
                    t("Location")]
            data = [[P(h, cell_b, True) for h in head]] + [[
                P(str(n.get("number", "")), cell), P(t("mass") if n.get("kind") == "mass" else t("nodule"), cell),
                P(_f(n.get("diameter_mm")), cell), P(_f(n.get("long_axis_mm")), cell),
                P(_f(n.get("volume_ml"), 2), cell), P(_f(n.get("mean_hu"), 0), cell),
                P(region_name(lang, n.get("region"), capital=True)
                  or t("right lung" if n.get("lung") == "right" else "left lung"), cell)] for n in nodules]
            story.append(_grid(data, [12 * mm, 20 * mm, 24 * mm, 24 * mm, 22 * mm, 20 * mm, 50 * mm], colors, line))
            story.append(P(t("A radiologist should assess them (Fleischner Society guidelines)."), small))
        else:
            story.append(P(t("None found.")))
    story.append(P(t("Warnings"), h2, bold=True))
    warnings = (results or {}).get("warnings") or []
    if warnings:
        for w in warnings:
            story.append(P("• " + warning_text(w), body))
    else:
        story.append(P(t("None."), body))

    # triage (not through a share link: the clinical data are the patient's record, not the study's)
    clinical = (session.execute(select(ClinicalData).where(ClinicalData.study_id == study.id)).scalar()
                if user is not None else None)
    if clinical is not None and clinical.triage:
        block = _triage(clinical, lang, P, h2, body, small, cell, cell_b, mm, colors, line)
        story.append(KeepTogether(block[:3]))
        story.extend(block[3:])

    # version and method
    story.append(P(t("Method"), h2, bold=True))
    method = ((results or {}).get("method") or {})
    learned = method.get("learned_model") or {}
    story.append(P(t("Pulmo {version}; results schema {schema}; analysis of {created}.", version=__version__,
                     schema=(results or {}).get("schema_version", "–"), created=(results or {}).get("created", "–")),
                   small))
    if method.get("summary"):
        story.append(P(t("Method: {summary}", summary=method["summary"]), small))
    if learned:
        story.append(P(t("Lesion model: {file} ({version}).", file=learned.get("file", "?"),
                         version=learned.get("version", "?")), small))
    produced = (t("Report produced on {time} for {user}.", time=_utc(utcnow()), user=user.username) if user
                else t("Report produced on {time}.", time=_utc(utcnow())))
    story.append(P(produced, small))

    footer = t("Pulmo {version} · study #{id} · {statement} · page {page}", version=__version__, id=study.id,
               statement=t(RESEARCH_TOOL), page="{page}")

    def on_page(canvas, doc):
        canvas.saveState()
        canvas.setStrokeColor(line)
        canvas.line(18 * mm, 14 * mm, A4[0] - 18 * mm, 14 * mm)
        canvas.setFillColor(muted)
        draw_mixed(canvas, 18 * mm, 10 * mm, footer.replace("{page}", str(doc.page)), 7.5)
        if rep["status"] != "signed":
            canvas.setFont("Helvetica-Bold", 8)
            canvas.setFillColor(colors.HexColor("#8a1f14"))
            canvas.drawRightString(A4[0] - 18 * mm, A4[1] - 11 * mm, "DRAFT")
        if synthetic:
            canvas.setFont("Helvetica-Bold", 8)
            canvas.setFillColor(colors.HexColor("#4b2e98"))
            canvas.drawString(18 * mm, A4[1] - 11 * mm, "SYNTHETIC")
        canvas.restoreState()

    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm,
                            bottomMargin=20 * mm, title=f"Pulmo report, study {study.id}", author="Pulmo",
                            subject=RESEARCH_TOOL, creator=f"Pulmo {__version__}")
    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buf.getvalue()


def _org_name(session: Session, study: Study) -> str:
    from pulmo.web.models import Organisation

    org = session.get(Organisation, study.organisation_id)
    return org.name if org else "–"


def _key_slice(storage, study: Study) -> int:
    try:
        meta = json.loads(storage.local_path(study_prefix(study) + "/viewer/meta.json").read_text())
        return int(meta.get("key_slice", 0))
    except (OSError, ValueError):
        return 0


def _box(content, fill, border):
    from reportlab.platypus import Table, TableStyle

    box = Table([[content]], colWidths=["100%"])
    box.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), fill), ("BOX", (0, 0), (-1, -1), 0.8, border),
                             ("LEFTPADDING", (0, 0), (-1, -1), 7), ("RIGHTPADDING", (0, 0), (-1, -1), 7),
                             ("TOPPADDING", (0, 0), (-1, -1), 4), ("BOTTOMPADDING", (0, 0), (-1, -1), 5)]))
    return box


def _grid(data, widths, colors, line, bold_rows=()):
    from reportlab.platypus import Table, TableStyle

    table = Table(data, colWidths=widths, repeatRows=1, hAlign="LEFT")
    cmds = [("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("LINEBELOW", (0, 0), (-1, -1), 0.4, line),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef1f5")), ("TOPPADDING", (0, 0), (-1, -1), 2),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 3)]
    for r in bold_rows:
        cmds.append(("BACKGROUND", (0, r), (-1, r), colors.HexColor("#f7f8fa")))
    table.setStyle(TableStyle(cmds))
    return table


def _region_table(q: dict, lang: str, cell, cell_b, mm, colors, line):
    from reportlab.platypus import Paragraph

    t = lambda m, **v: _(lang, m, **v)
    head = [t("Region"), t("Volume (mL)"), t("Lesion (mL)"), t("% involved"), t("GGO (mL)"),
            t("Consolidation (mL)"), t("Score")]
    data = [[Paragraph(rich(h, True), cell_b) for h in head]]
    lungs = q.get("lungs") or {}
    bold_rows = []

    def row(name, s, score="", bold=False):
        values = [name, _f(s.get("volume_ml")), _f(s.get("lesion_ml")), _f(s.get("percent_involved")),
                  _f(s.get("ggo_ml")), _f(s.get("consolidation_ml")), "–" if score is None else str(score)]
        if bold:
            bold_rows.append(len(data))
        data.append([Paragraph(rich(v, bold), cell) for v in values])

    for key, label in (("right", "Right lung"), ("left", "Left lung"), ("total", "Both lungs")):
        if lungs.get(key):
            row(t(label), lungs[key], "", bold=True)
    for g in q.get("regions") or []:
        row(region_name(lang, g.get("name"), capital=True), g, g.get("score"))
    return _grid(data, [38 * mm, 22 * mm, 22 * mm, 18 * mm, 26 * mm, 28 * mm, 16 * mm], colors, line, bold_rows)


TRIAGE_FEATURES = (("age", "Age", "years"), ("xray_abnormality", "Chest X-ray abnormality", ""),
                   ("dyspnea", "Dyspnea", ""), ("comorbidities", "Number of comorbidities", ""),
                   ("malignancy", "Cancer history", ""), ("copd", "COPD", ""),
                   ("nlr", "Neutrophil-to-lymphocyte ratio", ""), ("ldh", "Lactate dehydrogenase", "U/L"),
                   ("direct_bilirubin", "Direct bilirubin", "µmol/L"), ("creatine_kinase", "Creatine kinase", "U/L"))


def _value(lang: str, v, binary: bool) -> str:
    if v is None or v == "":
        return _(lang, "not known")
    if binary:
        try:
            return _(lang, "yes") if float(v) else _(lang, "no")
        except (TypeError, ValueError):
            return str(v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def _triage(clinical: ClinicalData, lang: str, P, h2, body, small, cell, cell_b, mm, colors, line) -> list:
    t = lambda m, **v: _(lang, m, **v)
    out = [P(t("Triage"), h2, True)]
    features = clinical.features or {}
    binary = {"xray_abnormality", "dyspnea", "malignancy", "copd"}
    shown = []
    for name, label, unit in TRIAGE_FEATURES:
        if name in features:
            value = _value(lang, features.get(name), name in binary)
            if unit and features.get(name) not in (None, ""):
                value += " " + t(unit)
            shown.append(t("{label}: {value}", label=t(label), value=value))
    if shown:
        out.append(P(t("Clinical data: {values}", values=t("; ").join(shown)), small))
    tri = clinical.triage or {}
    pred = tri.get("prediction")
    if pred and not pred.get("error"):
        out.append(P(t("Risk group: {group}", group=t(pred.get("risk_group") or "–")), body, True))
        data = [[P(h, cell_b, True) for h in (t("Critical illness within"), t("Probability"), t("Interval"))]]
        for p in pred.get("probabilities") or []:
            interval = "–" if p.get("low") == p.get("high") else f"{100 * p['low']:.1f} – {100 * p['high']:.1f} %"
            data.append([P(t("{n} days", n=f"{p['days']:g}"), cell), P(f"{100 * p['value']:.1f} %", cell),
                         P(interval, cell)])
        out.append(_grid(data, [50 * mm, 35 * mm, 45 * mm], colors, line))
        if pred.get("imputed"):
            names = {name: label for name, label, _unit in TRIAGE_FEATURES}
            out.append(P(t("Imputed: {names}", names=t(", ").join(t(names.get(n, n)) for n in pred["imputed"])),
                         small))
        for w in pred.get("warnings") or []:
            out.append(P("• " + str(w), small))
    elif pred and pred.get("error"):
        out.append(P(t("Not scored: {reason}", reason=pred["error"]), body))
    else:
        out.append(P(t("No triage model is installed: the classic scores only."), body))
    scores = [s for s in (tri.get("scores") or {}).values() if isinstance(s, dict) and s.get("title")]
    if scores:
        data = [[P(h, cell_b, True) for h in (t("Score"), t("Total"), t("Band"), t("Mortality"))]]
        for s in scores:
            total = "–" if s.get("total") is None else str(s["total"])
            mort = s.get("mortality") or (t("missing values: {n}", n=len(s.get("missing") or []))
                                          if s.get("missing") else "–")
            data.append([P(s["title"], cell), P(total, cell), P(t(s["band"]) if s.get("band") else "–", cell),
                         P(str(mort), cell)])
        out.append(_spacer(4))
        out.append(_grid(data, [40 * mm, 20 * mm, 40 * mm, 50 * mm], colors, line))
    return out


def _spacer(h: float):
    from reportlab.platypus import Spacer

    return Spacer(1, h)
