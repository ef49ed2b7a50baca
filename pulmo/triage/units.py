"""Plausible ranges and unit conversions of the numeric clinical inputs: one table for every reader.

Both readers of :mod:`pulmo.triage` (the model's admission features, :mod:`pulmo.triage.schema`,
and the classic scores' inputs, :mod:`pulmo.triage.scores_io`) look their numeric columns up here
(:func:`binding`), take their unit conversions from here (:func:`conversion`, :func:`to_base_factor`)
and ask :func:`check` which values to warn about. Nothing here converts a value that a reader keeps:
a value that looks like another unit gets a warning that names the column, the value, the unit
expected and the likely unit, and is used as given.

Each :class:`Quantity` has a base unit (``units[0]``, the one its ranges are written in) and the
other units in common use, each with its exact conversion. Two ranges, in the base unit:

``usual``
    normal values and the common pathological ones of adults admitted with pneumonia: a value in
    this range is never questioned;
``plausible``
    survivable extremes (case reports and the limits of the measurement, sources in the comments).

The rule, for a value ``v`` given in a column whose unit is ``u``:

* ``v`` (read in ``u``) lies in ``usual``: silent;
* the *likely units* are the other units of the quantity in which ``v`` would be usual;
* warn when ``v`` lies outside ``plausible`` (naming the likely units, if any), or when it lies
  outside ``usual`` and some other unit makes it usual (possible, but much more typical in
  another unit: urea 42 mmol/L is severe uraemia, 42 mg/dL BUN = 15 mmol/L urea is ordinary);
* otherwise (extreme but possible, and no unit fits better) say nothing.

Where the usual ranges of two units overlap (CRP 15: mg/L or mg/dL?) no single value can tell;
only values outside the overlap are flagged. Impossible values (outside a reader's ``valid``
range) stay errors in the readers; :func:`error_hint` adds the likely unit to their message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pulmo.io.cells import normalise_header

__all__ = ["Unit", "Quantity", "QUANTITIES", "COUNT_UNIT_FACTOR", "binding", "conversion", "to_base_factor",
           "plausible_range", "likely_units", "check", "error_hint", "count_pair_hint"]


@dataclass(frozen=True)
class Unit:
    """One unit of a quantity, with its conversion from the quantity's base unit.

    ``per_base``: a value in this unit = base value x ``per_base`` + ``offset`` (BUN mg/dL = urea
    mmol/L x 2.8); or ``in_base``: base value = (value - ``offset``) x ``in_base`` (1 ukat/L = 60
    U/L). Neither: the base unit itself. ``h_ion``: hydrogen-ion concentration in nmol/L for pH
    (pH = 9 - log10 [H+]). ``analyte`` names what is measured when it is not the quantity itself
    ("BUN" for urea); ``approx`` marks a rule of thumb rather than a unit conversion. ``columns``
    are the reader columns (canonical names) that take values in this unit; ``ask`` overrides
    how messages ask about the unit ("age in months").
    """

    symbol: str
    analyte: str = ""
    per_base: float | None = None
    in_base: float | None = None
    offset: float = 0.0
    h_ion: bool = False
    approx: bool = False
    columns: tuple[str, ...] = ()
    ask: str = ""

    @property
    def is_base(self) -> bool:
        return self.per_base is None and self.in_base is None and not self.h_ion and self.offset == 0

    def to_base(self, v):
        """Value(s) in this unit -> the base unit."""
        if self.h_ion:
            with np.errstate(divide="ignore", invalid="ignore"):
                return 9.0 - np.log10(v)
        if self.in_base is not None:
            return (v - self.offset) * self.in_base
        if self.per_base is not None:
            return (v - self.offset) / self.per_base
        return v

    def from_base(self, b):
        """Value(s) in the base unit -> this unit."""
        if self.h_ion:
            return 10.0 ** (9.0 - np.asarray(b, dtype=float))
        if self.in_base is not None:
            return b / self.in_base + self.offset
        if self.per_base is not None:
            return b * self.per_base + self.offset
        return b

    def show(self, v: float) -> str:
        """'42 mg/dL BUN', 'pH 7.4', '95%', '4.2' (no unit)."""
        if self.symbol == "pH":
            return f"pH {_num(v)}"
        if not self.symbol:
            return _num(v)
        sep = "" if self.symbol == "%" else " "
        return f"{_num(v)}{sep}{self.symbol}" + (f" {self.analyte}" if self.analyte else "")

    def span(self, lo: float, hi: float) -> str:
        """'40 to 10000 U/L', 'pH 6.8 to 7.8'."""
        if self.symbol == "pH":
            return f"pH {_num(lo)} to {_num(hi)}"
        return f"{_num(lo)} to {self.show(hi)}"

    @property
    def question(self) -> str:
        """How to ask about this unit: 'BUN in mg/dL', 'ukat/L', 'a fraction'."""
        if self.ask:
            return self.ask
        if not self.symbol:
            return f"a {self.analyte}" if self.analyte else "no unit"
        return f"{self.analyte} in {self.symbol}" if self.analyte else self.symbol


@dataclass(frozen=True)
class Quantity:
    """A measured quantity: its units (``units[0]`` the base), and its usual and plausible ranges
    in the base unit (see the module docstring); ``source`` says where the ranges come from."""

    key: str
    label: str
    units: tuple[Unit, ...]
    usual: tuple[float, float]
    plausible: tuple[float, float]
    source: str = ""

    @property
    def base(self) -> Unit:
        return self.units[0]


# ---------------------------------------------------------------------------------------------
# The table. Reference intervals: MSD Manual Professional, "Normal laboratory values" (blood
# tests; conventional and SI units), and Tietz Textbook of Laboratory Medicine, 7th ed. (2022),
# reference-interval appendix; conversion factors from the molar masses (urea 60.06 g/mol, urea
# nitrogen 28.01 g/mol, glucose 180.16 g/mol, bilirubin 584.7 g/mol) and the SI definitions
# (1 ukat/L = 60 U/L; 1 kPa = 7.50062 mmHg).

QUANTITIES: tuple[Quantity, ...] = (
    # Age: the scores and the model are for adults; months are the usual mix-up (400 months =
    # 33 years). Oldest verified person: 122 years (J. Calment). Only impossible ages (errors)
    # get a hint; the adult range is each reader's own warning.
    Quantity("age", "age", (
        Unit("years", columns=("age",)),
        Unit("months", per_base=12.0, ask="age in months"),
    ), usual=(18, 110), plausible=(0, 120),
        source="adults 18-110 years; oldest verified person 122 years"),
    # LDH: adult reference interval about 125-220 U/L (IFCC 37 °C; MSD Manual), COVID-19
    # pneumonia 300-1,500 U/L; >10,000 U/L in haemolysis, shock liver or lymphoma. A value
    # below 40 U/L is unheard of outside LDH-subunit deficiency: it is almost always ukat/L.
    Quantity("ldh", "lactate dehydrogenase", (
        Unit("U/L", columns=("ldh",)),
        Unit("ukat/L", in_base=60.0, columns=("ldh_ukat_l", "lactate_dehydrogenase_ukat_l")),
    ), usual=(80, 3000), plausible=(40, 10000),
        source="MSD Manual / Tietz reference interval ~125-220 U/L; extremes in haemolysis, shock liver"),
    # Creatine kinase: reference about 25-200 U/L (MSD: men 38-174, women 96-140 U/L); rhabdo-
    # myolysis is > 5x the upper limit, severe > 5,000 U/L, survived beyond 100,000 U/L. Values
    # under 10 U/L are rare (very low muscle mass): a value like 2 is ukat/L (120 U/L).
    Quantity("creatine_kinase", "creatine kinase", (
        Unit("U/L", columns=("creatine_kinase",)),
        Unit("ukat/L", in_base=60.0, columns=("creatine_kinase_ukat_l", "ck_ukat_l")),
    ), usual=(10, 5000), plausible=(5, 100000),
        source="MSD Manual CK 38-174 U/L; rhabdomyolysis > 5,000 U/L, survived > 100,000 U/L"),
    # Direct (conjugated) bilirubin: reference <= 0.4 mg/dL = 6.8 umol/L (MSD; 0-4 umol/L in
    # other laboratories); severe cholestasis 15 mg/dL (250 umol/L), rarely 30 mg/dL (500
    # umol/L). 0 is "below the detection limit"; values 0.1-0.4 are typical mg/dL figures.
    Quantity("direct_bilirubin", "direct bilirubin", (
        Unit("umol/L", columns=("direct_bilirubin",)),
        Unit("mg/dL", in_base=17.104, columns=("direct_bilirubin_mg_dl", "dbil_mg_dl")),
    ), usual=(0.5, 250), plausible=(0, 500),
        source="MSD Manual direct bilirubin <= 0.4 mg/dL (6.8 umol/L); cholestasis up to ~30 mg/dL"),
    # NLR: healthy adults about 0.8-3.5; bacterial sepsis and severe COVID-19 20-60, rarely
    # above 100 (Forget P et al. BMC Res Notes 2017;10:12; Zahorec R. Bratisl Lek Listy 2001;102:5-14).
    Quantity("nlr", "neutrophil-to-lymphocyte ratio", (
        Unit("", columns=("nlr",)),
    ), usual=(0.3, 60), plausible=(0.1, 150),
        source="Forget 2017 (healthy 0.78-3.53); Zahorec 2001 (critical illness)"),
    # Urea: reference 2.5-7.1 mmol/L = BUN 7-20 mg/dL (MSD); CURB-65 cut-off 7, 4C 14 mmol/L;
    # severe pre-renal or renal failure 35 mmol/L (BUN ~100), end-stage uraemia up to ~100 mmol/L.
    # Urea mg/dL (German-speaking labs: "Harnstoff") = mmol/L x 6.006; g/L (French "uree") x 0.06006.
    Quantity("urea", "urea", (
        Unit("mmol/L", "urea", columns=("urea_mmol_l",)),
        Unit("mg/dL", "BUN", per_base=2.8, columns=("bun_mg_dl",)),
        Unit("mg/dL", "urea", per_base=6.006),
        Unit("g/L", "urea", per_base=0.06006),
    ), usual=(1.0, 35), plausible=(0.5, 100),
        source="MSD Manual BUN 8-20 mg/dL (urea 2.9-7.1 mmol/L); uraemia to ~100 mmol/L"),
    # CRP: reference < 5 mg/L (MSD: < 0.5 mg/dL); bacterial pneumonia 100-350 mg/L; values
    # above 500 mg/L are exceptional, the assays' upper limits are 300-600 mg/L (diluted beyond).
    Quantity("crp", "C-reactive protein", (
        Unit("mg/L", columns=("crp_mg_l",)),
        Unit("mg/dL", in_base=10.0, columns=("crp_mg_dl",)),
    ), usual=(0, 350), plausible=(0, 700),
        source="MSD Manual CRP < 0.5 mg/dL; severe bacterial infection 100-500 mg/L"),
    # Sodium: reference 135-145 mmol/L (= mEq/L); survived at 98-99 mmol/L (Singh 2017 Case Rep
    # Nephrol 2017:1371804; Endocrine Abstracts 2007;13:P43) and about 185-190 mmol/L.
    Quantity("sodium", "sodium", (
        Unit("mmol/L", columns=("sodium_mmol_l",)),
    ), usual=(115, 165), plausible=(95, 190),
        source="MSD Manual 136-145 mEq/L; survived 98 mmol/L (case reports)"),
    # Glucose: fasting reference 3.9-5.6 mmol/L = 70-100 mg/dL (MSD); hypoglycaemia < 2.2 mmol/L
    # (40 mg/dL); hyperosmolar state above 33.3 mmol/L (600 mg/dL, many meters read "HI" there);
    # survived at ~147 mmol/L (2,656 mg/dL, a case report). mg/dL = mmol/L x 18 (180.16 g/mol);
    # g/L (French "glycemie") = mmol/L x 0.18.
    Quantity("glucose", "glucose", (
        Unit("mmol/L", columns=("glucose_mmol_l",)),
        Unit("mg/dL", per_base=18.0, columns=("glucose_mg_dl",)),
        Unit("g/L", per_base=0.18),
    ), usual=(2.2, 33.3), plausible=(1.0, 100),
        source="MSD Manual fasting 70-100 mg/dL; hypoglycaemia < 40 mg/dL; HHS > 600 mg/dL"),
    # Temperature: survived 13.7 °C (Gilbert M et al. Lancet 2000;355:375-376) and 46.5 °C
    # (heat stroke); the readers' valid range (20-45 °C) lies inside, so only °F mix-ups matter,
    # and those are always impossible in °C (errors).
    Quantity("temperature", "temperature", (
        Unit("°C", columns=("temperature_c",)),
        Unit("°F", per_base=1.8, offset=32.0, columns=("temperature_f",)),
    ), usual=(34, 41), plausible=(13.7, 46.5),
        source="survived 13.7 °C (Gilbert, Lancet 2000) and 46.5 °C"),
    # SpO2: reference 95-100%; climbers on Everest without oxygen about 54% (mean SaO2 at 8,400 m,
    # Grocott MP et al. N Engl J Med 2009;360:140-149); oximeters are unreliable below 70%.
    Quantity("spo2", "SpO2", (
        Unit("%", columns=("spo2", "spo2_room_air")),
        Unit("", "fraction", in_base=100.0),
    ), usual=(70, 100), plausible=(40, 100),
        source="reference 95-100%; Grocott 2009 (SaO2 ~54% at 8,400 m)"),
    # PaO2: reference 75-100 mmHg = 10-13.3 kPa on air (MSD); on 100% oxygen at sea level at most
    # ~670 mmHg; lowest measured in survivors 19.1 mmHg (2.55 kPa; Grocott 2009).
    Quantity("pao2", "PaO2", (
        Unit("mmHg", columns=("pao2_mmhg",)),
        Unit("kPa", in_base=7.50062, columns=("pao2_kpa",)),
    ), usual=(35, 550), plausible=(19, 700),
        source="MSD Manual 75-100 mmHg; Grocott 2009 (19.1 mmHg); alveolar gas equation on 100% O2"),
    # Arterial pH: reference 7.35-7.45; the classic limits compatible with life 6.8-7.8 (rare
    # survivors beyond). [H+] in nmol/L (some UK laboratories): pH 7.40 = 40 nmol/L.
    Quantity("arterial_ph", "arterial pH", (
        Unit("pH", columns=("arterial_ph",)),
        Unit("nmol/L", "H+", h_ion=True),
    ), usual=(7.0, 7.65), plausible=(6.8, 7.8),
        source="MSD Manual 7.35-7.45; limits compatible with life 6.8-7.8"),
    # Haematocrit: reference 37-52% (MSD); transfusion threshold about Hb 7 g/dL (Hct ~21%), so
    # below 18% (Hb 6 g/dL) is rare, while 6-18 is what haemoglobin in g/dL looks like; above
    # 65% (untreated polycythaemia) is rarer than haemoglobin 65-75 g/L in the wrong column;
    # survived near 6-7% (Hb 2 g/dL, case reports) and about 75% (polycythaemia). Haemoglobin
    # in the haematocrit column is a frequent slip: Hct % is about 3 x Hb g/dL (a rule of thumb).
    Quantity("hematocrit", "haematocrit", (
        Unit("%", columns=("hematocrit_pct",)),
        Unit("L/L", in_base=100.0, columns=("hematocrit_fraction",)),
        Unit("g/dL", "haemoglobin", per_base=1 / 3, approx=True),
        Unit("g/L", "haemoglobin", per_base=10 / 3, approx=True),
    ), usual=(18, 65), plausible=(7, 75),
        source="MSD Manual 37-52%; Hb 2 g/dL and polycythaemia Hct 75% survived (case reports)"),
    # Vital signs (no other unit in use, except blood pressure in kPa in older European records).
    Quantity("respiratory_rate", "respiratory rate", (
        Unit("/min", columns=("respiratory_rate",)),
    ), usual=(8, 40), plausible=(3, 70),
        source="adult reference 12-20 /min; NEWS2 extremes <= 8 and >= 25"),
    Quantity("pulse", "pulse", (
        Unit("/min", columns=("pulse",)),
    ), usual=(40, 180), plausible=(20, 250),
        source="adult reference 60-100 /min; NEWS2 extremes <= 40 and >= 131"),
    Quantity("systolic_bp", "systolic blood pressure", (
        Unit("mmHg", columns=("systolic_bp",)),
        Unit("kPa", in_base=7.50062),
    ), usual=(60, 250), plausible=(40, 300),
        source="NEWS2 extremes <= 90 and >= 220 mmHg; hypertensive crisis to ~300 mmHg"),
    Quantity("diastolic_bp", "diastolic blood pressure", (
        Unit("mmHg", columns=("diastolic_bp",)),
        Unit("kPa", in_base=7.50062),
    ), usual=(30, 140), plausible=(15, 200),
        source="adult reference 60-80 mmHg; hypertensive emergency above 120 mmHg"),
)

#: Neutrophil and lymphocyte counts in 10^9/L vs per uL (= per mm3): a factor of 1000.
COUNT_UNIT_FACTOR = 1000.0

_BY_COLUMN: dict[str, tuple[Quantity, Unit]] = {
    normalise_header(c): (q, u) for q in QUANTITIES for u in q.units for c in u.columns
}


def binding(name: object) -> tuple[Quantity, Unit] | None:
    """The quantity and unit of a reader's canonical column name ('bun_mg_dl' -> urea, mg/dL BUN)."""
    return _BY_COLUMN.get(normalise_header(name))


