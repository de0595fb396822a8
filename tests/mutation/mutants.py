"""Plausible bugs planted one at a time by ``mutate.py`` in the theory layer.

Each mutant replaces one snippet of ``kl``, ``games``, ``optim``, ``multiobjective`` or
``losses`` with a small, plausible mistake: a convention trap of ALGORITHMS.md (η vs 1/η,
a missing ½, ties, the sampling distribution), an off-by-one, a swapped argument, a flipped
sign. ``old`` must occur exactly ``count`` times in ``path``; every occurrence is replaced.
"""

from __future__ import annotations

from typing import NamedTuple


class Mutant(NamedTuple):
    id: str
    path: str
    old: str
    new: str
    why: str
    count: int = 1


KL = "jaxalign/kl/"
GAMES = "jaxalign/games/"
OPTIM = "jaxalign/optim/"
MO = "jaxalign/multiobjective/"
LOSSES = "jaxalign/losses/"

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ kl
    Mutant(
        "kl-tilt-beta-not-inverted",
        KL + "tilt.py",
        "return tilt_unchecked(log_base, reward, 1.0 / beta)",
        "return tilt_unchecked(log_base, reward, beta)",
        "tilt p·e^{βr} instead of p·e^{r/β}",
    ),
    Mutant(
        "kl-divergence-arguments-swapped",
        KL + "tilt.py",
        "    return kl_unchecked(log_p, log_q)\n",
        "    return kl_unchecked(log_q, log_p)\n",
        "kl_divergence(p, q) returns KL(q‖p)",
    ),
    Mutant(
        "kl-max-kl-first-argmax-only",
        KL + "tilt.py",
        "log_top = jax.nn.logsumexp(jnp.where(top, log_base, -jnp.inf))",
        "log_top = jnp.max(jnp.where(top, log_base, -jnp.inf))",
        "max_kl = -log p(one argmax) instead of -log p(argmax set) (ties ignored)",
    ),
    Mutant(
        "kl-budget-bisection-wrong-way",
        KL + "tilt.py",
        "        too_far = kl_at(mid) > budget",
        "        too_far = kl_at(mid) < budget",
        "budget bisection moves the bracket the wrong way",
    ),
    Mutant(
        "kl-budget-beta-is-lambda",
        KL + "tilt.py",
        "jnp.where((lam_norm > 0) & ~no_budget, safe_spread / lam_norm, jnp.inf)",
        "jnp.where((lam_norm > 0) & ~no_budget, lam_norm / safe_spread, jnp.inf)",
        "returns λ where β = 1/λ is documented",
    ),
    Mutant(
        "kl-not-binding-returns-base",
        KL + "tilt.py",
        "log_probs = jnp.where(binding, tilt, _argmax_restriction(log_base, reward))",
        "log_probs = jnp.where(binding, tilt, log_base)",
        "a non-binding budget returns p instead of the argmax restriction",
    ),
    Mutant(
        "kl-win-rate-ties-count-one",
        KL + "tilt.py",
        "return p @ (gt + 0.5 * eq) @ q",
        "return p @ (gt + eq) @ q",
        "win_rate credits ties with 1 instead of ½",
    ),
    Mutant(
        "kl-bon-win-rate-ties-zero",
        KL + "best_of_n.py",
        "beats = jnp.exp(log_lt) + 0.5 * jnp.exp(log_atom)",
        "beats = jnp.exp(log_lt) + 0.0 * jnp.exp(log_atom)",
        "best-of-N win rate credits ties with 0 instead of ½ (survived the first review)",
    ),
    Mutant(
        "kl-bon-win-rate-ties-one",
        KL + "best_of_n.py",
        "beats = jnp.exp(log_lt) + 0.5 * jnp.exp(log_atom)",
        "beats = jnp.exp(log_lt) + 1.0 * jnp.exp(log_atom)",
        "best-of-N win rate credits ties with 1 instead of ½",
    ),
    Mutant(
        "kl-bon-ties-ignored",
        KL + "best_of_n.py",
        "new_group = jnp.concatenate([jnp.ones((1,), bool), r_s[1:] != r_s[:-1]])",
        "new_group = jnp.ones((k,), bool)",
        "every response its own tie group: ties broken by sort order, not uniformly",
    ),
    Mutant(
        "kl-bon-no-within-tie-split",
        KL + "best_of_n.py",
        "out = jnp.where(on, log_base - jnp.where(on, log_atom, 0) + log_max_law, -jnp.inf)",
        "out = jnp.where(on, log_max_law - jnp.log(jnp.sum(on)), -jnp.inf)",
        "tied mass split evenly between tied responses instead of in proportion to p",
    ),
    Mutant(
        "kl-bon-n-minus-one-draws",
        KL + "best_of_n.py",
        "log_max_law = n * log_cdf + _log1mexp(jnp.minimum(n * log_ratio, 0))",
        "log_max_law = (n - 1) * log_cdf + _log1mexp(jnp.minimum((n - 1) * log_ratio, 0))",
        "off-by-one in the number of draws",
    ),
    Mutant(
        "kl-bon-bound-loose-constant",
        KL + "best_of_n.py",
        "return jnp.log(n) - (n - 1) / n",
        "return jnp.log(n) - (n - 1) / (2 * n)",
        "KL bound log N − (N−1)/(2N): still a bound, no longer tight",
    ),
    Mutant(
        "kl-scaled-cumulant-wrong-base",
        KL + "asymptotics.py",
        "return _log_mgf(log_base, reward, lam + t) - _log_mgf(log_base, reward, lam)",
        "return _log_mgf(log_base, reward, lam + t) - _log_mgf(log_base, reward, t)",
        "scaled cumulant Λ(λ+t) − Λ(t) instead of Λ(λ+t) − Λ(λ)",
    ),
    Mutant(
        "kl-rate-function-sign",
        KL + "asymptotics.py",
        "return _legendre(log_base, reward, x) - lam * x + _log_mgf(log_base, reward, lam)",
        "return _legendre(log_base, reward, x) + lam * x - _log_mgf(log_base, reward, lam)",
        "rate function Λ*(x) + λx − Λ(λ) (signs of the tilt flipped)",
    ),
    Mutant(
        "kl-bon-limit-bisection-wrong-way",
        KL + "asymptotics.py",
        "        over = _legendre(log_base, reward, mid) > delta",
        "        over = _legendre(log_base, reward, mid) < delta",
        "x* bisection moves the wrong way",
    ),
    Mutant(
        "kl-sequence-law-one-token-short",
        KL + "asymptotics.py",
        "law, _ = jax.lax.scan(step, start, None, length=m)",
        "law, _ = jax.lax.scan(step, start, None, length=m - 1)",
        "the law of R convolves m − 1 tokens",
    ),
    # ------------------------------------------------------------------ games
    Mutant(
        "games-onpo-anchor-is-pi-t",
        GAMES + "solvers.py",
        "return state.opt_state.secondary - st * (state.log_policy - log_ref)",
        "return state.log_policy - st * (state.log_policy - log_ref)",
        "ONPO's pairwise anchor π_t instead of π'_t (survived the first review)",
    ),
    Mutant(
        "games-decaying-step-off-by-one",
        GAMES + "solvers.py",
        "(jnp.asarray(tau, dtype) * (c.astype(dtype) + 2))",
        "(jnp.asarray(tau, dtype) * (c.astype(dtype) + 1))",
        "2/(τ(t+1)) instead of 2/(τ(t+2)): first step has sτ = 2 (survived the first review)",
    ),
    Mutant(
        "games-inpo-anchor-weights-swapped",
        GAMES + "solvers.py",
        "        return (1 - st) * state.log_policy + st * log_ref\n",
        "        return st * state.log_policy + (1 - st) * log_ref\n",
        "INPO's anchor π_t^{sτ} π_ref^{1−sτ}",
    ),
    Mutant(
        "games-target-is-step-not-half",
        GAMES + "solvers.py",
        "return PairwiseTarget(anchor_fn(state, log_ref, st), s / 2, state.log_policy)",
        "return PairwiseTarget(anchor_fn(state, log_ref, st), s, state.log_policy)",
        "pairwise target s instead of s/2",
    ),
    Mutant(
        "games-kl-term-sign",
        GAMES + "solvers.py",
        "return u - jnp.asarray(tau, p.dtype) * (theta_self - log_ref)",
        "return u + jnp.asarray(tau, p.dtype) * (theta_self - log_ref)",
        "regularised payoff adds τ log(π/π_ref)",
    ),
    Mutant(
        "games-nash-md-plays-pi-t",
        GAMES + "solvers.py",
        "u = _regularised_payoff(p, theta_mu, theta, log_ref, tau)",
        "u = _regularised_payoff(p, theta, theta, log_ref, tau)",
        "Nash-MD's opponent is π_t, not the mixture",
    ),
    Mutant(
        "games-nash-md-mixture-swapped",
        GAMES + "solvers.py",
        "jax.nn.log_softmax((1 - st) * state.log_policy + st * log_ref)",
        "jax.nn.log_softmax((1 - st) * log_ref + st * state.log_policy)",
        "Nash-MD mixture π_t^{sτ} π_ref^{1−sτ}",
    ),
    Mutant(
        "games-egpo-correction-at-pi-t",
        GAMES + "solvers.py",
        "u_half = _regularised_payoff(p, half, theta, log_ref, tau)",
        "u_half = _regularised_payoff(p, theta, theta, log_ref, tau)",
        "EGPO's correction uses Pπ_t: one mirror-descent step",
    ),
    Mutant(
        "games-egpo-regulariser-at-half",
        GAMES + "solvers.py",
        "u_half = _regularised_payoff(p, half, theta, log_ref, tau)",
        "u_half = _regularised_payoff(p, half, half, log_ref, tau)",
        "EGPO's correction linearises the KL at π_{t+1/2} instead of π_t",
    ),
    Mutant(
        "games-mnpo-history-order",
        GAMES + "solvers.py",
        "history = jnp.concatenate([new[None, :], state.history[:-1]], axis=0)",
        "history = jnp.concatenate([state.history[1:], new[None, :]], axis=0)",
        "MNPO history stored oldest first: opponent weights apply to the wrong iterates",
    ),
    Mutant(
        "games-mnpo-payoff-unweighted",
        GAMES + "solvers.py",
        "u = lam @ (probs @ t.T) if t.ndim == 2 else contract_opponents(t, probs)",
        "u = jnp.mean(probs @ t.T, axis=0) if t.ndim == 2 else contract_opponents(t, probs)",
        "MNPO payoff ignores the opponent weights",
    ),
    Mutant(
        "games-mnpo-samples-pi-t",
        GAMES + "solvers.py",
        "sampling = jax.nn.logsumexp(opp + jnp.log(lam)[:, None], axis=0)",
        "sampling = state.log_policy",
        "MNPO pairs drawn from π_t instead of the opponents' mixture",
    ),
    Mutant(
        "games-mnpo-kl-at-pi-t",
        GAMES + "solvers.py",
        "grad = -(u - jnp.asarray(tau, dtype) * (anchor - log_ref))",
        "grad = -(u - jnp.asarray(tau, dtype) * (state.log_policy - log_ref))",
        "MNPO linearises the KL at π_t instead of at the anchor",
    ),
    Mutant(
        "games-run-geometric-average",
        GAMES + "solvers.py",
        "log_avg = jnp.logaddexp(\n"
        "            log_avg + jnp.log(tf / (tf + one)), state.log_policy - jnp.log(tf + one)\n"
        "        )",
        "log_avg = jax.nn.log_softmax(\n"
        "            log_avg * (tf / (tf + one)) + state.log_policy / (tf + one)\n"
        "        )",
        "run() averages logits (geometric mean) instead of probabilities",
    ),
    Mutant(
        "games-gap-uses-p-not-pt",
        GAMES + "gaps.py",
        "return jnp.max(p @ pi) - jnp.min(p.T @ pi)",
        "return jnp.max(p @ pi) - jnp.min(p @ pi)",
        "unregularised gap max(Pπ) − min(Pπ)",
    ),
    Mutant(
        "games-regularised-gap-one-kl",
        GAMES + "gaps.py",
        "+ two * tau * kl_divergence(log_pi, log_ref)",
        "+ tau * kl_divergence(log_pi, log_ref)",
        "regularised gap with one KL term instead of two",
    ),
    Mutant(
        "games-best-response-sign",
        GAMES + "gaps.py",
        "return jax.nn.log_softmax(log_ref + u / tau)",
        "return jax.nn.log_softmax(log_ref - u / tau)",
        "regularised best response minimises the win rate",
    ),
    Mutant(
        "games-one-sided-gap-min",
        GAMES + "gaps.py",
        "return jnp.max(payoff) - _dot_log(log_pi, payoff)",
        "return jnp.max(payoff) - jnp.min(payoff)",
        "MNPO's gap compares with the worst response, not with π",
    ),
    Mutant(
        "games-population-minimiser-no-two",
        GAMES + "population.py",
        "return jax.nn.log_softmax(anchor + jnp.asarray(2, p.dtype) * c * (p @ jnp.exp(mu)))",
        "return jax.nn.log_softmax(anchor + c * (p @ jnp.exp(mu)))",
        "closed-form minimiser a + cPμ (the lemma's factor 2 lost)",
    ),
    Mutant(
        "games-centred-loss-no-two",
        GAMES + "population.py",
        "resid = _log_ratio(theta, anchor) - two * c * (g[:, None] - g[None, :])",
        "resid = _log_ratio(theta, anchor) - c * (g[:, None] - g[None, :])",
        "centred form of the lemma without its factor 2",
    ),
    Mutant(
        "games-egpo-lr-code-mapping",
        GAMES + "population.py",
        "return step_size * tau * num_responses / 4",
        "return step_size * tau * num_responses / 2",
        "EGPO's repository mapping 2·lr/(βN) copied instead of re-derived",
    ),
    Mutant(
        "games-regularised-nash-br-transposed",
        GAMES + "equilibrium.py",
        "return jax.nn.log_softmax(log_ref + (p @ jnp.exp(theta)) / tau)",
        "return jax.nn.log_softmax(log_ref + (p.T @ jnp.exp(theta)) / tau)",
        "regularised equilibrium solver best-responds to Pᵀπ",
    ),
    Mutant(
        "games-lp-transposed",
        GAMES + "equilibrium.py",
        "a_ub = np.concatenate([p, -np.ones((k, 1))], axis=1)",
        "a_ub = np.concatenate([p.T, -np.ones((k, 1))], axis=1)",
        "LP constrains Pᵀπ ≤ v instead of Pπ ≤ v",
    ),
    # ------------------------------------------------------------------ optim
    Mutant(
        "optim-entropic-ascends",
        OPTIM + "mirror_maps.py",
        "return jax.nn.log_softmax(params - step * grad.astype(params.dtype), axis=-1)",
        "return jax.nn.log_softmax(params + step * grad.astype(params.dtype), axis=-1)",
        "entropic step ascends the loss",
    ),
    Mutant(
        "optim-simplex-projection-threshold",
        OPTIM + "mirror_maps.py",
        "theta = jnp.take_along_axis(css, rho - 1, axis=-1) / rho.astype(x.dtype)",
        "theta = jnp.take_along_axis(css, rho - 1, axis=-1) / (rho + 1).astype(x.dtype)",
        "simplex projection threshold off by one",
    ),
    Mutant(
        "optim-optimistic-secondary-from-params",
        OPTIM + "transforms.py",
        "secondary = _prox_tree(mm, state.secondary, updates, step)",
        "secondary = _prox_tree(mm, params, updates, step)",
        "optimistic step: x'_{t+1} from x_t instead of x'_t",
    ),
    Mutant(
        "optim-optimistic-played-from-old-secondary",
        OPTIM + "transforms.py",
        "new = _prox_tree(mm, secondary, updates, step)",
        "new = _prox_tree(mm, state.secondary, updates, step)",
        "optimistic step: x_{t+1} from x'_t instead of x'_{t+1}",
    ),
    Mutant(
        "optim-extragradient-anchor-swapped",
        OPTIM + "transforms.py",
        "anchor = jax.tree.map(lambda p, a: jnp.where(extrapolating, p, a), params, state.anchor)",
        "anchor = jax.tree.map(lambda p, a: jnp.where(extrapolating, a, p), params, state.anchor)",
        "extragradient corrects from x_{t+1/2} instead of x_t",
    ),
    Mutant(
        "optim-extragradient-counts-calls",
        OPTIM + "transforms.py",
        "count = jnp.where(extrapolating, state.count, optax.safe_int32_increment(state.count))",
        "count = optax.safe_int32_increment(state.count)",
        "extragradient's schedule advances on every call, not every iteration",
    ),
    # ------------------------------------------------------------------ multiobjective
    Mutant(
        "mo-zero-test-absolute-floor",
        MO + "_aggregators.py",
        "    floor = 64 * k * eps * jnp.square(jnp.abs(v) @ norms)\n",
        "    floor = 64 * k * eps * jnp.max(jnp.diagonal(gram))\n",
        "the zero test's absolute floor of the first review (not scale-invariant)",
    ),
    Mutant(
        "mo-raco-clip-inverted",
        MO + "_aggregators.py",
        "    if clip:\n        p = jnp.minimum(p, anchor)",
        "    if not clip:\n        p = jnp.minimum(p, anchor)",
        "RACO's clip flag wired the wrong way round",
    ),
    Mutant(
        "mo-cagrad-radius-squared",
        MO + "_aggregators.py",
        "radius = jnp.asarray(c, gram.dtype) * jnp.sqrt(_quad(anchor, gram))",
        "radius = jnp.asarray(c, gram.dtype) * _quad(anchor, gram)",
        "radius c‖g_0‖² instead of c‖g_0‖",
    ),
    Mutant(
        "mo-cagrad-anchor-sum",
        MO + "_aggregators.py",
        "uniform = jnp.full((k,), 1.0 / k, gram.dtype)\n    coef, w",
        "uniform = jnp.ones((k,), gram.dtype)\n    coef, w",
        "CAGrad anchored at Σ g_i instead of the mean",
    ),
    Mutant(
        "mo-pcgrad-projects-agreeing",
        MO + "_aggregators.py",
        "hit = (j != i) & usable[j] & (inner < 0)",
        "hit = (j != i) & usable[j] & (inner > 0)",
        "PCGrad projects agreeing instead of conflicting pairs",
    ),
    Mutant(
        "mo-pcgrad-original-inner-product",
        MO + "_aggregators.py",
        "inner = a @ gram[:, j]  # ⟨g_i^PC, g_j⟩ with g_i^PC = Σ_l a_l g_l",
        "inner = gram[i, j]",
        "PCGrad tests conflicts with the original g_i, not the projected one",
    ),
    Mutant(
        "mo-pcgrad-wrong-norm",
        MO + "_aggregators.py",
        "step = jnp.where(hit, inner / jnp.where(usable[j], diag[j], 1), 0)",
        "step = jnp.where(hit, inner / jnp.where(usable[j], diag[i], 1), 0)",
        "PCGrad divides by ‖g_i‖² instead of ‖g_j‖²",
    ),
    Mutant(
        "mo-enumerate-s2-sign",
        MO + "_simplex.py",
        "s2 = (r * r - c0) / jnp.where(a > tiny, a, 1)",
        "s2 = (r * r + c0) / jnp.where(a > tiny, a, 1)",
        "closed-form scale of the support candidates with a sign error",
    ),
    Mutant(
        "mo-two-objectives-wrong-b",
        MO + "_simplex.py",
        "b = gram[0, 1] - gram[1, 1]",
        "b = gram[0, 1] - gram[0, 0]",
        "K = 2 closed form with the wrong linear coefficient",
    ),
    Mutant(
        "mo-mgda-relative-radius",
        MO + "_aggregators.py",
        "        1.0,\n        radius_is_absolute=True,",
        "        1.0,\n        radius_is_absolute=False,",
        "MGDA's radius taken relative to a zero anchor (r = 0)",
    ),
    Mutant(
        "mo-frank-wolfe-away-step",
        MO + "_simplex.py",
        "j = jnp.argmin(grad)  # toward",
        "j = jnp.argmax(grad)  # toward",
        "Frank–Wolfe moves mass towards the worst vertex",
    ),
    # ------------------------------------------------------------------ losses
    Mutant(
        "losses-anchor-sign",
        LOSSES + "pairwise.py",
        "h = h - w * jax.lax.stop_gradient(a - b)",
        "h = h + w * jax.lax.stop_gradient(a - b)",
        "anchored log-ratio adds the anchors",
    ),
    Mutant(
        "losses-inpo-anchor-weights-swapped",
        LOSSES + "pairwise.py",
        "anchors = [Anchor(current_w, current_l, 1.0 - st), Anchor(ref_w, ref_l, st)]",
        "anchors = [Anchor(current_w, current_l, st), Anchor(ref_w, ref_l, 1.0 - st)]",
        "INPO loss anchors π_t^{sτ} π_ref^{1−sτ}",
    ),
    Mutant(
        "losses-inpo-target-eta-convention",
        LOSSES + "pairwise.py",
        "anchors = [Anchor(current_w, current_l, 1.0 - st), Anchor(ref_w, ref_l, st)]\n"
        "    return pairwise_preference_loss(policy_w, policy_l, anchors, target=step_size / 2.0)",
        "anchors = [Anchor(current_w, current_l, 1.0 - st), Anchor(ref_w, ref_l, st)]\n"
        "    return pairwise_preference_loss(policy_w, policy_l, anchors, "
        "target=1.0 / (2.0 * step_size))",
        "INPO target 1/(2s): the η vs 1/η trap",
    ),
    Mutant(
        "losses-onpo-target-full-step",
        LOSSES + "pairwise.py",
        "policy_w, policy_l, [Anchor(anchor_w, anchor_l)], target=step_size / 2.0",
        "policy_w, policy_l, [Anchor(anchor_w, anchor_l)], target=step_size",
        "ONPO target s instead of s/2",
    ),
    Mutant(
        "losses-mnpo-history-weight",
        LOSSES + "pairwise.py",
        "Anchor(hw, hl, (1.0 - ref_ratio) * weights[j])",
        "Anchor(hw, hl, weights[j])",
        "MNPO history weights not scaled by 1 − ρ",
    ),
    Mutant(
        "losses-robust-dpo-is-label-smoothing",
        LOSSES + "pairwise.py",
        "loss = ((1 - eps) * _logistic(z) - eps * _logistic(-z)) / (1 - 2 * eps)",
        "loss = (1 - eps) * _logistic(z) + eps * _logistic(-z)",
        "robust DPO written as conservative (label-smoothed) DPO",
    ),
    Mutant(
        "losses-egpo-target-times-tau",
        LOSSES + "pairwise.py",
        "target = (jnp.asarray(win_a) - jnp.asarray(win_b)) / tau",
        "target = (jnp.asarray(win_a) - jnp.asarray(win_b)) * tau",
        "EGPO target (P_a − P_b)·τ instead of /τ",
    ),
    Mutant(
        "losses-egpo-step-target-half",
        LOSSES + "pairwise.py",
        "target = step_size * (jnp.asarray(win_a) - jnp.asarray(win_b))",
        "target = step_size * (jnp.asarray(win_a) - jnp.asarray(win_b)) / 2",
        "EGPO step target s(P_a − P_b)/2",
    ),
    Mutant(
        "losses-sppo-inverse-step",
        LOSSES + "pairwise.py",
        "cw = step_size * (jnp.asarray(win_w, rw.dtype) - 0.5)",
        "cw = (jnp.asarray(win_w, rw.dtype) - 0.5) / step_size",
        "SPPO chosen target (P̂ − ½)/s: the β vs 1/β trap on one response",
    ),
    Mutant(
        "losses-sequence-mixture-swapped",
        LOSSES + "pairwise.py",
        "logits = (1 - mix) * jnp.asarray(policy_logp) + mix * jnp.asarray(ref_logp)",
        "logits = mix * jnp.asarray(policy_logp) + (1 - mix) * jnp.asarray(ref_logp)",
        "sequence-level mixture weights swapped",
    ),
    Mutant(
        "losses-dpo-smoothing-sign",
        LOSSES + "dpo.py",
        "loss = (1 - eps) * jax.nn.softplus(-margin) + eps * jax.nn.softplus(margin)",
        "loss = (1 - eps) * jax.nn.softplus(-margin) + eps * jax.nn.softplus(-margin)",
        "label smoothing applies the flipped label's loss with the wrong sign",
    ),
    Mutant(
        "losses-k3-sign",
        LOSSES + "policy_gradient.py",
        "return jnp.expm1(log_rho) - log_rho",
        "return jnp.expm1(log_rho) + log_rho",
        "k3 = (ρ − 1) + log ρ",
    ),
    Mutant(
        "losses-k2-no-half",
        LOSSES + "policy_gradient.py",
        "return 0.5 * log_rho**2",
        "return log_rho**2",
        "k2 = (log ρ)² without the ½",
    ),
    Mutant(
        "losses-rloo-divides-by-n",
        LOSSES + "policy_gradient.py",
        "adv = r - (r.sum(axis=1, keepdims=True) - r) / (group_size - 1)",
        "adv = r - (r.sum(axis=1, keepdims=True) - r) / group_size",
        "leave-one-out baseline divided by n instead of n − 1",
    ),
    Mutant(
        "losses-rloo-includes-self",
        LOSSES + "policy_gradient.py",
        "adv = r - (r.sum(axis=1, keepdims=True) - r) / (group_size - 1)",
        "adv = r - r.mean(axis=1, keepdims=True)",
        "the 'leave-one-out' baseline includes the response itself",
    ),
    Mutant(
        "losses-kl-penalty-sign",
        LOSSES + "policy_gradient.py",
        "shaped = rewards - beta_ * jax.lax.stop_gradient(seq_kl)",
        "shaped = rewards + beta_ * jax.lax.stop_gradient(seq_kl)",
        "KL penalty added to the reward",
    ),
]
