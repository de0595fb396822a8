"""Tiny real Hugging Face tokenizers built on the fly (no downloads)."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from jaxalign.data import TINY_WORDS

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)

_CORPUS = [
    "sort: " + " ".join(TINY_WORDS),
    "user: assistant: system: hello world, the cat sat on the mat.",
    "What is two plus two? It is four. The sky is blue and the grass is green.",
]


def build_test_tokenizer(chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences (any text encodes)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    if chat_template is not None:
        hf.chat_template = chat_template
    return hf


@pytest.fixture(scope="session")
def tokenizer():
    return build_test_tokenizer()


@pytest.fixture(scope="session")
def chat_tokenizer():
    return build_test_tokenizer(CHAT_TEMPLATE)
