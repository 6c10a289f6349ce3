"""Predictions: a jitted JAX function over fixed-size batches, and the rescale to stars.

For :class:`batchrank.model.RankingModel` the first Dense layer is folded: it acts on
``concat(user_emb, movie_emb)``, so ``W @ [u; m] + b = (W_u @ u + b) + W_m @ m``. Per-user and
per-movie tables of the first layer's width are computed once per run, and each pair then costs
two gathers and an add instead of a matmul. A table too large to fold (see ``fold_budget_bytes``)
is projected batch by batch instead: the user side once per run of equal users
(:class:`BlockPredictor`), the item side per pair. Any other Keras model taking
``{"user", "item"}`` indices runs through a jitted ``stateless_call`` (the generic path).

Batches have one fixed shape (the last one is padded), so nothing recompiles after the first
batch. XLA's CPU matmul rounds rows differently for batch sizes that are not multiples of 64,
so the batch size is rounded up to a multiple of :data:`BATCH_MULTIPLE`: the scores then do not
depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchrank.bundle import Bundle, LabelTransform, load_bundle
from batchrank.imported import DEFAULT_INPUTS, inputs_of

__all__ = [
    "BATCH_MULTIPLE",
    "DEFAULT_BATCH_SIZE",
    "MAX_TABLE_CELLS",
    "BlockPredictor",
    "Collect",
    "Predictor",
    "TablePredictor",
    "make_predictor",
    "round_batch",
]

Collect = Callable[[], tuple[np.ndarray, np.ndarray]]
"""Waits for dispatched batches; returns scores and stars (float32)."""

BATCH_MULTIPLE = 64
DEFAULT_BATCH_SIZE = 8192
DEFAULT_FOLD_BUDGET = 256 << 20
"""Largest folded first-layer table (bytes): 256 K users at width 256. Past it the user side is
projected per run of equal users, so a million-user vocabulary does not cost a GiB of resident
memory."""
# Largest dense score table (cells); two float32 arrays of this many cells is 128 MiB.
MAX_TABLE_CELLS = 16_000_000


def round_batch(batch_size: int) -> int:
    """Round a batch size up to a multiple of :data:`BATCH_MULTIPLE` (at least one)."""
    return max(BATCH_MULTIPLE, -(-int(batch_size) // BATCH_MULTIPLE) * BATCH_MULTIPLE)


@dataclass
class Predictor:
    """A jitted scorer of (user index, movie index) pairs.

    Attributes:
        batch_size: the fixed batch shape.
        path: ``"folded"`` or ``"generic"``.
        device: where JAX runs (``"cpu"``, ``"gpu"``...).
    """

    fn: Callable[[Any, Any], tuple[Any, Any]]
    batch_size: int
    path: str
    device: str

    def predict(self, u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (label units) and stars for index arrays of any length, as float32."""
        return self.dispatch(u, i)()

    def dispatch(self, u: np.ndarray, i: np.ndarray) -> Collect:
        """Queue every batch of ``u, i`` on the device and return at once.

        JAX runs the batches asynchronously; the returned function waits for them and returns
        what :meth:`predict` would. The engine ranks the previous chunk meanwhile, so both
        cores stay busy.
        """
        n = len(u)
        if n == 0:
            return lambda: (np.zeros(0, np.float32), np.zeros(0, np.float32))
        b = self.batch_size
        nb = -(-n // b)
        pad = nb * b - n
        if pad:
            u = np.concatenate([u, np.zeros(pad, np.int32)])
            i = np.concatenate([i, np.zeros(pad, np.int32)])
        u = np.ascontiguousarray(u, dtype=np.int32)
        i = np.ascontiguousarray(i, dtype=np.int32)
        # Dispatch every batch first: JAX runs them asynchronously while Python queues the next.
        outs = self._batches(u, i)

        def collect() -> tuple[np.ndarray, np.ndarray]:
            scores = np.concatenate([np.asarray(o[0]) for o in outs])[:n]
            stars = np.concatenate([np.asarray(o[1]) for o in outs])[:n]
            return scores, stars

        return collect

    def _batches(self, u: np.ndarray, i: np.ndarray) -> list[tuple[Any, Any]]:
        """One jitted call per batch of the padded index arrays."""
        b = self.batch_size
        return [self.fn(u[s : s + b], i[s : s + b]) for s in range(0, len(u), b)]


@dataclass
class BlockPredictor(Predictor):
    """The folded path when the user table is too large to fold: the user side of the first
    layer is projected once per run of equal users, not once per pair.

    Input grouped by user (what a retrieval job writes: C candidates per user) then projects
    each user once instead of C times; the projection of a 32-wide embedding to the layer's
    width is a third of the model's arithmetic per pair. Each batch's users are taken from a
    block of ``batch_size`` consecutive runs, projected by one fixed-shape jitted call; the
    pair function gathers from that block. A user's projection is one row of a fixed-shape
    matmul, as a pair's score is one row of a batch, so the scores do not depend on how rows
    are grouped, chunked or batched (tests/scoring/test_projected_users.py). A batch with
    few repeated users (shuffled input) runs ``fn``, which projects per pair inside one jitted
    call: the same arithmetic in the same shapes, the same bits (the test checks that too),
    without the block's extra gather.
    """

    project: Callable[[Any], Any]
    """users[batch_size] -> their first-layer rows, on the device."""
    pairs: Callable[[Any, Any, Any, Any], tuple[Any, Any]]
    """(block, each pair's row in it, u, i) -> scores and stars."""

    def _batches(self, u: np.ndarray, i: np.ndarray) -> list[tuple[Any, Any]]:
        b = self.batch_size
        n = len(u)
        starts = np.empty(n, dtype=bool)
        starts[0] = True
        np.not_equal(u[1:], u[:-1], out=starts[1:])
        run = np.cumsum(starts, dtype=np.int64) - 1  # each pair's run of equal users
        run_users = u[starts]
        outs = []
        block_start, block = -1, None
        for s in range(0, n, b):
            first, last = int(run[s]), int(run[s + b - 1])
            if last - first >= b // 2:  # few repeats (shuffled input): project per pair
                outs.append(self.fn(u[s : s + b], i[s : s + b]))
                continue
            if block is None or last >= block_start + b:
                # a batch of b pairs spans at most b runs: one block from its first run holds them
                block_start = first
                users = run_users[first : first + b]
                if len(users) < b:
                    users = np.concatenate([users, np.zeros(b - len(users), np.int32)])
                block = self.project(users)
            local = (run[s : s + b] - block_start).astype(np.int32)
            outs.append(self.pairs(block, local, u[s : s + b], i[s : s + b]))
        return outs


@dataclass
class TablePredictor:
    """Scores every (user, movie) cell once, then answers each pair with a gather.

    Worth it when the input holds many more pairs than the catalogue has cells (pairs repeat
    across files and days). Exact: the table is computed by the same jitted function at the
    same batch size, and a row's result does not depend on the other rows of its batch.
    """

    inner: Predictor
    shape: tuple[int, int]
    _table: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def batch_size(self) -> int:
        """The inner predictor's batch size."""
        return self.inner.batch_size

    @property
    def path(self) -> str:
        """``<inner path>+table``."""
        return self.inner.path + "+table"

    @property
    def device(self) -> str:
        """Where JAX runs."""
        return self.inner.device

    def dispatch(self, u: np.ndarray, i: np.ndarray) -> Collect:
        """As :meth:`Predictor.dispatch` (a gather: computed at once)."""
        out = self.predict(u, i)
        return lambda: out

    def predict(self, u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and stars for index arrays, from the table (built on first use)."""
        if self._table is None:
            nu, ni = self.shape
            uu = np.repeat(np.arange(nu, dtype=np.int32), ni)
            ii = np.tile(np.arange(ni, dtype=np.int32), nu)
            scores, stars = self.inner.predict(uu, ii)
            self._table = (scores.reshape(nu, ni), stars.reshape(nu, ni))
        scores, stars = self._table
        return scores[u, i], stars[u, i]


def _star_constants(t: LabelTransform) -> tuple[np.float32, np.float32, np.float32]:
    """Stars = clip(low + span * score, 0, high), in float32 inside the jitted function."""
    return np.float32(t.low), np.float32(t.high - t.low), np.float32(t.clip_high)


def _bind(fn: Callable[..., tuple[Any, Any]], params: Any) -> Callable[[Any, Any], tuple[Any, Any]]:
    """``jit(fn)`` with ``params`` passed as arguments on every call.

    Arrays a jitted function closes over become constants of the compiled program: XLA copies
    each into the executable (a million-row table twice over while compiling). Passed as
    arguments they stay the one device buffer; the arithmetic is the same.
    """
    import jax

    jitted = jax.jit(fn)

    def call(u: Any, i: Any) -> tuple[Any, Any]:
        return jitted(params, u, i)  # type: ignore[no-any-return]

    return call


def _round_bf16(x: Any) -> Any:
    """float32 -> bfloat16, round to nearest even, in integer arithmetic.

    The same bits as ``x.astype(bfloat16)`` for every finite value and the canonical NaN.
    XLA:CPU emits ``convert`` with a NaN test and select per element; fused into the
    gather it made that loop about 1.5x slower (docs/performance.md, "bfloat16"). The
    activations here are ReLU outputs, never a NaN payload, so the test is not needed.
    """
    import jax
    import jax.numpy as jnp

    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    bits = bits + jnp.uint32(0x7FFF) + ((bits >> 16) & jnp.uint32(1))
    return jax.lax.bitcast_convert_type((bits >> 16).astype(jnp.uint16), jnp.bfloat16)


def _folded_fn(
    weights: dict[str, np.ndarray],
    transform: LabelTransform,
    fold_budget_bytes: int,
    precision: str = "float32",
) -> (
    Callable[[Any, Any], tuple[Any, Any]]
    | tuple[Callable[[Any, Any], tuple[Any, Any]], Callable[[Any], Any], Callable[..., Any]]
):
    """The folded pair function; when the user table is too large to fold, also the user
    projection and the pair function taking projected blocks (:class:`BlockPredictor`)."""
    import jax
    import jax.numpy as jnp

    e_u, e_m = weights["user_embedding"], weights["item_embedding"]
    n_hidden = sum(1 for k in weights if k.startswith("dense_") and k.endswith("_kernel"))
    w0, b0 = weights["dense_0_kernel"], weights["dense_0_bias"]
    d = e_u.shape[1]
    w_u, w_m = w0[:d], w0[d:]
    width = w0.shape[1]

    def table(emb: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> tuple[Any, bool]:
        # device_put uses an aligned float32 array in place on CPU (jnp.asarray copies it).
        e = jax.device_put(np.asarray(emb, dtype=np.float32))
        if emb.shape[0] * width * 4 <= fold_budget_bytes:
            t = e @ jnp.asarray(w)
            if bias is not None:
                t = t + jnp.asarray(bias)
            return jax.block_until_ready(t), True
        return e, False

    low_precision = precision == "bfloat16"
    hidden_type = jnp.bfloat16 if low_precision else jnp.float32
    u_tab, u_folded = table(e_u, w_u, b0)
    m_tab, m_folded = table(e_m, w_m, None)
    if low_precision:  # folded tables gathered in bfloat16: half the bytes read per pair
        u_tab = u_tab.astype(jnp.bfloat16) if u_folded else u_tab
        m_tab = m_tab.astype(jnp.bfloat16) if m_folded else m_tab
    bias_terms = "global_bias" in weights
    params: dict[str, Any] = {
        "u_tab": u_tab,
        "m_tab": m_tab,
        "w_u": jnp.asarray(w_u),
        "w_m": jnp.asarray(w_m),
        "b0": jnp.asarray(b0),
        "dense": [
            (
                jnp.asarray(weights[f"dense_{n}_kernel"], dtype=hidden_type),
                jnp.asarray(weights[f"dense_{n}_bias"]),
            )
            for n in range(1, n_hidden)
        ],
        "w_o": jnp.asarray(weights["rating_kernel"]),
        "b_o": jnp.asarray(weights["rating_bias"]),
    }
    if bias_terms:
        params["ub"] = jnp.asarray(weights["user_bias"])
        params["ib"] = jnp.asarray(weights["item_bias"])
        params["gb"] = jnp.asarray(weights["global_bias"])
    low, span, high = _star_constants(transform)

    def project(p: dict[str, Any], users: Any) -> Any:
        return p["u_tab"][users] @ p["w_u"] + p["b0"]

    def fn(p: dict[str, Any], u: Any, i: Any) -> tuple[Any, Any]:
        return after_user(p, p["u_tab"][u] if u_folded else project(p, u), u, i)

    def from_block(p: dict[str, Any], block: Any, local: Any, u: Any, i: Any) -> tuple[Any, Any]:
        return after_user(p, block[local], u, i)

    def after_user(p: dict[str, Any], hu: Any, u: Any, i: Any) -> tuple[Any, Any]:
        hm = p["m_tab"][i] if m_folded else p["m_tab"][i] @ p["w_m"]
        h = jax.nn.relu(hu.astype(jnp.float32) + hm.astype(jnp.float32))
        for w, b in p["dense"]:
            if low_precision:  # bfloat16 operands, float32 accumulation and bias
                h = jnp.dot(_round_bf16(h), w, preferred_element_type=jnp.float32)
            else:
                h = h @ w
            h = jax.nn.relu(h + b)
        out = (h @ p["w_o"] + p["b_o"])[:, 0]
        if bias_terms:
            out = out + p["ub"][u] + p["ib"][i] + p["gb"][0]
        return out, jnp.clip(low + span * out, 0.0, high)

    if u_folded:
        return _bind(fn, params)
    jit_project, jit_pairs = jax.jit(project), jax.jit(from_block)
    return (
        _bind(fn, params),
        lambda users: jit_project(params, users),
        lambda block, local, u, i: jit_pairs(params, block, local, u, i),
    )


def _generic_fn(
    model: Any,
    transform: LabelTransform,
    inputs: tuple[str, str] = DEFAULT_INPUTS,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> Callable[[Any, Any], tuple[Any, Any]]:
    """``inputs``: the model's user and item input names; ``rows``: an imported model's
    embedding row of each known id (vocabulary index k > 0 -> ``rows[k - 1]``, OOV -> row 0)."""
    import jax.numpy as jnp

    params: dict[str, Any] = {
        "trainable": [v.value for v in model.trainable_variables],
        "non_trainable": [v.value for v in model.non_trainable_variables],
    }
    low, span, high = _star_constants(transform)
    user_key, item_key = inputs
    if rows is not None:
        zero = np.zeros(1, np.int32)
        params["u_rows"] = jnp.asarray(np.concatenate([zero, rows[0]]))
        params["i_rows"] = jnp.asarray(np.concatenate([zero, rows[1]]))

    def fn(p: dict[str, Any], u: Any, i: Any) -> tuple[Any, Any]:
        if rows is not None:
            u, i = p["u_rows"][u], p["i_rows"][i]
        out, _ = model.stateless_call(
            p["trainable"], p["non_trainable"], {user_key: u, item_key: i}
        )
        out = jnp.reshape(out, (-1,)).astype(jnp.float32)
        return out, jnp.clip(low + span * out, 0.0, high)

    return _bind(fn, params)


def make_predictor(
    bundle: Bundle,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    fold: bool = True,
    fold_budget_bytes: int = DEFAULT_FOLD_BUDGET,
    precision: str = "float32",
) -> Predictor:
    """Build the jitted predictor of a bundle.

    Args:
        bundle: a loaded model bundle.
        batch_size: rows per jitted call, rounded up to a multiple of :data:`BATCH_MULTIPLE`.
        fold: fold the first Dense layer when the model is a :class:`RankingModel`.
        fold_budget_bytes: largest folded table kept on the device; larger ones are projected
            per batch.
        precision: ``float32``, or ``bfloat16`` for the hidden Dense layers after the folded
            one (bfloat16 operands, float32 accumulation; folded path only).

    Raises:
        ModelError: ``bfloat16`` for a model that is not a folded RankingModel.
    """
    import jax

    model = bundle.model
    weights = bundle.weights
    if weights is None and model is not None:
        from batchrank.model import RankingModel, ranking_weights

        if isinstance(model, RankingModel):
            weights = ranking_weights(model)
    use_fold = fold and weights is not None
    path = ("folded" if use_fold else "generic") + ("+bf16" if precision == "bfloat16" else "")
    device = jax.default_backend()
    if use_fold:
        assert weights is not None
        folded = _folded_fn(weights, bundle.transform, fold_budget_bytes, precision)
        if isinstance(folded, tuple):
            fn, project, pairs = folded
            return BlockPredictor(
                fn=fn,
                batch_size=round_batch(batch_size),
                path=path,
                device=device,
                project=project,
                pairs=pairs,
            )
        fn = folded
    else:
        if precision != "float32":
            from batchrank.errors import ModelError

            raise ModelError(
                f"{bundle.path}: --precision {precision} needs a batchrank RankingModel "
                "(seed/default presets); this model runs through the generic Keras path"
            )
        if model is None:
            model = load_bundle(bundle.path).model  # type: ignore[arg-type]
        fn = _generic_fn(
            model, bundle.transform, inputs_of(bundle.metadata, bundle.path), bundle.rows
        )
    return Predictor(fn=fn, batch_size=round_batch(batch_size), path=path, device=device)