def _bound(name: object) -> tuple[Quantity, Unit]:
    hit = binding(name)
    if hit is None:
        raise KeyError(f"no unit is known for {name!r}")
    return hit


def conversion(a: str, b: str) -> tuple[float, float]:
    """(factor, offset) with value in column ``b`` = value in column ``a`` x factor + offset.

    Exact (no round trip through the base unit) when either column is in the base unit:
    ('urea_mmol_l', 'bun_mg_dl') -> (2.8, 0.0); ('temperature_c', 'temperature_f') -> (1.8, 32.0).
    """
    qa, ua = _bound(a)
    qb, ub = _bound(b)
    if qa is not qb or ua.h_ion or ub.h_ion:
        raise ValueError(f"{a!r} and {b!r} are not linear units of one quantity")
    if ua.is_base:
        return (ub.per_base if ub.per_base is not None else 1.0 / ub.in_base if ub.in_base is not None else 1.0,
                ub.offset)
    if ub.is_base:
        f = ua.in_base if ua.in_base is not None else 1.0 / ua.per_base
        return f, 0.0 - ua.offset * f
    f0, o0 = conversion(qa.base.columns[0], b)
    fa = ua.in_base if ua.in_base is not None else 1.0 / ua.per_base
    return fa * f0, o0 - ua.offset * fa * f0 + 0.0


