"""ROUGE-L near-duplicate removal that scales to thousands of questions per topic.

Exact ROUGE-L (rouge-score) on every pair is O(n²) pure-Python LCS: hours for 13,000 questions. ROUGE-L F1 is
2·LCS/(|a|+|b|), and the LCS can never exceed the multiset token overlap Σ min(count_a, count_b), so
2·overlap/(|a|+|b|) is an upper bound. That overlap is a sparse matrix product over (token, k-th occurrence) features,
computed in row blocks; only pairs whose bound exceeds the threshold get the exact LCS. Tokens and scores come from
rouge-score's public API (its default tokenizer, its scorer), so every figure is the one ``RougeScorer`` gives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from rouge_score import rouge_scorer, tokenizers
from scipy.sparse import csr_matrix

BLOCK = 512


class _Tokenized(tokenizers.Tokenizer):
    """Reads back text that rouge-score's default tokenizer already split, joined by spaces (its tokens are runs of
    ``a-z0-9``, so splitting on whitespace returns them unchanged): each question is tokenised once, not per pair."""

    def tokenize(self, text: str) -> list[str]:
        return text.split()


_DEFAULT_TOKENIZER = tokenizers.DefaultTokenizer(use_stemmer=False)  # what RougeScorer(["rougeL"]) uses
_SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenized())


def tokenize(text: str) -> list[str]:
    """rouge-score's tokens of ``text`` (lower-cased alphanumeric runs, no stemming)."""
    return list(_DEFAULT_TOKENIZER.tokenize(text))


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 between two token lists of :func:`tokenize`: rouge-score's scorer on the texts they came from."""
    return float(_SCORER.score(" ".join(a), " ".join(b))["rougeL"].fmeasure)


def _features(token_lists: list[list[str]]) -> csr_matrix:
    vocab: dict[tuple[str, int], int] = {}
    rows, cols = [], []
    for i, tokens in enumerate(token_lists):
        seen: Counter[str] = Counter()
        for tok in tokens:
            seen[tok] += 1
            cols.append(vocab.setdefault((tok, seen[tok]), len(vocab)))
            rows.append(i)
    data = np.ones(len(rows), dtype=np.float32)
    return csr_matrix((data, (rows, cols)), shape=(len(token_lists), max(len(vocab), 1)))


def near_duplicates(texts: Sequence[str], threshold: float) -> list[int | None]:
    """For each text, the index of an earlier *kept* text whose ROUGE-L F1 with it is above ``threshold`` (it is then
    dropped), or None (kept). Greedy in input order, so the first of a cluster survives."""
    tokens = [tokenize(t) for t in texts]
    n = len(tokens)
    result: list[int | None] = [None] * n
    if n < 2:
        return result
    lengths = np.array([len(t) for t in tokens], dtype=np.float32)
    feats = _features(tokens)
    feats_t = feats.T.tocsr()
    kept = np.zeros(n, dtype=bool)
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        overlap = (feats[start:stop] @ feats_t).toarray()
        denom = lengths[start:stop, None] + lengths[None, :]
        bound = np.divide(2 * overlap, denom, out=np.zeros_like(overlap), where=denom > 0)
        for row, i in enumerate(range(start, stop)):
            candidates = np.nonzero(bound[row, :i] > threshold)[0]
            for j in candidates:
                if kept[j] and rouge_l(tokens[i], tokens[j]) > threshold:
                    result[i] = int(j)
                    break
            kept[i] = result[i] is None
    return result
