"""EMA teacher (spec §2): a frozen fp32 copy of the student updated after each optimiser step."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def ema_decay_at(step: int, tau0: float, tau_end: float, anneal_steps: int) -> float:
    """Spec §2 / FS ``get_annealed_rate``: linear from tau0 at update 0 to tau_end at
    ``anneal_steps``, constant tau_end afterwards (and when ``anneal_steps`` is 0)."""
    if step >= anneal_steps:
        return tau_end
    return tau_end - (tau_end - tau0) * (1.0 - step / anneal_steps)


class EMATeacher(nn.Module):
    """Deep copy of ``student`` at step 0; ``requires_grad=False`` and always in eval mode.

    ``copied``: parameter-name prefixes copied from the student at each update (spec §2:
    speech pos conv, text embeddings); everything else is averaged
    ``T <- tau·T + (1-tau)·S``. ``dropped``: submodules/parameters the teacher never uses
    (shared front-end, mask embedding); they are removed from the copy.
    """

    def __init__(
        self, student: nn.Module, copied: Sequence[str] = (), dropped: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.model = copy.deepcopy(student)
        for name in dropped:
            if hasattr(self.model, name):
                setattr(self.model, name, None)  # keeps the attribute, drops the tensors
        self.copied = tuple(copied)
        self.model.requires_grad_(False)
        self.model.train(False)

    def train(self, mode: bool = True) -> EMATeacher:
        """The teacher never trains: no dropout / layerdrop (spec §1 step 3)."""
        return super().train(False)

    def forward(self, *args: object, **kwargs: object) -> object:
        return self.model(*args, **kwargs)

    def _pairs(self, student: nn.Module) -> tuple[list[Tensor], ...]:
        src = dict(student.named_parameters())
        src.update(student.named_buffers())
        avg_t, avg_s, cp_t, cp_s = [], [], [], []
        tensors = list(self.model.named_parameters()) + list(self.model.named_buffers())
        for name, t in tensors:
            if name not in src:
                raise KeyError(f"teacher tensor {name!r} has no student counterpart")
            copied = name.startswith(self.copied) or not t.is_floating_point()
            (cp_t if copied else avg_t).append(t)
            (cp_s if copied else avg_s).append(src[name].detach())
        return avg_t, avg_s, cp_t, cp_s

    @torch.no_grad()
    def update(self, student: nn.Module, tau: float) -> None:
        """One EMA step with decay ``tau``; tau >= 1 skips the update entirely (FS)."""
        if tau >= 1.0:
            return
        avg_t, avg_s, cp_t, cp_s = self._pairs(student)
        if avg_t:
            # tau·T + (1-tau)·S evaluated literally (fp32): _foreach_lerp_ or add(alpha=)
            # round differently and miss the spec §8.2 check by one ulp
            torch._foreach_mul_(avg_t, tau)
            torch._foreach_add_(avg_t, torch._foreach_mul(avg_s, 1.0 - tau))
        if cp_t:
            torch._foreach_copy_(cp_t, cp_s)

    def averaged_names(self) -> list[str]:
        return [n for n, _ in self.model.named_parameters() if not n.startswith(self.copied)]

    def copied_names(self) -> list[str]:
        return [n for n, _ in self.model.named_parameters() if n.startswith(self.copied)]
