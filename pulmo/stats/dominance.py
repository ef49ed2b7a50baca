"""Vectorised 2-D dominance counting: the O(n log n) kernel behind Harrell's C.

For a sequence of distinct values ``val`` (a permutation of 0..n-1, indexed by
position), :func:`prefix_smaller` returns, for every position ``p``,

* ``count[p] = #{q < p : val[q] < val[p]}`` and
* ``wsum[p]  = sum of weight[q] over the same q``.

This is what a Fenwick tree computes one element at a time; here all elements are
processed at once, one bit of the value per pass, as in the construction of a wavelet
matrix: the sequence (padded to a power of two) is split into nodes of equal size,
each element whose current bit is 1 collects the number (and weight) of 0-bit elements
before it in its node from a running sum, and the sequence is then stably partitioned
by that bit. There are ``ceil(log2 n)`` passes of a dozen linear numpy operations each:
O(n log n), no Python loop over elements. For 0/1 weights the last six passes are
replaced by one step on 64-bit masks (a node of 64 elements holds each of its 64
values once; ``popcount(values seen so far & values below mine)`` is the count).
"""

from __future__ import annotations

import numpy as np

_HAS_POPCOUNT = hasattr(np, "bitwise_count")


def _levels(n: int) -> tuple[int, int]:
    L = max(1, int(np.ceil(np.log2(n)))) if n > 1 else 1
    return L, 1 << L


def prefix_smaller(val: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Counts (and weight sums) of earlier positions holding a smaller value.

    Parameters
    ----------
    val
        A permutation of ``0..n-1`` (position -> value), n < 2**30.
    weight
        Weights per position (default 1). Boolean or 0/1 integer weights are summed
        exactly on a fast path; other weights in float64.

    Returns
    -------
    (count, wsum) : int64 arrays, ``wsum`` float64 for non-0/1 weights.
    """
    val = np.asarray(val, dtype=np.int64)
    n = len(val)
    if n >= 1 << 30:
        raise ValueError("prefix_smaller supports fewer than 2**30 elements")
    if weight is None:
        weight = np.ones(n, dtype=np.int64)
    w = np.asarray(weight)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, w.dtype if w.dtype != bool else np.int64)
    if w.dtype == bool or (np.issubdtype(w.dtype, np.integer) and ((w == 0) | (w == 1)).all()):
        return prefix_smaller_flag(val, w.astype(np.int64))
    return prefix_smaller_float(val, w.astype(float))


def prefix_smaller_flag(val: np.ndarray, flag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`prefix_smaller` for 0/1 weights (carried in bit 30 of each value)."""
    n = len(val)
    L, N = _levels(n)
    leaf = min(6, L) if _HAS_POPCOUNT else 0
    i32 = np.int32
    v = np.empty(N, i32)
    v[:n] = val
    v[n:] = np.arange(n, N, dtype=i32)        # padding: after and above every real element
    v[:n] |= flag.astype(i32) << 30
    v2 = np.empty_like(v)
    ac, aw = np.zeros(N, i32), np.zeros(N, i32)     # accumulated count / flagged count
    tc, tw = np.empty_like(ac), np.empty_like(aw)
    k = np.arange(N, dtype=i32)
    b, z, fz, t, idx = (np.empty(N, i32) for _ in range(5))
    cz, cf = np.zeros(N, i32), np.zeros(N, i32)
    for level in range(L - leaf):
        bit = L - 1 - level
        G = N >> level                              # node size
        np.right_shift(v, bit, out=b)
        b &= 1                                      # 1: upper half of the node's values
        np.subtract(1, b, out=z)                    # 1: lower half
        np.right_shift(v, 30, out=fz)
        fz &= z                                     # lower half and flagged
        np.cumsum(z[:-1], out=cz[1:])               # exclusive running counts
        np.cumsum(fz[:-1], out=cf[1:])
        nz = int(cz[-1]) + int(z[-1])
        tr = t.reshape(-1, G)
        r = cz.reshape(-1, G)
        np.subtract(r, r[:, :1], out=tr)            # lower-half elements before me in my node
        t *= b
        ac += t
        r = cf.reshape(-1, G)
        np.subtract(r, r[:, :1], out=tr)
        t *= b
        aw += t
        # stable partition, lower half first: idx = cz + b * (nz + k - 2 cz)
        np.subtract(k, cz, out=idx)
        idx -= cz
        idx += nz
        idx *= b
        idx += cz
        v2[idx] = v
        v, v2 = v2, v
        tc[idx] = ac
        ac, tc = tc, ac
        tw[idx] = aw
        aw, tw = tw, aw
    if leaf:
        S = 1 << leaf
        low = (v & (S - 1)).astype(np.uint64).reshape(-1, S)
        bits = np.left_shift(np.uint64(1), low)
        below = bits - np.uint64(1)
        seen = np.cumsum(bits, axis=1, dtype=np.uint64)
        seen -= bits
        seen &= below
        ac += np.bitwise_count(seen).reshape(-1)
        fb = bits * (v >> 30).reshape(-1, S).astype(np.uint64)
        seen = np.cumsum(fb, axis=1, dtype=np.uint64)
        seen -= fb
        seen &= below
        aw += np.bitwise_count(seen).reshape(-1)
    vv = v & ((1 << 30) - 1)
    oc, ow = np.empty(N, np.int64), np.empty(N, np.int64)
    oc[vv] = ac
    ow[vv] = aw
    return oc[val], ow[val]


def prefix_smaller_float(val: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`prefix_smaller` for real weights (summed in float64)."""
    n = len(val)
    L, N = _levels(n)
    i32 = np.int32
    v = np.empty(N, i32)
    v[:n] = val
    v[n:] = np.arange(n, N, dtype=i32)
    w = np.zeros(N)
    w[:n] = weight
    v2, w2 = np.empty_like(v), np.empty_like(w)
    ac, aw = np.zeros(N, i32), np.zeros(N)
    tc, tw = np.empty_like(ac), np.empty_like(aw)
    k = np.arange(N, dtype=i32)
    b, z, t, idx = (np.empty(N, i32) for _ in range(4))
    cz = np.zeros(N, i32)
    bf, zw, cw, twf = (np.empty(N) for _ in range(4))
    cw[0] = 0.0
    for level in range(L):
        bit = L - 1 - level
        G = N >> level
        np.right_shift(v, bit, out=b)
        b &= 1
        np.subtract(1, b, out=z)
        np.multiply(w, z, out=zw)
        np.cumsum(z[:-1], out=cz[1:])
        np.cumsum(zw[:-1], out=cw[1:])
        nz = int(cz[-1]) + int(z[-1])
        r = cz.reshape(-1, G)
        np.subtract(r, r[:, :1], out=t.reshape(-1, G))
        t *= b
        ac += t
        bf[:] = b
        r = cw.reshape(-1, G)
        np.subtract(r, r[:, :1], out=twf.reshape(-1, G))
        twf *= bf
        aw += twf
        np.subtract(k, cz, out=idx)
        idx -= cz
        idx += nz
        idx *= b
        idx += cz
        v2[idx] = v
        v, v2 = v2, v
        w2[idx] = w
        w, w2 = w2, w
        tc[idx] = ac
        ac, tc = tc, ac
        tw[idx] = aw
        aw, tw = tw, aw
    oc, ow = np.empty(N, np.int64), np.empty(N)
    oc[v] = ac
    ow[v] = aw
    return oc[val], ow[val]
