"""DeepSurv members: an MLP trained with the negative Cox partial log-likelihood.

PyTorch is imported lazily (it is the ``train`` extra); the trained member is
returned as a list of :class:`pulmo.triage.model.DenseLayer` (float64 numpy), so
everything downstream (out-of-fold scores, the Cox model, the saved file) uses the
same numpy code as prediction.

Loss: negative partial log-likelihood with **Breslow** handling of tied times
(every row whose time equals an event time is in that event's risk set), divided
by the number of events. Full-batch Adam (the exact Cox loss needs whole risk
sets; mini-batches are optional), L2 weight decay, dropout, early stopping on a
validation set (the held-out fold) with the best epoch's weights restored.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from pulmo.errors import PulmoError
from pulmo.triage.model import DenseLayer

ACTIVATIONS = ("tanh", "relu", "selu", "linear")
TORCH_MISSING = "PyTorch is not installed: pip install 'pulmo[train]'"


def require_torch():
    """Import torch or raise a clear :class:`PulmoError`."""
    try:
        import torch
    except ImportError:
        raise PulmoError(TORCH_MISSING) from None
    return torch


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch on ``n`` threads (restored afterwards); 1 thread = bit-reproducible."""
    torch = require_torch()
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield torch
    finally:
        torch.set_num_threads(old)


@dataclass
class MemberResult:
    layers: list[DenseLayer]
    best_epoch: int
    epochs_run: int
    best_val_loss: float
    train_loss: float


