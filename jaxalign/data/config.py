"""Configuration of a preference dataset and its batches."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where preference data lives and how it becomes fixed-shape batches.

    Sequences are ``[prompt][response][padding]`` rows of length ``max_length``
    (or a bucket length); the prompt keeps its *end* when longer than
    ``max_prompt_length`` and the response is cut to what is left.
    """

    path: str = ""  # JSONL/Parquet file, or a directory of them (sorted by name)
    format: Literal["auto", "jsonl", "parquet"] = "auto"  # auto: by file suffix
    batch_size: int = 8  # GLOBAL batch size (all processes together)
    max_length: int = 256  # tokens per sequence: prompt + response (+ padding)
    max_prompt_length: int = 128  # prompt tokens kept (the last ones); < max_length
    padding: Literal["max_length", "bucket"] = "max_length"  # static shapes for jit
    bucket_sizes: tuple[int, ...] = ()  # with padding=bucket; () = powers of 2 ≤ max_length
    shuffle: bool = True  # reshuffle every epoch (permutation seeded by (seed, epoch))
    seed: int = 0  # shuffling seed
    drop_last: bool = True  # drop the last partial batch; else pad it with masked rows
    skip_malformed: bool = False  # skip and count malformed rows instead of raising
    use_chat_template: bool = True  # for message rows, if the tokenizer has a template
    add_eos: bool = True  # append EOS to plain-text responses
    num_epochs: int | None = None  # stop after this many epochs; None = cycle forever
    # Pack the 2B sequences of a batch end to end into rows of max_length tokens (no compute
    # on padding; attention and positions reset per sequence); see jaxalign.data.packing.
    packing: bool = False
    # Tokens per packed row (None: max_length); wider rows fit several sequences of a
    # max_length batch, so less of each row is padding.
    packing_length: int | None = None
    # With packing: each pair's prompt computed once for both responses (one segment per
    # pair, the responses in two branches); same losses, fewer tokens for long prompts.
    share_prompt: bool = False

    def __post_init__(self):
        for name in ("batch_size", "max_length", "max_prompt_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"max_prompt_length={self.max_prompt_length} must be < max_length="
                f"{self.max_length} so every response keeps at least one token"
            )
        if self.format not in ("auto", "jsonl", "parquet"):
            raise ValueError(f"format must be 'auto', 'jsonl' or 'parquet', got {self.format!r}")
        if self.padding not in ("max_length", "bucket"):
            raise ValueError(f"padding must be 'max_length' or 'bucket', got {self.padding!r}")
        buckets = tuple(self.bucket_sizes)
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in buckets):
            raise ValueError(f"bucket_sizes must be positive integers, got {list(buckets)}")
        if buckets and (list(buckets) != sorted(set(buckets)) or buckets[-1] != self.max_length):
            raise ValueError(
                f"bucket_sizes must be strictly increasing and end at max_length="
                f"{self.max_length}, got {list(buckets)}"
            )
        if self.num_epochs is not None and (
            isinstance(self.num_epochs, bool) or self.num_epochs < 1
        ):
            raise ValueError(
                f"num_epochs must be a positive integer or None, got {self.num_epochs}"
            )
        object.__setattr__(self, "bucket_sizes", buckets)
        if self.packing_length is not None and (
            isinstance(self.packing_length, bool)
            or not isinstance(self.packing_length, int)
            or self.packing_length < self.max_length
        ):
            raise ValueError(
                f"packing_length must be an integer >= max_length={self.max_length} (or None), "
                f"got {self.packing_length!r}"
            )
        if self.share_prompt and not self.packing:
            raise ValueError("share_prompt=True lays out packed rows; it needs packing=True")
        if self.packing and self.padding != "max_length":
            raise ValueError(
                "packing=True fills rows of max_length tokens; padding must be 'max_length' "
                f"(got {self.padding!r})"
            )

    def resolved_bucket_sizes(self) -> tuple[int, ...]:
        """Allowed sequence lengths: ``(max_length,)`` or the buckets (default powers of 2)."""
        if self.padding == "max_length":
            return (self.max_length,)
        if self.bucket_sizes:
            return self.bucket_sizes
        sizes = []
        size = 16
        while size < self.max_length:
            sizes.append(size)
            size *= 2
        return (*sizes, self.max_length)


__all__ = ["DataConfig"]
