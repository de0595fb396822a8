"""Tokenising preference pairs with a Hugging Face tokenizer, with truncation.

Layout of one sequence: ``prompt_ids ++ response_ids``. The prompt is shared
by the chosen and the rejected sequence.

* Conversations, tokenizer with a chat template: the prompt is the template
  applied to the prompt messages with the generation prompt; the response is
  the remainder of the template applied to prompt + response messages (so it
  carries the template's end-of-turn tokens). Both texts are tokenised without
  extra special tokens because the template already holds them.
* Otherwise: the prompt is tokenised with the tokenizer's special tokens (BOS
  where it adds one), the response without, plus EOS (``add_eos``).
  Conversations without a template are rendered as ``role: content`` lines.

Truncation: the prompt keeps its last ``max_prompt_length`` tokens (the end
of a prompt is what the response answers); the response keeps its first
``max_length - len(prompt)`` tokens.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jaxalign.data.preference import Message, PreferenceRow, Text


class TokenizedPair(NamedTuple):
    """Token ids of one preference pair after truncation (1-D int32 arrays)."""

    prompt: np.ndarray  # (prompt_len,)
    chosen: np.ndarray  # (chosen_len,) response tokens only
    rejected: np.ndarray  # (rejected_len,) response tokens only
    prompt_truncated: bool  # the prompt lost leading tokens
    response_truncated: bool  # chosen or rejected lost trailing tokens


def _ids(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _render_plain(messages: list[Message], *, generation_prompt: bool) -> str:
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if generation_prompt else "")


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _eos(tokenizer: Any) -> list[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    return [] if eos is None else [int(eos)]


def _chat_prompt_text(tokenizer: Any, prompt: list[Message]) -> str:
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def tokenize_prompt(tokenizer: Any, prompt: Text, *, use_chat_template: bool = True) -> list[int]:
    """Token ids of a prompt exactly as :func:`tokenize_preference_row` renders it (untruncated).

    A plain string is tokenised with the tokenizer's special tokens (BOS where it
    adds one). A conversation is the chat template with the generation prompt
    (no extra special tokens) when the tokenizer has a template and
    ``use_chat_template``, else ``role: content`` lines followed by
    ``assistant: ``, tokenised with special tokens.
    """
    if isinstance(prompt, str):
        return _ids(tokenizer, prompt, special=True)
    if use_chat_template and _has_chat_template(tokenizer):
        return _ids(tokenizer, _chat_prompt_text(tokenizer, prompt), special=False)
    return _ids(tokenizer, _render_plain(prompt, generation_prompt=True), special=True)


def _tokenize_conversation(
    tokenizer: Any,
    prompt: list[Message],
    responses: tuple[list[Message], ...],
    *,
    use_chat_template: bool,
    add_eos: bool,
) -> tuple[list[int], list[list[int]]]:
    prompt_ids = tokenize_prompt(tokenizer, prompt, use_chat_template=use_chat_template)
    if use_chat_template and _has_chat_template(tokenizer):
        prompt_text = _chat_prompt_text(tokenizer, prompt)
        outs = []
        for response in responses:
            full = tokenizer.apply_chat_template(prompt + response, tokenize=False)
            if full.startswith(prompt_text):
                outs.append(_ids(tokenizer, full[len(prompt_text) :], special=False))
            else:
                # Templates that rewrite earlier turns (e.g. strip reasoning): fall back to
                # the response contents followed by EOS.
                text = "".join(m["content"] for m in response)
                outs.append(_ids(tokenizer, text, special=False) + _eos(tokenizer))
        return prompt_ids, outs
    outs = []
    for response in responses:
        # The first response message follows the "assistant: " generation prompt.
        text = response[0]["content"] + (
            "\n" + _render_plain(response[1:], generation_prompt=False) if response[1:] else ""
        )
        outs.append(_ids(tokenizer, text, special=False) + (_eos(tokenizer) if add_eos else []))
    return prompt_ids, outs


def tokenize_preference_row(
    tokenizer: Any,
    row: PreferenceRow,
    *,
    max_length: int,
    max_prompt_length: int,
    use_chat_template: bool = True,
    add_eos: bool = True,
) -> TokenizedPair:
    """Tokenises and truncates one :class:`PreferenceRow`.

    Args:
        tokenizer: a Hugging Face tokenizer (``transformers`` fast or slow).
        row: the normalised row.
        max_length: maximum prompt + response tokens.
        max_prompt_length: maximum prompt tokens (the last ones are kept);
            must be < ``max_length``.
        use_chat_template: use the tokenizer's chat template for conversations.
        add_eos: append EOS to responses not produced by a chat template.

    Returns:
        A :class:`TokenizedPair` with ``len(prompt) + len(response) <= max_length``.
    """
    if max_prompt_length >= max_length:
        raise ValueError(f"max_prompt_length={max_prompt_length} must be < max_length={max_length}")
    if row.conversational:
        prompt_ids, (chosen_ids, rejected_ids) = _tokenize_conversation(
            tokenizer,
            row.prompt,
            (row.chosen, row.rejected),
            use_chat_template=use_chat_template,
            add_eos=add_eos,
        )
    else:
        prompt_ids = tokenize_prompt(tokenizer, row.prompt)
        eos = _eos(tokenizer) if add_eos else []
        chosen_ids = _ids(tokenizer, row.chosen, special=False) + eos
        rejected_ids = _ids(tokenizer, row.rejected, special=False) + eos
    prompt_truncated = len(prompt_ids) > max_prompt_length
    if prompt_truncated:
        prompt_ids = prompt_ids[len(prompt_ids) - max_prompt_length :]
    budget = max_length - len(prompt_ids)
    response_truncated = len(chosen_ids) > budget or len(rejected_ids) > budget
    as_array = lambda ids: np.asarray(ids, dtype=np.int32).reshape(-1)
    return TokenizedPair(
        prompt=as_array(prompt_ids),
        chosen=as_array(chosen_ids[:budget]),
        rejected=as_array(rejected_ids[:budget]),
        prompt_truncated=prompt_truncated,
        response_truncated=response_truncated,
    )


def render_text(text: Text) -> str:
    """A readable one-string rendering of a prompt or response (for logs)."""
    if isinstance(text, str):
        return text
    return _render_plain(text, generation_prompt=False)


__all__ = ["TokenizedPair", "render_text", "tokenize_preference_row", "tokenize_prompt"]
