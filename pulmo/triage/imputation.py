"""Multiple imputation by chained equations with predictive mean matching (PMM).

This reproduces the method of the original triage tool (R ``mice``, ``pmm``) against a
fixed donor table (the development cohort), vectorised over a whole file and over the
M imputations instead of one patient at a time:

For each variable ``j`` missing in some row, a linear regression of ``j`` on the other
variables (with intercept) is fitted on the donors, exactly as ``mice:::.norm.draw``
does: ridge 1e-5, ``sigma* = sqrt(RSS / chi2(df))``, ``beta* = beta_hat + sigma* L z``
with ``L`` the Cholesky factor of ``(X'X + ridge diag(X'X))^-1``. Donors are matched on
``X_donor beta_hat`` (mice's ``matchtype = 1``), targets on ``x_target beta*``; one of
the ``k = 5`` donors with the nearest predicted mean is drawn at random and its
observed value imputed. Missing cells start from a random donor value and are
updated in turn for ``n_iterations`` sweeps (rows missing one value need only one).

Differences from running ``mice`` with the row appended to the donors: the
regressions use the donors alone (one extra row changes them negligibly), and the
random numbers differ from R's, so a single draw is not R's draw; the distribution is
the same. Randomness is counter-based: each patient's draws depend only on ``seed``
and the patient's own values, so a patient gets the same result alone or in a batch,
in any row order.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_keys(values: np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit key per row from its values (NaN-aware) and the seed."""
    v = np.where(np.isnan(values), np.inf, values).astype(np.float64)
    bits = np.ascontiguousarray(v).view(np.uint64)
    h = np.full(v.shape[0], np.uint64(seed & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(v.shape[1]):
            h = _splitmix64(h ^ bits[:, j])
    return h


def _uniform(keys: np.ndarray, counter: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = _splitmix64(keys ^ _splitmix64(np.uint64(counter) * _GOLDEN + np.zeros(1, np.uint64)))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class PMMImputer:
    """Chained-equation predictive mean matching against a complete donor table.

    Parameters
    ----------
    n_imputations : int
        M, the number of completed data sets returned.
    n_iterations : int
        Gibbs sweeps for rows missing two or more values (mice's ``maxit``).
    n_donors : int
        Candidates drawn among the nearest predicted means (mice's ``donors``).
    ridge : float
        mice's ridge penalty.
    seed : int
        Seed; results are a deterministic function of (seed, row values).

    Examples
    --------
    >>> imp = PMMImputer(n_imputations=20, seed=1).fit(donors)   # donors: (n, p), complete
    >>> completed = imp.transform(X)                             # (20, len(X), p)
    """

    def __init__(self, n_imputations: int = 20, n_iterations: int = 20, n_donors: int = 5,
                 ridge: float = 1e-5, seed: int = 2020):
        self.n_imputations = n_imputations
        self.n_iterations = n_iterations
        self.n_donors = n_donors
        self.ridge = ridge
        self.seed = seed

    def fit(self, donors: np.ndarray) -> "PMMImputer":
        d = np.asarray(donors, dtype=np.float64)
        if d.ndim != 2 or not np.all(np.isfinite(d)):
            raise ValueError("the donor table must be a complete 2-D array")
        n, p = d.shape
        self.donors_ = d
        self.coef_, self.chol_, self.rss_, self.df_ = [], [], [], []
        self.sorted_yhat_, self.sorted_values_ = [], []
        for j in range(p):
            x = np.column_stack([np.ones(n), np.delete(d, j, axis=1)])
            y = d[:, j]
            xtx = x.T @ x
            v = np.linalg.inv(xtx + np.diag(self.ridge * np.diag(xtx)))
            coef = v @ (x.T @ y)
            resid = y - x @ coef
            v = (v + v.T) / 2
            self.coef_.append(coef)
            self.chol_.append(np.linalg.cholesky(v))
            self.rss_.append(float(resid @ resid))
            self.df_.append(max(n - x.shape[1], 1))
            yhat = x @ coef
            order = np.argsort(yhat, kind="stable")
            self.sorted_yhat_.append(yhat[order])
            self.sorted_values_.append(y[order])
        return self

    def _draw_betas(self, p: int) -> np.ndarray:
        """beta* for every (m, iteration, variable): shape (M, T, p, p) (intercept first)."""
        rng = np.random.default_rng(self.seed)
        m, t = self.n_imputations, self.n_iterations
        chi = rng.chisquare(np.array(self.df_, dtype=np.float64), size=(m, t, p))
        sigma = np.sqrt(np.array(self.rss_) / chi)  # (m, t, p)
        z = rng.standard_normal((m, t, p, p))
        chol = np.stack(self.chol_)  # (p, p, p): per variable, (p x p) with intercept
        coef = np.stack(self.coef_)  # (p, p)
        return coef + np.einsum("jab,mtjb->mtja", chol, z) * sigma[..., None]

    def _match(self, j: int, yhat_mis: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Pick one of the n_donors nearest donors (in predicted mean) for each target."""
        s = self.sorted_yhat_[j]
        k = min(self.n_donors, len(s))
        pos = np.searchsorted(s, yhat_mis)
        lo = np.clip(pos - k, 0, len(s) - 2 * k if len(s) >= 2 * k else 0)
        window = lo[:, None] + np.arange(min(2 * k, len(s)))
        dist = np.abs(s[window] - yhat_mis[:, None])
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k] if window.shape[1] > k else np.argsort(dist, axis=1)
        # Deterministic order among the k candidates before the random pick.
        nearest = np.sort(nearest, axis=1)
        choice = np.minimum((u * k).astype(np.int64), k - 1)
        idx = window[np.arange(len(window)), nearest[np.arange(len(window)), choice]]
        return self.sorted_values_[j][idx]

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Impute the NaN cells of ``X`` (n, p). Returns (M, n, p); observed cells unchanged."""
        X = np.asarray(X, dtype=np.float64)
        n, p = X.shape
        M, T = self.n_imputations, self.n_iterations
        out = np.broadcast_to(X, (M, n, p)).copy()
        miss = np.isnan(X)
        rows = np.flatnonzero(miss.any(axis=1))
        if rows.size == 0:
            return out
        keys = row_keys(X[rows], self.seed)
        betas = self._draw_betas(p)
        sub = out[:, rows, :]  # (M, r, p)
        sub_miss = miss[rows]
        multi = sub_miss.sum(axis=1) > 1
        nd = len(self.donors_)
        # Initial values: random donor values (mice's default initialisation).
        for j in range(p):
            r = np.flatnonzero(sub_miss[:, j])
            for m in range(M):
                u = _uniform(keys[r], ((m * T) * p + j) * 4 + 0)
                sub[m, r, j] = self.donors_[np.minimum((u * nd).astype(np.int64), nd - 1), j]
        for it in range(T):
            last = it == T - 1
            for j in range(p):
                r = np.flatnonzero(sub_miss[:, j] & (multi | last))
                if r.size == 0:
                    continue
                for m in range(M):
                    x = np.delete(sub[m, r, :], j, axis=1)
                    beta = betas[m, it, j]
                    yhat = beta[0] + x @ beta[1:]
                    u = _uniform(keys[r], ((m * T + it) * p + j) * 4 + 1)
                    sub[m, r, j] = self._match(j, yhat, u)
        out[:, rows, :] = sub
        return out
