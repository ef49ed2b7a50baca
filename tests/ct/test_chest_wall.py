"""Broad dense consolidation against the chest wall must be inside the lung mask, without leaking
into the mediastinum (a heart indenting the lung), the liver dome or the chest wall."""

from __future__ import annotations

import numpy as np
import pytest
from ct_synth import SHAPE, SPACING, phantom

from pulmo.ct.segment.lungs import LungParams, segment_lungs


def chest_wall_phantom():
    hu, truth = phantom(seed=5, consolidation=False, ggo=False)
    nz, ny, nx = SHAPE
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(SHAPE, SPACING)), indexing="ij")
    cz, cy, cx = (nz - 1) * SPACING[0] / 2, (ny - 1) * SPACING[1] / 2, (nx - 1) * SPACING[2] / 2
    # right lung (centre cx - 75, semi-axis 55 mm in x): its lateral 25 mm over 70 mm (AP) x 60 mm (z)
    # is consolidated, +30 HU, flush with the chest wall (+40 HU)
    cons = truth["right"] & (x < cx - 75 - 55 + 25) & (np.abs(y - cy) < 35) & (np.abs(z - cz + 10) < 30)
    hu[cons] = 30 + np.random.default_rng(1).normal(0, 15, int(cons.sum()))
    # a heart indenting the left lung's anterior-medial side: a soft-tissue concavity of the outline
    heart = ((x - cx - 30) ** 2 + (y - cy + 45) ** 2 <= 40 ** 2) & (np.abs(z - cz + 10) < 50)
    hu[heart & truth["left"]] = 40 + np.random.default_rng(2).normal(0, 15, int((heart & truth["left"]).sum()))
    truth["left"] = truth["left"] & ~heart
    # dependent consolidation: the posterior 25 mm of the left lung's middle, aerated lung on both sides
    post = truth["left"] & (y > cy + 45) & (np.abs(x - cx - 75) < 22) & (np.abs(z - cz + 10) < 30)
    hu[post] = 35 + np.random.default_rng(3).normal(0, 15, int(post.sum()))
    cons |= post
    # a liver dome bulging into the right lung base from below-anterior: in the basal slices an
    # anterior concavity ringed by the posterior lung crescent (must stay outside)
    # (the liver continues anteriorly to the abdominal wall, so the dome is open toward anterior)
    dome = ((x - cx + 75) ** 2 + np.maximum(y - cy + 25, 0) ** 2 + (z - cz + 70) ** 2 <= 45 ** 2) & ~heart
    hu[dome & truth["right"]] = 55 + np.random.default_rng(4).normal(0, 15, int((dome & truth["right"]).sum()))
    truth["right"] = truth["right"] & ~dome
    heart = heart | dome
    truth.update(cons=cons, heart=heart, post=post, chest_wall=~(truth["right"] | truth["left"] | heart) & (hu > -500),
                 x=x, cx=cx)
    return hu, truth


@pytest.fixture(scope="module")
def case():
    hu, truth = chest_wall_phantom()
    return hu, truth, segment_lungs(hu, SPACING)


def test_chest_wall_consolidation_inside_lung(case):
    _, truth, res = case
    inside = ((res.labels > 0) & truth["cons"]).sum() / truth["cons"].sum()
    # the part the aerated lung bridges (row/column concavity) is recovered; a thin convex cap
    # (< 6 mm) along the chest wall is not (documented)
    assert inside > 0.7
    off = segment_lungs(case[0], SPACING, LungParams(concavity_fill=False))
    assert ((off.labels > 0) & truth["cons"]).sum() / truth["cons"].sum() < 0.2  # what the old method got
    assert ((res.labels == 2) & truth["post"]).sum() / truth["post"].sum() > 0.7  # dependent, left lung


def test_no_leak_into_mediastinum_or_chest_wall(case):
    _, truth, res = case
    lung = res.labels > 0
    heart_in_lung = truth["heart"] & ~(truth["right"] | truth["left"])  # heart and liver dome
    assert (lung & heart_in_lung).sum() < 0.01 * heart_in_lung.sum()
    wall = truth["chest_wall"] & ~truth["cons"]
    assert (lung & wall).sum() < 0.002 * lung.sum()
    # nothing beyond the lungs' lateral surfaces: the outermost true lung column per side
    xs = np.nonzero((truth["right"] | truth["left"]).any(axis=(0, 1)))[0]
    lxs = np.nonzero(lung.any(axis=(0, 1)))[0]
    assert lxs.min() >= xs.min() and lxs.max() <= xs.max()
    assert res.info["consolidation_recovered_ml"] > 0.5 * truth["cons"].sum() * np.prod(SPACING) / 1000
