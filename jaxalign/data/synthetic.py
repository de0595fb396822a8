"""A tiny synthetic preference dataset with a rule a small model can learn.

Task: the prompt lists a few distinct words (``"sort: owl cat jam"``); the
chosen response lists them in alphabetical order (``"cat jam owl"``), the
rejected response in another order. :func:`tiny_preference_score` is the
ground-truth reward (fraction of positions that agree with the sorted order),
so a trained policy can be scored exactly and used as an online oracle.

A second rule, ``"reversed"`` (reverse alphabetical order), labels the *same*
prompts and the same random rejected orders (the generator draws identical random
numbers for every rule), so the two datasets of one seed pull one policy in
opposite directions on identical inputs: two conflicting objectives for
multi-objective preference optimisation.
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

#: Scoring rules of the tiny datasets: the order the chosen response lists the words in.
TINY_RULES: tuple[str, ...] = ("sorted", "reversed")


def _check_rule(rule: str) -> None:
    if rule not in TINY_RULES:
        raise ValueError(f"rule must be one of {TINY_RULES}, got {rule!r}")


def _target(words: list[str], rule: str) -> list[str]:
    return sorted(words, reverse=rule == "reversed")


def _prompt_words(prompt: str) -> list[str]:
    words = prompt.split()
    if words and words[0] == PROMPT_PREFIX:
        words = words[1:]
    return words


def tiny_preference_score(prompt: str, response: str, *, rule: str = "sorted") -> float:
    """Ground-truth reward in ``[0, 1]``: share of positions matching the rule's order.

    1 exactly for the chosen response of :func:`make_tiny_preference_dataset` with
    the same ``rule``, < 1 for any other order; extra or missing words count as
    mismatches.

    Args:
        prompt: ``"sort: w1 w2 …"``.
        response: space-separated words.
        rule: ``"sorted"`` (alphabetical) or ``"reversed"`` (reverse alphabetical).
    """
    _check_rule(rule)
    target = _target(_prompt_words(prompt), rule)
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
    rule: str = "sorted",
) -> Path:
    """Writes ``num_rows`` sorting-preference pairs as JSONL and returns the path.

    The prompts and the random rejected orders depend on ``seed`` only, not on
    ``rule``: two rules with one seed label the same pairs of prompt and random
    order (a random order that happens to equal the rule's target is replaced by
    the other rule's target), so their preferences conflict on identical inputs.

    Args:
        path: output file (parent directories are created).
        num_rows: number of rows.
        seed: the rows are a deterministic function of the seed.
        num_words: distinct words per prompt (2 … 16).
        conversational: write ``prompt``/``chosen``/``rejected`` as chat
            message lists instead of plain strings.
        rule: the chosen order: ``"sorted"`` (alphabetical) or ``"reversed"``
            (reverse alphabetical); see :data:`TINY_RULES`.

    Returns:
        ``Path(path)``.
    """
    if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 1:
        raise ValueError(f"num_rows must be a positive integer, got {num_rows!r}")
    if not 2 <= num_words <= len(TINY_WORDS):
        raise ValueError(f"num_words must be in [2, {len(TINY_WORDS)}], got {num_words}")
    _check_rule(rule)
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(num_rows):
            words = [TINY_WORDS[i] for i in rng.choice(len(TINY_WORDS), num_words, replace=False)]
            # The draws depend on the sorted order only, so every rule consumes the same
            # random numbers (and the "sorted" rows are those of earlier versions).
            in_order = sorted(words)
            rejected = in_order
            while rejected == in_order:
                rejected = [words[i] for i in rng.permutation(num_words)]
            chosen = _target(words, rule)
            if rejected == chosen:  # only for rule != "sorted": the other rule's target
                rejected = in_order
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


__all__ = ["TINY_RULES", "TINY_WORDS", "make_tiny_preference_dataset", "tiny_preference_score"]
