"""A tiny synthetic preference dataset with a rule a small model can learn.

Task: the prompt lists a few distinct words (``"sort: owl cat jam"``); the
chosen response lists them in alphabetical order (``"cat jam owl"``), the
rejected response in another order. :func:`tiny_preference_score` is the
ground-truth reward (fraction of positions that agree with the sorted order),
so a trained policy can be scored exactly and used as an online oracle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TINY_WORDS: tuple[str, ...] = (
    "apple",
    "bird",
    "cat",
    "dog",
    "egg",
    "fish",
    "goat",
    "hat",
    "ink",
    "jam",
    "kite",
    "lamp",
    "moon",
    "nut",
    "owl",
    "pig",
)
PROMPT_PREFIX = "sort:"


def _prompt_words(prompt: str) -> list[str]:
    words = prompt.split()
    if words and words[0] == PROMPT_PREFIX:
        words = words[1:]
    return words


def tiny_preference_score(prompt: str, response: str) -> float:
    """Ground-truth reward in ``[0, 1]``: share of positions matching the sorted prompt words.

    1 exactly for the chosen response of :func:`make_tiny_preference_dataset`,
    < 1 for any other order; extra or missing words count as mismatches.
    """
    target = sorted(_prompt_words(prompt))
    if not target:
        return 0.0
    words = response.split()
    hits = sum(a == b for a, b in zip(words, target))
    return hits / max(len(target), len(words))


def make_tiny_preference_dataset(
    path: str | Path,
    num_rows: int,
    seed: int,
    *,
    num_words: int = 4,
    conversational: bool = False,
) -> Path:
    """Writes ``num_rows`` sorting-preference pairs as JSONL and returns the path.

    Args:
        path: output file (parent directories are created).
        num_rows: number of rows.
        seed: the rows are a deterministic function of the seed.
        num_words: distinct words per prompt (2 … 16).
        conversational: write ``prompt``/``chosen``/``rejected`` as chat
            message lists instead of plain strings.

    Returns:
        ``Path(path)``.
    """
    if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 1:
        raise ValueError(f"num_rows must be a positive integer, got {num_rows!r}")
    if not 2 <= num_words <= len(TINY_WORDS):
        raise ValueError(f"num_words must be in [2, {len(TINY_WORDS)}], got {num_words}")
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(num_rows):
            words = [TINY_WORDS[i] for i in rng.choice(len(TINY_WORDS), num_words, replace=False)]
            chosen = sorted(words)
            rejected = chosen
            while rejected == chosen:
                rejected = [words[i] for i in rng.permutation(num_words)]
            prompt = f"{PROMPT_PREFIX} {' '.join(words)}"
            if conversational:
                row = {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": " ".join(chosen)}],
                    "rejected": [{"role": "assistant", "content": " ".join(rejected)}],
                }
            else:
                row = {
                    "prompt": prompt,
                    "chosen": " " + " ".join(chosen),
                    "rejected": " " + " ".join(rejected),
                }
            f.write(json.dumps(row) + "\n")
    return path


__all__ = ["TINY_WORDS", "make_tiny_preference_dataset", "tiny_preference_score"]
