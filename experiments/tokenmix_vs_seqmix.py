"""Token-level vs sequence-level geometric mixtures of Nash-MD, exactly.

Nash-MD's theory plays against the sequence-level mixture π^μ ∝ π^{1−α} π_ref^α; its LLM
form (Nash-MD-PG) samples from the token-level mixture log_softmax(α ref_logits +
(1 − α) policy_logits) at every step — a different distribution once responses have
more than one token, because per-token normalisation does not commute with the product
over tokens. On the enumerable testbed both are exactly computable for real transformers
(random inits): this study reports their total-variation distance and KLs against the
mixture weight α and the response length.

    jaxalign reproduce tokenmix-vs-seqmix --out results/tokenmix
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import plotting
from jaxalign.experiment import Experiment, Result
from jaxalign.kl import kl_divergence
from jaxalign.losses.pairwise import sequence_level_mixture, token_level_mixture
from jaxalign.models import CausalLM, ModelConfig, token_logprobs
from jaxalign.testbed import Testbed


@dataclasses.dataclass(frozen=True)
class Config:
    alphabet_size: int = 4  # tokens (= model vocabulary)
    lengths: tuple[int, ...] = (1, 2, 3, 4)  # response lengths L
    mixes: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)  # α
    num_pairs: int = 2  # (policy, reference) pairs of random models
    init_scale: float = 0.6  # weight std of the random models
    hidden_size: int = 32  # model width
    num_layers: int = 2  # model depth

    def __post_init__(self):
        if any(not 0 <= a <= 1 for a in self.mixes):
            raise ValueError(f"mixes must lie in [0, 1], got {self.mixes}")
        if self.num_pairs < 1 or self.alphabet_size < 2 or min(self.lengths) < 1:
            raise ValueError("need num_pairs >= 1, alphabet_size >= 2 and lengths >= 1")


def _mixtures(policy, ref, testbed: Testbed, mixes):
    """Exact (sequence-level, token-level) mixture log-probs over all responses, per α."""
    tokens, mask = testbed.sequences(testbed.responses())
    pol_logits, ref_logits = policy(tokens), ref(tokens)
    resp = mask[:, 1:].astype(bool)  # position t predicts token t+1
    target = tokens[:, 1:]

    def seq_logp(logits):
        per_token = token_logprobs(logits, tokens)
        return jnp.sum(jnp.where(mask.astype(bool), per_token, 0.0), axis=1)

    lp_pol, lp_ref = seq_logp(pol_logits), seq_logp(ref_logits)

    def one(alpha):
        seq = sequence_level_mixture(lp_pol, lp_ref, mix=alpha)
        mixed = token_level_mixture(pol_logits[:, :-1], ref_logits[:, :-1], mix=alpha)
        tok_lp = jnp.take_along_axis(mixed, target[..., None], axis=-1)[..., 0]
        tok = jnp.sum(jnp.where(resp, tok_lp, 0.0), axis=1)
        return seq, tok

    return jax.vmap(one)(jnp.asarray(mixes, jnp.float32))


def run(config: Config, track) -> Result:
    rows = []
    tv = np.zeros((len(config.lengths), config.num_pairs, len(config.mixes)))
    scatter = None
    for li, length in enumerate(track(config.lengths, "response lengths")):
        testbed = Testbed(config.alphabet_size, length)
        model_cfg = ModelConfig(
            vocab_size=config.alphabet_size,
            hidden_size=config.hidden_size,
            intermediate_size=2 * config.hidden_size,
            num_layers=config.num_layers,
            num_heads=2,
            num_kv_heads=1,
            head_dim=config.hidden_size // 2,
            initializer_range=config.init_scale,
        )
        for pair in range(config.num_pairs):
            keys = jax.random.split(jax.random.key(1000 * pair + 7), 2)
            policy = CausalLM.create(model_cfg, key=keys[0])
            ref = CausalLM.create(model_cfg, key=keys[1])
            seq, tok = _mixtures(policy, ref, testbed, config.mixes)
            for mi, alpha in enumerate(config.mixes):
                d_tv = 0.5 * float(jnp.sum(jnp.abs(jnp.exp(seq[mi]) - jnp.exp(tok[mi]))))
                tv[li, pair, mi] = d_tv
                rows.append(
                    {
                        "length": length,
                        "pair": pair,
                        "mix": alpha,
                        "tv": d_tv,
                        "kl_seq_tok": float(kl_divergence(seq[mi], tok[mi])),
                        "kl_tok_seq": float(kl_divergence(tok[mi], seq[mi])),
                    }
                )
            if li == len(config.lengths) - 1 and pair == 0:
                mid = int(np.argmin(np.abs(np.asarray(config.mixes) - 0.5)))
                scatter = (
                    np.exp(np.asarray(seq[mid])),
                    np.exp(np.asarray(tok[mid])),
                    config.mixes[mid],
                )

    fig, axes = plotting.figure(
        1,
        2,
        panel_size=(5.6, 4.2),
        suptitle="Nash-MD: token-level vs sequence-level geometric mixture (exact, enumerated)",
    )
    ax = axes[0]
    for li, length in enumerate(config.lengths):
        mean, lo, hi = tv[li].mean(0), tv[li].min(0), tv[li].max(0)
        (line,) = ax.plot(config.mixes, mean, "o-", label=f"$L = {length}$")
        plotting.band(ax, config.mixes, lo, hi, color=line.get_color())
    plotting.band_key(ax, f"min–max over {config.num_pairs} model pairs")
    ax.set_xlabel(r"mixture weight $\alpha$ on $\pi_{\mathrm{ref}}$")
    ax.set_ylabel("total variation distance (mean over model pairs)")
    ax.set_title("(a) TV(sequence-level, token-level mixture)")
    plotting.legend(ax)
    ax = axes[1]
    seq_p, tok_p, alpha = scatter
    ax.loglog(seq_p, tok_p, ".", ms=4, label="one response $y$")
    lim = [min(seq_p.min(), tok_p.min()), max(seq_p.max(), tok_p.max())]
    plotting.reference_line(ax, lim, lim, label="equal probabilities")
    ax.set_xlabel(r"sequence-level mixture $\pi^\mu(y)$")
    ax.set_ylabel("token-level mixture (Nash-MD-PG)")
    ax.set_title(rf"(b) per-response probabilities, $L = {config.lengths[-1]}$, $\alpha$ = {alpha}")
    ax.grid(True, which="both")
    plotting.legend(ax, loc="upper left")

    mean_tv = tv.mean(1)
    summary = {
        "max_tv_by_length": {str(L): float(mean_tv[i].max()) for i, L in enumerate(config.lengths)},
        "tv_at_endpoints": float(tv[:, :, [0, -1]].max()) if len(config.mixes) > 1 else None,
        "tv_length_1": float(tv[0].max()) if config.lengths[0] == 1 else None,
    }
    return Result(figure=fig, table=rows, summary=summary)


EXPERIMENT = Experiment(
    name="tokenmix-vs-seqmix",
    description="Nash-MD: exact gap between token-level and sequence-level geometric mixtures",
    config_cls=Config,
    run=run,
)


def main(argv=None) -> int:
    return EXPERIMENT.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
