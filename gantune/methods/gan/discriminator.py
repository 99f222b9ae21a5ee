"""Discriminators: score a question+answer sequence as real (→1) or generated (→0).

Both take (prompt ids, prompt mask, answer ids, answer mask) and return probabilities (B,).
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers of the given widths, LeakyReLU(0.01) between them, sigmoid at the end."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        layers.append(nn.LeakyReLU(0.01) if i < len(widths) - 2 else nn.Sigmoid())
    return nn.Sequential(*layers)


class EmbeddingDiscriminator(nn.Module):
    """Reads both parts through the frozen LM's input embeddings, mean-pooled over real tokens.

    Features: [mean embedding of the question ; mean embedding of the answer ; answer length / T],
    so D can judge whether an answer fits its question and is not fooled by length alone.
    """

    def __init__(self, embedding: nn.Embedding, hidden: list[int], max_answer_tokens: int):
        super().__init__()
        self._frozen = (embedding,)  # the LM's own embedding, held outside the module tree: not trained, not saved
        self.max_answer = max_answer_tokens
        width = 2 * embedding.embedding_dim + 1
        # LayerNorm first: pooled LM embeddings are tiny (|x| ~ 0.01), too small for the MLP to tell apart
        self.net = nn.Sequential(nn.LayerNorm(width), *_mlp([width, *hidden, 1]))

    def _pool(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # F.embedding, not the module: the adapter's hook must not fire here
            e = nn.functional.embedding(ids, self._frozen[0].weight).float()
        m = mask.unsqueeze(-1).float()
        return (e * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, prompt_ids, prompt_mask, answer_ids, answer_mask) -> torch.Tensor:
        length = answer_mask.sum(1, keepdim=True).float() / self.max_answer
        x = torch.cat([self._pool(prompt_ids, prompt_mask), self._pool(answer_ids, answer_mask), length], dim=-1)
        return self.net(x).squeeze(-1)


class ThesisDiscriminator(nn.Module):
    """The thesis' D: question+answer token ids cast to float, padded to a fixed width, 4 linear layers.

    Kept to show why it is a poor choice: an id's magnitude means nothing, so D can only learn
    length and id artefacts.
    """

    def __init__(self, seq_len: int, hidden: list[int], pad_id: int):
        super().__init__()
        self.seq_len, self.pad_id = seq_len, pad_id
        self.net = _mlp([seq_len, *hidden, 1])

    def forward(self, prompt_ids, prompt_mask, answer_ids, answer_mask) -> torch.Tensor:
        rows = []
        for p, pm, a, am in zip(prompt_ids, prompt_mask, answer_ids, answer_mask):
            ids = torch.cat([p[pm.bool()], a[am.bool()]])[: self.seq_len]
            rows.append(nn.functional.pad(ids, (0, self.seq_len - ids.numel()), value=self.pad_id))
        return self.net(torch.stack(rows).float()).squeeze(-1)
