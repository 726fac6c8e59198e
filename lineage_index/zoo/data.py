"""Synthetic training data for the zoo: one sparse Markov chain per task id.

A task is a random first-order Markov chain over the architecture's token window: every
token has a few preferred successors (Dirichlet weights) plus a little uniform noise, so a
model can learn it. A task is named by a path of ids: the first builds a fresh chain (a
pretraining corpus), every further id rewires a share of its rows (a related downstream
domain), so a fine-tune learns something new without starting over. Everything is a pure
function of the path: no files, no global random state, no training here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

SUCCESSORS = 6
NOISE = 0.05
REWIRE = 0.3  # share of rows a derived task redraws

TaskPath = tuple[int, ...]


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class MarkovTask:
    """A sparse Markov chain over ``n_tokens`` ids starting at ``offset``."""

    path: TaskPath
    n_tokens: int
    offset: int
    successors: torch.Tensor  # (n_tokens, SUCCESSORS) int64, local ids
    weights: torch.Tensor  # (n_tokens, SUCCESSORS) float32, rows sum to 1

    def sample(self, batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
        """(batch, length) token ids drawn from the chain (global ids, offset added)."""
        cur = torch.randint(0, self.n_tokens, (batch,), generator=gen)
        out = torch.empty(batch, length, dtype=torch.int64)
        out[:, 0] = cur
        for t in range(1, length):
            pick = torch.multinomial(self.weights[cur], 1, generator=gen).squeeze(1)
            nxt = self.successors[cur, pick]
            noise = torch.rand(batch, generator=gen) < NOISE
            rand_tok = torch.randint(0, self.n_tokens, (batch,), generator=gen)
            cur = torch.where(noise, rand_tok, nxt)
            out[:, t] = cur
        return out + self.offset


def _draw_rows(rng: np.random.Generator, rows: int, n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    succ = np.stack([rng.choice(n_tokens, SUCCESSORS, replace=False) for _ in range(rows)])
    w = rng.dirichlet(np.full(SUCCESSORS, 0.6), size=rows).astype(np.float32)
    return succ.astype(np.int64), w


def make_task(path: TaskPath, n_tokens: int, offset: int = 0) -> MarkovTask:
    """The Markov chain named by ``path`` over ``n_tokens`` ids (deterministic)."""
    rng = np.random.default_rng(derive_seed("markov", path[0], n_tokens))
    succ, w = _draw_rows(rng, n_tokens, n_tokens)
    for variant in path[1:]:
        rng = np.random.default_rng(derive_seed("rewire", variant, n_tokens))
        rows = rng.choice(n_tokens, int(REWIRE * n_tokens), replace=False)
        succ[rows], w[rows] = _draw_rows(rng, len(rows), n_tokens)
    return MarkovTask(
        path=tuple(path),
        n_tokens=n_tokens,
        offset=offset,
        successors=torch.from_numpy(succ),
        weights=torch.from_numpy(w),
    )


def classification_batch(
    tasks: list[MarkovTask], batch: int, length: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences from several chains with the chain index as label (encoder fine-tuning)."""
    labels = torch.randint(0, len(tasks), (batch,), generator=gen)
    seqs = torch.stack([tasks[int(i)].sample(1, length, gen)[0] for i in labels])
    return seqs, labels


def mask_tokens(
    ids: torch.Tensor, mask_id: int, gen: torch.Generator, rate: float = 0.15
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masking: (masked inputs, labels with -100 where not masked)."""
    chosen = torch.rand(ids.shape, generator=gen) < rate
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    inputs = torch.where(chosen, torch.full_like(ids, mask_id), ids)
    return inputs, labels
