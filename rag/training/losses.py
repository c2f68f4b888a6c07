"""The Sentence-BERT training objectives as small pure functions of embeddings (torch tensors).

All take the sentence embeddings that one shared encoder produced for each side (siamese /
triplet network: the same weights embed every column), mean-pooled and *not* normalised:

- `softmax_loss`: classification over (u, v, |u - v|) with a trainable linear head (SBERT on
  NLI: entailment / neutral / contradiction). The head is only for training; it is not saved.
- `cosine_mse_loss`: mean squared error between cos(u, v) and a gold score in [0, 1].
- `triplet_loss`: max(d(a, p) - d(a, n) + margin, 0). Euclidean distance with margin 5 (SBERT's
  setting, on unnormalised embeddings) or cosine distance 1 - cos with a margin like 0.5.
- `mnr_loss`: multiple negatives ranking (InfoNCE with in-batch negatives; SimCSE, E5,
  sentence-transformers' MultipleNegativesRankingLoss): cross-entropy over scale * cos(a_i, c_j)
  where the candidates c are the batch's positives followed by any hard negatives, so that each
  anchor's positive competes with every other positive and every hard negative in the batch.
"""

from __future__ import annotations

LOSSES = ("mnr", "cosine", "softmax", "triplet")
MNR_SCALE = 20.0  # sentence-transformers' default (a temperature of 0.05)
TRIPLET_MARGIN = {"euclidean": 5.0, "cosine": 0.5}


def _cos_matrix(a, b):
    import torch

    return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T


def mnr_loss(anchors, positives, hard_negatives=None, scale: float = MNR_SCALE):
    """anchors, positives: (B, d); hard_negatives: None, (B, d) or a list of (B, d) tensors.
    Row i's target is candidate i (its own positive)."""
    import torch

    candidates = [positives]
    if hard_negatives is not None:
        candidates += hard_negatives if isinstance(hard_negatives, (list, tuple)) else [hard_negatives]
    scores = _cos_matrix(anchors, torch.cat(candidates)) * scale
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(anchors), device=scores.device))


def cosine_mse_loss(u, v, target):
    """target: (B,) gold similarity already scaled to [0, 1]."""
    import torch

    return torch.nn.functional.mse_loss(torch.cosine_similarity(u, v), target.to(u.dtype))


def softmax_features(u, v):
    import torch

    return torch.cat([u, v, torch.abs(u - v)], dim=-1)


def softmax_loss(u, v, labels, head):
    """labels: (B,) class indices; head: a Linear(3 * d, n_labels)."""
    import torch

    return torch.nn.functional.cross_entropy(head(softmax_features(u, v)), labels)


def triplet_loss(anchors, positives, negatives, margin: float | None = None, metric: str = "euclidean"):
    import torch

    if metric == "euclidean":
        d_pos = torch.linalg.vector_norm(anchors - positives, dim=-1)
        d_neg = torch.linalg.vector_norm(anchors - negatives, dim=-1)
    elif metric == "cosine":
        d_pos = 1 - torch.cosine_similarity(anchors, positives)
        d_neg = 1 - torch.cosine_similarity(anchors, negatives)
    else:
        raise ValueError(f"triplet metric must be euclidean or cosine, not {metric!r}")
    margin = TRIPLET_MARGIN[metric] if margin is None else margin
    return torch.relu(d_pos - d_neg + margin).mean()
