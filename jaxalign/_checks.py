"""Precondition checks for public entry points.

Value checks (normalisation, NaN, signs) run only when the argument is concrete:
inside ``jit``/``vmap`` the inputs are tracers and only static (shape) checks
apply. Every failure is a :class:`ValueError` naming the argument, the offending
value and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# How far logsumexp(log_probs) may be from 0 for the input to count as normalised.
_NORMALISATION_TOL = {
    np.dtype("float16"): 1e-2,
    np.dtype(jnp.bfloat16): 1e-2,
    np.dtype("float32"): 1e-4,
    np.dtype("float64"): 1e-9,
}


def is_concrete(x) -> bool:
    """True when ``x`` holds values this process can read: not a tracer under
    jit/vmap/grad, nor a global array with shards on other processes (multi-host)."""
    if isinstance(x, jax.core.Tracer):
        return False
    return not isinstance(x, jax.Array) or x.is_fully_addressable


def _short(x, limit: int = 8) -> str:
    a = np.asarray(x)
    if a.size <= limit:
        return np.array2string(a, precision=6, separator=", ")
    return np.array2string(a.ravel()[:limit], precision=6, separator=", ")[:-1] + ", ...]"


def as_float_array(name: str, x, *, ndim: int | None = None) -> jax.Array:
    """Converts ``x`` to a floating jax array (keeping float64 if given) and checks its rank."""
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D array (batch with jax.vmap), got shape {arr.shape}"
        )
    return arr


def check_nonempty(name: str, x: jax.Array) -> None:
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); expected at least one response")


def check_same_shape(names: Sequence[str], *arrays: jax.Array) -> None:
    shapes = [a.shape for a in arrays]
    if any(s != shapes[0] for s in shapes[1:]):
        desc = ", ".join(f"{n}.shape={s}" for n, s in zip(names, shapes))
        raise ValueError(f"shape mismatch: {desc}; expected equal shapes")


def check_log_probs(name: str, log_p: jax.Array) -> None:
    """Log-probabilities along the last axis: no NaN/+inf, logsumexp = 0."""
    if not is_concrete(log_p):
        return
    a = np.asarray(log_p, dtype=np.float64)
    if np.isnan(a).any() or np.isposinf(a).any():
        raise ValueError(f"{name} contains NaN or +inf: {_short(a)}")
    with np.errstate(divide="ignore"):
        m = np.max(a, axis=-1, keepdims=True)
        if np.isneginf(m).any():
            raise ValueError(f"{name} has no mass (all entries -inf); expected log-probabilities")
        lse = np.squeeze(m, -1) + np.log(np.sum(np.exp(a - m), axis=-1))
    tol = _NORMALISATION_TOL.get(np.dtype(log_p.dtype), 1e-4)
    if np.max(np.abs(lse)) > tol:
        raise ValueError(
            f"{name} is not normalised: logsumexp({name}) = {_short(lse)} (tolerance {tol}); "
            "expected log-probabilities, e.g. jax.nn.log_softmax(logits)"
        )


def check_finite(name: str, x: jax.Array) -> None:
    if not is_concrete(x):
        return
    a = np.asarray(x)
    if not np.isfinite(a).all():
        bad = a[~np.isfinite(a)]
        raise ValueError(f"{name} must be finite; found {_short(bad)} in {_short(a)}")


def check_positive(name: str, x) -> None:
    if not is_concrete(x):
        return
    a = np.asarray(x)
    if np.isnan(a).any() or (a <= 0).any():
        raise ValueError(f"{name} must be > 0, got {_short(a)}")


def check_nonnegative(name: str, x) -> None:
    if not is_concrete(x):
        return
    a = np.asarray(x)
    if np.isnan(a).any() or (a < 0).any():
        raise ValueError(f"{name} must be >= 0, got {_short(a)}")


def check_at_least(name: str, x, bound: float) -> None:
    if not is_concrete(x):
        return
    a = np.asarray(x)
    if np.isnan(a).any() or (a < bound).any():
        raise ValueError(f"{name} must be >= {bound}, got {_short(a)}")