def _risk_index(time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by decreasing time and, per sorted position, the last position of its tie group."""
    order = np.argsort(-time, kind="stable")
    ts = time[order]
    n = ts.size
    # last index j with ts[j] == ts[i] (ts is decreasing).
    boundaries = np.r_[np.flatnonzero(ts[1:] != ts[:-1]), n - 1]
    group_end = boundaries[np.searchsorted(boundaries, np.arange(n), side="left")]
    return order, group_end


class _CoxLoss:
    """Negative Breslow partial log-likelihood / number of events for fixed data."""

    def __init__(self, torch, time: np.ndarray, event: np.ndarray, dtype) -> None:
        order, group_end = _risk_index(time)
        self.order = torch.as_tensor(order, dtype=torch.long)
        self.group_end = torch.as_tensor(group_end, dtype=torch.long)
        ev = event[order].astype(bool)
        self.ev = torch.as_tensor(ev)
        self.n_events = max(1, int(ev.sum()))
        self.torch = torch

    def __call__(self, risk):
        torch = self.torch
        r = risk.reshape(-1)[self.order]
        lse = torch.logcumsumexp(r, dim=0)[self.group_end]
        return -(r - lse)[self.ev].sum() / self.n_events


def build_network(torch, n_inputs: int, hidden: tuple[int, ...], activation: str, dropout: float,
                  output_activation: str = "linear"):
    """Sequential MLP: [Linear, act, dropout]* + Linear(1) + output activation."""
    nn = torch.nn
    acts = {"tanh": nn.Tanh, "relu": nn.ReLU, "selu": nn.SELU, "linear": nn.Identity}
    if activation not in acts or output_activation not in acts:
        raise ValueError(f"activation must be one of {ACTIVATIONS}")
    layers = []
    width = n_inputs
    for h in hidden:
        lin = nn.Linear(width, int(h))
        if activation == "selu":
            # LeCun normal initialisation, as self-normalising networks expect.
            nn.init.normal_(lin.weight, 0.0, 1.0 / np.sqrt(width))
            nn.init.zeros_(lin.bias)
        layers += [lin, acts[activation]()]
        if dropout > 0:
            layers.append(nn.AlphaDropout(dropout) if activation == "selu" else nn.Dropout(dropout))
        width = int(h)
    layers += [nn.Linear(width, 1), acts[output_activation]()]
    return nn.Sequential(*layers)


def export_layers(net, activation: str, output_activation: str) -> list[DenseLayer]:
    """torch Sequential -> DenseLayers (weight transposed to (inputs, outputs), float64)."""
    import torch

    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    out = []
    for k, lin in enumerate(linears):
        act = output_activation if k == len(linears) - 1 else activation
        out.append(DenseLayer(lin.weight.detach().to(torch.float64).numpy().T.copy(),
                              lin.bias.detach().to(torch.float64).numpy().copy(), act))
    return out


def train_member(
    X: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    X_val: np.ndarray,
    time_val: np.ndarray,
    event_val: np.ndarray,
    *,
    hidden: tuple[int, ...],
    activation: str,
    output_activation: str,
    dropout: float,
    weight_decay: float,
    learning_rate: float,
    max_epochs: int,
    patience: int,
    batch_size: int | None,
    seed: int,
) -> MemberResult:
    """Train one MLP on (X, time, event); early stopping on the validation Cox loss.

    Seeded from ``seed`` alone (the caller's global torch random state is left as it was).
    """
    torch = require_torch()
    with torch.random.fork_rng(devices=[]):
        return _train_member(torch, X, time, event, X_val, time_val, event_val, hidden=hidden,
                             activation=activation, output_activation=output_activation, dropout=dropout,
                             weight_decay=weight_decay, learning_rate=learning_rate, max_epochs=max_epochs,
                             patience=patience, batch_size=batch_size, seed=seed)


def _train_member(torch, X, time, event, X_val, time_val, event_val, *, hidden, activation, output_activation,
                  dropout, weight_decay, learning_rate, max_epochs, patience, batch_size, seed) -> MemberResult:
    dtype = torch.float64
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    net = build_network(torch, X.shape[1], hidden, activation, dropout, output_activation).to(dtype)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    Xt = torch.as_tensor(X, dtype=dtype)
    Xv = torch.as_tensor(X_val, dtype=dtype)
    loss_val = _CoxLoss(torch, time_val, event_val, dtype)
    n = X.shape[0]
    full = batch_size is None or batch_size >= n
    loss_train = _CoxLoss(torch, time, event, dtype) if full else None
    best = (np.inf, 0, None)
    train_loss = np.nan
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        net.train()
        if full:
            opt.zero_grad()
            loss = loss_train(net(Xt))
            loss.backward()
            opt.step()
            train_loss = float(loss.detach())
        else:
            perm = torch.randperm(n, generator=gen).numpy()
            total = 0.0
            for s in range(0, n, batch_size):
                idx = perm[s:s + batch_size]
                if event[idx].sum() == 0:
                    continue
                lb = _CoxLoss(torch, time[idx], event[idx], dtype)
                opt.zero_grad()
                loss = lb(net(Xt[idx]))
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            train_loss = total / n
        net.eval()
        with torch.no_grad():
            v = float(loss_val(net(Xv)))
        if not np.isfinite(v):
            break
        if v < best[0] - 1e-9:
            best = (v, epoch, [p.detach().clone() for p in net.parameters()])
        elif epoch - best[1] >= patience:
            break
    if best[2] is None:
        raise PulmoError("network training diverged (non-finite loss); try a smaller learning rate.",
                         code="training_diverged")
    with torch.no_grad():
        for p, b in zip(net.parameters(), best[2]):
            p.copy_(b)
    return MemberResult(layers=export_layers(net, activation, output_activation), best_epoch=best[1],
                        epochs_run=epoch, best_val_loss=best[0], train_loss=train_loss)


def member_output(layers: list[DenseLayer], X: np.ndarray) -> np.ndarray:
    """Numpy forward pass of one member through :meth:`TriageModel.score_dl`, the very
    code that serves predictions."""
    from pulmo.triage.model import TriageModel

    p = layers[0].weight.shape[0]
    probe = TriageModel(features=[f"x{j}" for j in range(p)], mean=np.zeros(p), sd=np.ones(p),
                        ensemble=[layers], cox_coefficients=np.zeros(p), cox_coefficient_dl=0.0,
                        baseline_times=[1.0], baseline_cumhaz=[0.0])
    return probe.score_dl(np.asarray(X, dtype=np.float64))


def centre_member(layers: list[DenseLayer], X: np.ndarray) -> list[DenseLayer]:
    """Shift a member so that its mean output over ``X`` is 0.

    The Cox loss ignores a constant added to every risk score, so each member ends
    with an arbitrary offset; centring them on the same rows makes the out-of-fold
    scores of different folds comparable (and their average well defined). With a
    linear output the bias is shifted; otherwise a 1 -> 1 linear layer is appended.
    """
    c = float(member_output(layers, X).mean())
    last = layers[-1]
    if last.activation == "linear":
        return layers[:-1] + [DenseLayer(last.weight, last.bias - c, "linear")]
    return layers + [DenseLayer(np.ones((1, 1)), np.array([-c]), "linear")]
