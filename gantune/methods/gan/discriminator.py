"""Discriminators: score a question+answer as real (high) or generated (low), and their losses.

Each takes (prompt ids, prompt mask, answer ids, answer mask, states) and returns a logit per row
(B,). ``states`` are the frozen LM's last hidden states over the answer tokens (B×T×d, no grad),
computed once per step by the method; only ``HiddenStateDiscriminator`` reads them.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(widths: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers of the given widths, LeakyReLU(0.01) (and dropout) between them; a logit at the end."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.LeakyReLU(0.01))
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class HiddenStateDiscriminator(nn.Module):
    """Reads the frozen LM's contextual states of the answer (they attend to the question).

    Features: [mean state over the answer's tokens ; state of its last token], LayerNorm, an MLP
    with dropout. No length feature: a sample must not be given away by its length alone.
    """

    needs_states = True

    def __init__(self, hidden_size: int, hidden: list[int], dropout: float = 0.1):
        super().__init__()
        width = 2 * hidden_size
        self.net = nn.Sequential(nn.LayerNorm(width), *_mlp([width, *hidden, 1], dropout))

    def forward(self, prompt_ids, prompt_mask, answer_ids, answer_mask, states: torch.Tensor) -> torch.Tensor:
        states = states.float()
        last = (answer_mask.sum(1) - 1).clamp(min=0)
        final = states[torch.arange(states.shape[0], device=states.device), last]
        return self.net(torch.cat([_masked_mean(states, answer_mask), final], dim=-1)).squeeze(-1)

    def prefix_scores(self, answer_mask: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """D's logit of every prefix y_≤t of each answer in one pass (B×T, 0 past the answer): the same
        features as ``forward`` (mean state over the prefix ; state of its last token), so position
        len − 1 is the whole answer's score."""
        states, m = states.float(), answer_mask.unsqueeze(-1).float()
        running_mean = (states * m).cumsum(1) / m.cumsum(1).clamp(min=1.0)
        return self.net(torch.cat([running_mean, states], dim=-1)).squeeze(-1) * answer_mask


class EmbeddingDiscriminator(nn.Module):
    """Reads both parts through the frozen LM's input embeddings, mean-pooled over real tokens.

    Features: [mean embedding of the question ; mean embedding of the answer ; answer length / T].
    """

    needs_states = False

    def __init__(self, embedding: nn.Embedding, hidden: list[int], max_answer_tokens: int, dropout: float = 0.0):
        super().__init__()
        self._frozen = (embedding,)  # the LM's own embedding, held outside the module tree: not trained, not saved
        self.max_answer = max_answer_tokens
        width = 2 * embedding.embedding_dim + 1
        # LayerNorm first: pooled LM embeddings are tiny (|x| ~ 0.01), too small for the MLP to tell apart
        self.net = nn.Sequential(nn.LayerNorm(width), *_mlp([width, *hidden, 1], dropout))

    def _pool(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # F.embedding, not the module: the adapter's hook must not fire here
            e = nn.functional.embedding(ids, self._frozen[0].weight).float()
        return _masked_mean(e, mask)

    def forward(self, prompt_ids, prompt_mask, answer_ids, answer_mask, states=None) -> torch.Tensor:
        length = answer_mask.sum(1, keepdim=True).float() / self.max_answer
        x = torch.cat([self._pool(prompt_ids, prompt_mask), self._pool(answer_ids, answer_mask), length], dim=-1)
        return self.net(x).squeeze(-1)


class ThesisDiscriminator(nn.Module):
    """The thesis' D: question+answer token ids cast to float, padded to a fixed width, 4 linear layers.

    Kept to show why it is a poor choice: an id's magnitude means nothing, so D can only learn
    length and id artefacts.
    """

    needs_states = False

    def __init__(self, seq_len: int, hidden: list[int], pad_id: int):
        super().__init__()
        self.seq_len, self.pad_id = seq_len, pad_id
        self.net = _mlp([seq_len, *hidden, 1])

    def forward(self, prompt_ids, prompt_mask, answer_ids, answer_mask, states=None) -> torch.Tensor:
        rows = []
        for p, pm, a, am in zip(prompt_ids, prompt_mask, answer_ids, answer_mask):
            ids = torch.cat([p[pm.bool()], a[am.bool()]])[: self.seq_len]
            rows.append(nn.functional.pad(ids, (0, self.seq_len - ids.numel()), value=self.pad_id))
        return self.net(torch.stack(rows).float()).squeeze(-1)


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """D's loss from logits of real rows and of the generated rows that answer the same questions.

    relativistic (RSGAN / Bradley–Terry): −log σ(D(q, r) − D(q, y)), averaged over pairs; ``fake``
    may hold k samples per question (B·k rows, question-major), compared with their own reference.
    bce: real → 1 − smoothing, generated → 0.
    """
    if kind == "relativistic":
        k = fake.numel() // real.numel()
        return nn.functional.softplus(fake - real.repeat_interleave(k)).mean()
    bce = nn.functional.binary_cross_entropy_with_logits
    return bce(real, torch.full_like(real, 1.0 - label_smoothing)) + bce(fake, torch.zeros_like(fake))


def last_score(prefix_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's score at its last real position: the whole answer's (B,)."""
    return prefix_scores.gather(1, (mask.sum(1) - 1).clamp(min=0).unsqueeze(1)).squeeze(1)


def aligned_reference_scores(real: torch.Tensor, real_mask: torch.Tensor, fake_mask: torch.Tensor) -> torch.Tensor:
    """For each sample position t, the reference's prefix score at min(t, its last position) (B·k × T).

    ``real``: per-prefix scores of the B references; ``fake_mask``: the B·k samples (question-major).
    Past the reference's end its whole answer stands in, so a sample that runs on is compared with an
    answer that has ended."""
    k = fake_mask.shape[0] // real.shape[0]
    t = torch.arange(fake_mask.shape[1], device=real.device)
    last = (real_mask.sum(1) - 1).clamp(min=0).repeat_interleave(k)
    index = torch.minimum(t.unsqueeze(0), last.unsqueeze(1)).clamp(max=real.shape[1] - 1)
    return real.repeat_interleave(k, 0).gather(1, index)


def dense_d_loss(real: torch.Tensor, real_mask: torch.Tensor, fake: torch.Tensor, fake_mask: torch.Tensor) -> torch.Tensor:
    """Relativistic loss at every prefix: −log σ(D(q, r_≤min(t,|r|)) − D(q, y_≤t)), averaged over the samples' tokens."""
    aligned = aligned_reference_scores(real, real_mask, fake_mask)
    m = fake_mask.float()
    return (nn.functional.softplus(fake - aligned) * m).sum() / m.sum().clamp(min=1.0)


def d_reward(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The generator's reward per sample: D(q, y) − D(q, r) (relativistic) or σ(D(q, y)) (bce)."""
    if kind == "relativistic":
        return fake - real.repeat_interleave(fake.numel() // real.numel())
    return torch.sigmoid(fake)