def to_base_factor(name: str) -> float:
    """The factor that turns a value of column ``name`` into the base unit (ldh_ukat_l -> 60)."""
    q, u = _bound(name)
    return 1.0 if u.is_base else conversion(name, q.base.columns[0])[0]


def plausible_range(name: str) -> tuple[float, float]:
    """The plausible (survivable) range of column ``name`` in its own unit."""
    q, u = _bound(name)
    lo, hi = (float(x) for x in u.from_base(np.array(q.plausible, dtype=float)))
    return (min(lo, hi), max(lo, hi))


def _usual_in(q: Quantity, u: Unit) -> tuple[float, float]:
    lo, hi = (float(x) for x in u.from_base(np.array(q.usual, dtype=float)))
    return (min(lo, hi), max(lo, hi))


def _num(x: float) -> str:
    """Three significant figures, no exponent: 15, 6.99, 270, 4200, 0.0823."""
    if not math.isfinite(x):
        return f"{x:g}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}"


def likely_units(name: str, value: float) -> list[tuple[Unit, float]]:
    """The other units of column ``name``'s quantity in which ``value`` would be usual, each with
    what ``value`` in that unit is in ``name``'s unit. Empty when ``value`` is usual as given."""
    q, u = _bound(name)
    lo, hi = q.usual
    base = float(u.to_base(value))
    if lo <= base <= hi:
        return []
    out = []
    for alt in q.units:
        if alt is u:
            continue
        b = float(alt.to_base(value))
        if math.isfinite(b) and lo <= b <= hi:
            out.append((alt, float(u.from_base(b))))
    return out


