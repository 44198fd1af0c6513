"""One optimisation step of a fused group: the loss and its gradient, forward with a tape, the
explicit backward into preallocated gradient buffers and the stacked optimizer, layer by layer
(`Step`); the same step captured in a CUDA graph (`GraphStep`), with the eager step as fallback.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .augment import augment
from .config import RunConfig
from .evaluate import as_input
from .group import Group
from .model import StackedMLP, max_norm_


def loss_and_grad(z: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's mean cross-entropy (label smoothing as in F.cross_entropy) and its gradient
    with respect to the logits: z [K, B, C], y [K, B] -> loss [K], dz [K, B, C]. The members'
    losses are independent terms of one sum, so each member gets its own gradient."""
    k, b, c = z.shape
    logp = torch.log_softmax(z, -1)
    loss = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # [K, B]
    if smoothing:
        loss = (1 - smoothing) * loss - smoothing * logp.mean(-1)
    grad = logp.exp_()  # softmax (logp is not needed any more)
    grad.scatter_add_(-1, y.unsqueeze(-1), grad.new_full((k, b, 1), smoothing - 1.0))
    if smoothing:
        grad.sub_(smoothing / c)
    return loss.mean(1), grad.div_(b)


class Step:
    """One optimisation step for the whole group on a [K, b] index tensor: forward with a tape,
    the explicit backward into preallocated gradient buffers, the stacked optimizer; accumulates
    the epoch's summed loss and correct count per member on the device (no sync)."""

    def __init__(self, model: StackedMLP, opt, x: torch.Tensor, y: torch.Tensor,
                 cfgs: Group | list[RunConfig]):
        self.model, self.opt, self.x, self.y = model, opt, x, y
        self.grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        self.grad_list = list(self.grads.values())  # parameters() order, as the optimizer's
        self.index = {name: j for j, name in enumerate(self.grads)}
        self.group = Group.of(cfgs).settings  # shared: augmentation, label smoothing
        limits = [c.max_norm or math.inf for c in cfgs]
        self.max_norm = (torch.tensor(limits, device=x.device).view(-1, 1, 1)
                         if any(math.isfinite(v) for v in limits) else None)
        self.loss_sum = torch.zeros(model.k, device=x.device)
        self.correct = torch.zeros(model.k, device=x.device)

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor) -> None:
        k, b = idx.shape
        # index_select copies whole rows (5x faster than advanced indexing on CPU)
        xb = as_input(self.x.index_select(0, idx.reshape(-1)).view(k, b, -1))  # [K, b, in]
        if self.group.augmentation.on:
            xb = augment(xb, self.group.augmentation)  # per sample; labels untouched
        yb = self.y[idx]  # [K, b]
        tape: list = []
        z = self.model(xb, tape)
        loss, dz = loss_and_grad(z, yb, self.group.label_smoothing)
        self.loss_sum.add_(loss, alpha=b)
        self.correct += (z.argmax(-1) == yb).sum(1)
        self.opt.begin()
        # each layer is updated as soon as its gradients are final, while they are in cache
        self.model.backward(tape, dz, self.grads, self._update)
        if self.max_norm is not None:
            max_norm_(self.model, self.max_norm)

    def _update(self, names: tuple[str, ...]) -> None:
        which = [self.index[n] for n in names]
        self.opt.update(which, [self.grad_list[j] for j in which])

    def mutable(self) -> list[torch.Tensor]:
        return [*self.model.parameters(), *self.model.buffers(), *self.opt.state_tensors(),
                self.loss_sum, self.correct]


class GraphStep:
    """The same step captured in a CUDA graph for one batch shape, replayed per batch."""

    def __init__(self, step: Step, batch: int):
        self.step = step
        self.idx = torch.zeros(step.model.k, batch, dtype=torch.long, device=step.x.device)
        saved = ([t.detach().clone() for t in step.mutable()], torch.get_rng_state(),
                 torch.cuda.get_rng_state() if torch.cuda.is_available() else None)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the graph (allocator, cuBLAS handles)
                for _ in range(3):
                    step(self.idx)
            torch.cuda.current_stream().wait_stream(side)
            self._restore(step, saved)  # warm-up must not count: state and dropout stream back
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                step(self.idx)
        except BaseException:  # the caller trains eagerly instead, from the state it had
            self._restore(step, saved)
            raise

    @staticmethod
    def _restore(step: Step, saved) -> None:
        """Put every mutated tensor and the dropout generator back as they were."""
        tensors, cpu_rng, cuda_rng = saved
        with torch.no_grad():
            for t, s in zip(step.mutable(), tensors, strict=True):
                t.copy_(s)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng)

    def __call__(self, idx: torch.Tensor) -> None:
        self.idx.copy_(idx)
        self.graph.replay()


def graph_step(step: Step, batch: int, progress: Callable[[dict], None] | None) -> GraphStep | None:
    """The step as a CUDA graph, or None (train eagerly) where capturing fails: the GPU path
    never fails where the eager path works."""
    try:
        return GraphStep(step, batch)
    except Exception as e:
        if progress:
            progress({"event": "log", "message": f"CUDA graph capture failed ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); this group trains eagerly"})
        return None
