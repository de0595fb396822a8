"""Reward and preference models on the shared transformer trunk.

* :class:`RewardModel` — a scalar (or ``num_labels``) head read at the last real
  token, exactly as HF ``*ForSequenceClassification``; loads and saves HF ``score.weight``.
  Used as a Bradley–Terry oracle: P(y ≻ y') = σ(r(x, y) − r(x, y')).
* :class:`PreferenceModel` — a general (not necessarily transitive) pairwise
  preference model. Each sequence gets a scalar score r and a 2k-dim embedding v;

      s(y, y') = r(y) − r(y') + Σ_j (v_{2j}(y) v_{2j+1}(y') − v_{2j+1}(y) v_{2j}(y')),
      P(y ≻ y' | x) = σ(s(y, y')).

  The bilinear form is skew-symmetric (block-diagonal rotation generator), so for given
  features s is antisymmetric term by term: s(y, y') = −s(y', y) holds exactly in
  floating point and P(y ≻ y') + P(y' ≻ y) = 1 up to one rounding of σ. Both sides
  share one trunk pass (batch [y; y']) so their features are computed identically.
  With k ≥ 1 the model can express cyclic (rock-paper-scissors) preferences that no
  reward model can. ``save_pretrained`` writes it (rank recorded in ``config.json``);
  :func:`preference_model_from_pretrained` reads it back.

References:
  Zhang, Y. et al. (2024). Beyond Bradley-Terry Models: A General Preference Model for
  Language Model Alignment (arXiv:2410.02197) — skew-symmetric preference embeddings.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from jaxalign.models.config import ModelConfig
from jaxalign.models.hf import load_pretrained, read_hf_config
from jaxalign.models.layers import Dense, draw_normal_params
from jaxalign.models.sharding import LogicalRules
from jaxalign.models.transformer import Constructible, Transformer, default_attention_mask


def last_token_index(attention_mask: Int[Array, "b l"]) -> Int[Array, " b"]:
    """Index of the last real token of each row (rightmost attention_mask == 1)."""
    mask = jnp.asarray(attention_mask).astype(bool)
    length = mask.shape[-1]
    return (length - 1 - jnp.argmax(mask[:, ::-1], axis=-1)).astype(jnp.int32)


def _pool(hidden: Float[Array, "b l e"], attention_mask) -> Float[Array, "b e"]:
    idx = last_token_index(attention_mask)
    return jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0]


class RewardModel(Constructible):
    """Trunk + linear head (``score``, no bias) read at the last real token."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, num_labels: int = 1):
        self.config = config
        self.num_labels = num_labels
        self.model = Transformer(config, rngs=None)
        self.score = Dense((config.hidden_size, num_labels), ("embed", "labels"), config)
        draw_normal_params(self, rngs.params(), config.initializer_range)

    def __call__(
        self, tokens: Int[Array, "b l"], *, attention_mask: Int[Array, "b l"] | None = None
    ) -> Float[Array, "b labels"]:
        """Head outputs at each row's last real token, float32 (batch, num_labels)."""
        tokens = jnp.asarray(tokens)
        mask = default_attention_mask(tokens, attention_mask)
        hidden = self.model.encode(tokens, mask)
        return self.score(_pool(hidden, mask)).astype(jnp.float32)

    def hf_config(self) -> dict:
        return self.config.to_hf_config(sequence_classification=True, num_labels=self.num_labels)


def rewards(
    model: RewardModel, tokens: Int[Array, "b l"], attention_mask: Int[Array, "b l"] | None = None
) -> Float[Array, " b"]:
    """Scalar reward r(x, y) of each (prompt + response) sequence."""
    if model.num_labels != 1:
        raise ValueError(f"rewards needs a scalar head (num_labels=1), got {model.num_labels}")
    return model(tokens, attention_mask=attention_mask)[:, 0]


def bradley_terry_probability(
    model: RewardModel,
    tokens_a: Int[Array, "b l"],
    tokens_b: Int[Array, "b l"],
    mask_a: Int[Array, "b l"] | None = None,
    mask_b: Int[Array, "b l"] | None = None,
) -> Float[Array, " b"]:
    """P(a ≻ b) = σ(r(a) − r(b)) under a reward model."""
    return jax.nn.sigmoid(rewards(model, tokens_a, mask_a) - rewards(model, tokens_b, mask_b))


