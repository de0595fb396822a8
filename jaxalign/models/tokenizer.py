"""Tokenisers: HF ``AutoTokenizer`` from a local directory, and a tiny offline BPE one.

:func:`build_tiny_tokenizer` trains a byte-level BPE tokenizer on a small built-in
corpus with the ``tokenizers`` library and saves it as an ordinary HF tokenizer
directory (``tokenizer.json`` + ``tokenizer_config.json`` with pad/EOS tokens and a
chat template), so tests, examples and default jobs get a real tokenizer without any
download. :func:`load_tokenizer` never touches the network (``local_files_only``) and
never runs remote code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# Messages are "<|role|>content<|endoftext|>"; a generation prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|endoftext|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

_CORPUS = (
    "The policy is trained to prefer responses that a reward model scores highly.",
    "A preference game asks which of two answers a judge would choose.",
    "The Nash equilibrium of a symmetric game is a policy that no other policy beats.",
    "Mirror descent updates a distribution by exponentiating its payoff.",
    "Optimistic updates use the last gradient as a guess of the next one.",
    "The KL divergence to the reference policy keeps the model close to where it started.",
    "Best-of-N sampling draws N responses and keeps the one with the largest reward.",
    "Please answer the question briefly and politely.",
    "What is the capital of France? The capital of France is Paris.",
    "Count from one to ten: one two three four five six seven eight nine ten.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 42 100 2024.",
    "The quick brown fox jumps over the lazy dog.",
    "User: hello! Assistant: hi, how can I help you today?",
    "Write a short poem about the sea, the sky and the wind.",
    "Gradients from two objectives can conflict; a common descent direction helps both.",
    "Tokens, logits, log-probabilities, rewards, and a temperature of one.",
)


def build_tiny_tokenizer(
    directory: str | os.PathLike,
    *,
    vocab_size: int = 384,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Trains a byte-level BPE tokenizer offline and saves it as an HF tokenizer directory.

    Byte-level means every string is encodable (no unknown token). Special tokens:
    ``<|pad|>`` (id 0), ``<|endoftext|>`` (id 1, EOS) and the chat role markers.

    Args:
      directory: where to save (created if needed).
      vocab_size: target vocabulary size (≥ 256 bytes + specials; the corpus may yield fewer).
      corpus: training texts (default: a small built-in corpus).

    Returns:
      ``directory`` as a ``Path``; ``load_tokenizer(directory)`` loads it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD_TOKEN, EOS_TOKEN, *ROLE_TOKENS]
    minimum = 256 + len(specials)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size must be >= {minimum} (bytes + special tokens), got {vocab_size}"
        )
    texts = list(_CORPUS if corpus is None else corpus)
    if not texts:
        raise ValueError("corpus is empty; expected at least one text")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
    )
    wrapped.chat_template = CHAT_TEMPLATE
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(directory))
    return directory


def load_tokenizer(path: str | os.PathLike):
    """``transformers.AutoTokenizer`` from a local directory: no download, no remote code.

    A tokenizer without a pad token gets its EOS token as pad (needed for batching).
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"tokenizer path {str(path)!r} is not a local directory")
    tokenizer = AutoTokenizer.from_pretrained(
        str(path), local_files_only=True, trust_remote_code=False
    )
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def chat_token_ids(
    tokenizer, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of a conversation rendered with the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("tokenizer has no chat_template; encode plain text instead")
    ids = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=add_generation_prompt, tokenize=True
    )
    if isinstance(ids, Mapping) or hasattr(ids, "keys"):  # BatchEncoding in newer transformers
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def pad_batch(
    sequences: Sequence[Sequence[int]], *, pad_id: int, side: str = "left"
) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, attention_mask) int32 arrays of shape (batch, longest), padded on ``side``."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pad_batch needs at least one sequence and no empty sequence")
    length = max(len(s) for s in sequences)
    tokens = np.full((len(sequences), length), pad_id, np.int32)
    mask = np.zeros((len(sequences), length), np.int32)
    for i, seq in enumerate(sequences):
        cols = slice(length - len(seq), length) if side == "left" else slice(0, len(seq))
        tokens[i, cols] = np.asarray(seq, np.int32)
        mask[i, cols] = 1
    return tokens, mask


def encode_batch(
    tokenizer, texts: Sequence[str], *, side: str = "left"
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenises ``texts`` (no special tokens added) and pads them with :func:`pad_batch`."""
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    return pad_batch(ids, pad_id=int(tokenizer.pad_token_id), side=side)