def _explain(name: str, value: float, likely: list[tuple[Unit, float]]) -> str:
    """'BUN in mg/dL? 42 mg/dL BUN = 15 mmol/L urea; urea in mg/dL? ...' (≈ for a rule of thumb)."""
    _, u = _bound(name)
    parts = [f"{alt.question}? {alt.show(value)} {'≈' if alt.approx else '='} {u.show(conv)}"
             for alt, conv in likely]
    return "; ".join(parts)


def _column_note(likely: list[tuple[Unit, float]]) -> str:
    """' (BUN in mg/dL goes in column bun_mg_dl)' for the first likely unit that has a column."""
    for alt, _ in likely:
        if alt.columns:
            return f" ({alt.question} goes in column {alt.columns[0]})"
    return ""


def _unit_words(u: Unit) -> str:
    return "pH" if u.symbol == "pH" else u.symbol


def check(name: str, values: np.ndarray, column: object | None = None) -> dict[int, str]:
    """Warnings for the values of one column, by row position: {row: message}.

    ``name`` is the reader's canonical name of the column (its unit); ``column`` the header to
    name in messages (default ``name``). NaN and values the reader already refused should be NaN.
    Columns without a unit in :data:`QUANTITIES` give no warning.
    """
    hit = binding(name)
    if hit is None:
        return {}
    q, u = hit
    col = name if column is None else column
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        base = u.to_base(v)
    finite = np.isfinite(v) & np.isfinite(base)
    ulo, uhi = q.usual
    plo, phi = q.plausible
    odd = finite & ((base < ulo) | (base > uhi))
    out: dict[int, str] = {}
    dlo = _usual_in(q, u)[0]
    plo_u, phi_u = plausible_range(name)
    for i in np.flatnonzero(odd):
        x = float(v[i])
        likely = likely_units(name, x)
        implausible = not plo <= float(base[i]) <= phi
        if not (implausible or likely):
            continue
        direction = "low" if x < dlo else "high"
        unit = _unit_words(u)
        head = f"{col} = {x:g}: unusually {direction}" + (f" for {unit}" if unit else "")
        if likely:
            out[int(i)] = f"{head} ({_explain(name, x, likely)}); check the unit{_column_note(likely)}"
        else:
            out[int(i)] = f"{head} (plausible {u.span(plo_u, phi_u)}); check the value"
    return out