def reward_model_from_pretrained(
    path: str | os.PathLike,
    *,
    dtype=None,
    param_dtype=None,
    mesh: jax.sharding.Mesh | None = None,
    rules: LogicalRules | None = None,
    key: jax.Array | None = None,
    config_overrides: dict | None = None,
) -> RewardModel:
    """Loads an HF ``*ForSequenceClassification`` directory as a :class:`RewardModel`.

    With ``key``, a ``*ForCausalLM`` checkpoint is accepted too: the trunk is loaded, the
    LM head ignored, and a fresh ``score`` head initialised from ``key`` (how a reward model
    to be trained starts from a policy). ``config_overrides``: the "how to compute" fields
    of :class:`ModelConfig` a checkpoint does not fix (remat, attention, …).
    """
    config = read_hf_config(path)
    num_labels = int(config.get("num_labels", len(config.get("id2label") or {}) or 1))
    return load_pretrained(
        RewardModel,
        path,
        dtype=dtype,
        param_dtype=param_dtype,
        mesh=mesh,
        rules=rules,
        fresh=(lambda name: name.startswith("score.")) if key is not None else None,
        key=key,
        ignore=lambda name: key is not None and name == "lm_head.weight",
        config_overrides=config_overrides,
        num_labels=num_labels,
    )


class PreferenceModel(Constructible):
    """General pairwise preference model P(y ≻ y' | x) with an antisymmetric logit."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, rank: int = 2):
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        self.config = config
        self.rank = rank
        self.model = Transformer(config, rngs=None)
        self.reward = Dense((config.hidden_size, 1), ("embed", "labels"), config)
        self.embedding = (
            Dense((config.hidden_size, 2 * rank), ("embed", "labels"), config) if rank else None
        )
        draw_normal_params(self, rngs.params(), config.initializer_range)

    def features(
        self, tokens: Int[Array, "b l"], attention_mask: Int[Array, "b l"] | None = None
    ) -> tuple[Float[Array, " b"], Float[Array, "b k2"]]:
        """(scalar score r, preference embedding v) at each row's last real token."""
        tokens = jnp.asarray(tokens)
        mask = default_attention_mask(tokens, attention_mask)
        pooled = _pool(self.model.encode(tokens, mask), mask)
        r = self.reward(pooled).astype(jnp.float32)[:, 0]
        if self.embedding is None:
            return r, jnp.zeros((r.shape[0], 0), jnp.float32)
        return r, self.embedding(pooled).astype(jnp.float32)

    def logit(
        self,
        tokens_a: Int[Array, "b l"],
        tokens_b: Int[Array, "b l"],
        mask_a: Int[Array, "b l"] | None = None,
        mask_b: Int[Array, "b l"] | None = None,
    ) -> Float[Array, " b"]:
        """s(a, b); antisymmetric: logit(a, b) = -logit(b, a) (exactly, for equal features).

        Both sides go through the trunk as one batch [a; b], so a sequence's features do
        not depend on which side it is on (and logit(a, a) = 0 exactly).
        """
        tokens_a, tokens_b = jnp.asarray(tokens_a), jnp.asarray(tokens_b)
        if tokens_a.shape != tokens_b.shape:
            raise ValueError(
                f"tokens_a.shape={tokens_a.shape} must equal tokens_b.shape={tokens_b.shape} "
                "(pad both sides to one length)"
            )
        mask_a = default_attention_mask(tokens_a, mask_a)
        mask_b = default_attention_mask(tokens_b, mask_b)
        r, v = self.features(
            jnp.concatenate([tokens_a, tokens_b]), jnp.concatenate([mask_a, mask_b])
        )
        n = tokens_a.shape[0]
        return preference_logit(r[:n], v[:n], r[n:], v[n:])

    def __call__(
        self,
        tokens_a: Int[Array, "b l"],
        tokens_b: Int[Array, "b l"],
        mask_a: Int[Array, "b l"] | None = None,
        mask_b: Int[Array, "b l"] | None = None,
    ) -> Float[Array, " b"]:
        """P(a ≻ b | x) for each row."""
        return jax.nn.sigmoid(self.logit(tokens_a, tokens_b, mask_a, mask_b))

    def hf_config(self) -> dict:
        """``config.json`` for :func:`~jaxalign.models.save_pretrained`.

        The trunk's HF config, with ``architectures = ["PreferenceModel"]`` (no
        transformers class loads this head) and ``preference_model = {"rank": k}``, which
        :func:`preference_model_from_pretrained` reads back. The heads are stored as
        ``reward.weight`` ``[1, hidden]`` and ``embedding.weight`` ``[2k, hidden]`` (absent
        when k = 0), next to the trunk's ``model.*`` tensors.
        """
        out = self.config.to_hf_config()
        out["architectures"] = [PREFERENCE_ARCHITECTURE]
        out[PREFERENCE_CONFIG_KEY] = {"rank": self.rank}
        return out


