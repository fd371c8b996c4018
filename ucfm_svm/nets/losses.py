"""The cross-entropy family (CE, wCE, LA, LDAM, CDT, LDT, VS) as PyTorch loss modules.

Same parameterization as :mod:`ucfm_svm.regularized.losses` (docs/theory.md §1, §9), built from
its :class:`~ucfm_svm.regularized.losses.LossParams`: for an example of class ``y`` with logits
``z`` (a row of the (batch, k) logit tensor)

    l(y, z) = w_y * CE(u, y),   u_c = (Delta_c z_c + iota_c - m_y [c = y]) / delta_y,

with ``w`` the class weights (wCE's weights are applied, unlike the paper's public code),
``iota`` the additive offsets (LA, VS), ``m`` the true-class margins (LDAM), ``Delta`` the
multiplicative scales (CDT, VS) and ``delta`` the label temperatures (LDT: ``delta_y = 1 /
Delta_y``, i.e. every logit of an example of class ``y`` is multiplied by ``Delta_y``). With
``reduction="sum"`` the value is ``sum_i l(y_i, z_i)``, exactly
:func:`ucfm_svm.regularized.losses.loss_and_grad`'s; ``"mean"`` divides it by the batch size.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..regularized.losses import LossParams, loss_params
from ..validation import fail

#: Reductions over the batch.
REDUCTIONS = ("mean", "sum")


class FamilyLoss(nn.Module):
    """One member of the family, ``forward(logits (batch, k), labels (batch,)) -> loss``.

    Parameters
    ----------
    params : LossParams
        From :func:`ucfm_svm.regularized.losses.loss_params` (or ``params_from_spec``).
    reduction : {"mean", "sum"}
    """

    def __init__(self, params: LossParams, reduction: str = "mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise fail("reduction", "one of " + ", ".join(REDUCTIONS), reduction)
        self.params = params
        self.reduction = reduction
        for name in ("weights", "offsets", "true_margins", "scales", "temperatures"):
            value = torch.as_tensor(np.asarray(getattr(params, name), dtype=float))
            self.register_buffer(name, value)

    def adjusted_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``u = (Delta z + iota - m_y e_y) / delta_y`` row by row, shape (batch, k)."""
        dtype = logits.dtype
        u = logits * self.scales.to(dtype) + self.offsets.to(dtype)
        margin = self.true_margins.to(dtype)[labels]
        u = u - nn.functional.one_hot(labels, u.shape[1]).to(dtype) * margin[:, None]
        return u / self.temperatures.to(dtype)[labels][:, None]

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``sum_i w_{y_i} CE(u_i, y_i)`` (or its batch mean)."""
        u = self.adjusted_logits(logits, labels)
        losses = nn.functional.cross_entropy(u, labels, reduction="none")
        total = torch.sum(self.weights.to(logits.dtype)[labels] * losses)
        return total if self.reduction == "sum" else total / labels.numel()


def family_loss(
    name: str,
    counts: object,
    *,
    gamma: float | None = None,
    tau: float | None = None,
    reduction: str = "mean",
) -> FamilyLoss:
    """The loss ``name`` (ce, wce, la, ldam, cdt, ldt, vs) for class ``counts``.

    Hyperparameters are validated as in :func:`ucfm_svm.regularized.losses.loss_params`.
    """
    return FamilyLoss(loss_params(name, counts, gamma=gamma, tau=tau), reduction)