def error_hint(name: str, value: float) -> str:
    """For an impossible value of column ``name``: the likely units ('urea in g/L? 0.3 g/L urea =
    5 mmol/L urea (...)'), or '' when no unit makes it usual."""
    if binding(name) is None or not math.isfinite(value):
        return ""
    likely = likely_units(name, value)
    return f"{_explain(name, value, likely)}{_column_note(likely)}" if likely else ""


def count_pair_hint(neutrophils: float, lymphocytes: float) -> str:
    """When an NLR computed from two counts is implausible but would be usual with one count
    x or / 1000 (10^9/L vs per uL): a hint saying so; else ''."""
    q, _ = _bound("nlr")
    if not (math.isfinite(neutrophils) and math.isfinite(lymphocytes)) or lymphocytes <= 0:
        return ""
    ratio = neutrophils / lymphocytes
    if q.plausible[0] <= ratio <= q.plausible[1]:
        return ""
    for f in (COUNT_UNIT_FACTOR, 1 / COUNT_UNIT_FACTOR):
        if q.usual[0] <= ratio * f <= q.usual[1]:
            big, small = ("neutrophils", "lymphocytes") if ratio > 1 else ("lymphocytes", "neutrophils")
            return (f"neutrophils {neutrophils:g} and lymphocytes {lymphocytes:g} look like different units "
                    f"({big} per uL, {small} in 10^9/L? the ratio would be {_num(ratio * f)}); "
                    "give both counts in one unit")
    return ""