# config.json entries written by PreferenceModel.hf_config.
PREFERENCE_ARCHITECTURE = "PreferenceModel"
PREFERENCE_CONFIG_KEY = "preference_model"


def preference_model_from_pretrained(
    path: str | os.PathLike,
    *,
    rank: int | None = None,
    dtype=None,
    param_dtype=None,
    mesh: jax.sharding.Mesh | None = None,
    rules: LogicalRules | None = None,
    key: jax.Array | None = None,
    config_overrides: dict | None = None,
) -> PreferenceModel:
    """Loads a directory written by ``save_pretrained(preference_model, path)``.

    The rank k of the skew-symmetric embedding is read from ``config.json``
    (``preference_model.rank``, see :meth:`PreferenceModel.hf_config`). With ``key``
    (and ``rank``), any other local HF directory of a supported trunk is accepted too —
    a ``*ForCausalLM`` or ``*ForSequenceClassification`` checkpoint: the trunk is
    loaded, its LM head / ``score`` head ignored, and fresh ``reward`` / ``embedding``
    heads initialised from ``key`` (a preference model to be trained).

    Args:
      path: local directory with ``config.json`` and safetensors (nothing is downloaded).
      rank: k ≥ 0; must match the saved rank when the directory records one, and is
        required when it does not.
      dtype, param_dtype, mesh, rules: as in :func:`~jaxalign.models.from_pretrained`.
      key: initialises the heads that are absent from the checkpoint.
      config_overrides: the "how to compute" fields of :class:`ModelConfig` a checkpoint
        does not fix (remat, attention, …), as in :func:`reward_model_from_pretrained`.

    Raises:
      ValueError: rank missing or inconsistent, heads absent without ``key``, or any
        mismatch between the checkpoint and the model (see ``from_pretrained``).
    """
    config = read_hf_config(path)
    saved = config.get(PREFERENCE_CONFIG_KEY)
    if saved is not None:
        if not isinstance(saved, dict) or not isinstance(saved.get("rank"), int):
            raise ValueError(
                f"{path}/config.json has {PREFERENCE_CONFIG_KEY}={saved!r}; expected "
                '{"rank": <int >= 0>}'
            )
        if rank is not None and rank != saved["rank"]:
            raise ValueError(
                f"rank={rank} does not match the saved preference model's rank "
                f"{saved['rank']} in {path}/config.json"
            )
        rank = saved["rank"]
    elif rank is None:
        raise ValueError(
            f"{path}/config.json records no {PREFERENCE_CONFIG_KEY!r} section (not saved "
            "from a PreferenceModel); pass rank= and key= to put fresh heads on this trunk"
        )
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    fresh_heads = key is not None
    return load_pretrained(
        PreferenceModel,
        path,
        dtype=dtype,
        param_dtype=param_dtype,
        mesh=mesh,
        rules=rules,
        fresh=(lambda name: name.startswith(("reward.", "embedding."))) if fresh_heads else None,
        key=key,
        ignore=lambda name: fresh_heads and name in ("lm_head.weight", "score.weight"),
        config_overrides=config_overrides,
        rank=rank,
    )


def _skew(x: jax.Array, y: jax.Array) -> jax.Array:
    return x[:, 0::2] * y[:, 1::2] - x[:, 1::2] * y[:, 0::2]


def preference_logit(
    r_a: Float[Array, " b"],
    v_a: Float[Array, "b k2"],
    r_b: Float[Array, " b"],
    v_b: Float[Array, "b k2"],
) -> Float[Array, " b"]:
    """r_a − r_b + Σ_j (v_a[2j] v_b[2j+1] − v_a[2j+1] v_b[2j]); exactly antisymmetric."""
    # Written as ½(c(a, b) − c(b, a)) rather than c(a, b): XLA fuses x·y − z·w into a
    # fused multiply-add, which rounds c(a, b) and c(b, a) differently; the explicit
    # difference is antisymmetric however each c is rounded (and 0 when a = b).
    half = jnp.asarray(0.5, v_a.dtype)
    cross = half * (_skew(v_a, v_b) - _skew(v_b, v_a))
    return (r_a - r_b) + jnp.sum(cross, axis=-1)
