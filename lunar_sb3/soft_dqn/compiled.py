"""The fast path's gradient step compiled with Numba: one call per ``train``, the same float32 numbers as torch.

Why: for a 64-64 MLP and a minibatch of 64, a gradient step is ~35 torch operator calls whose dispatch costs
more than their arithmetic. Here the whole step (minibatch gather, TD target, forward pass, hand-derived
backward pass, gradient clipping, Adam) is one compiled function, called once per ``train``.

The gather is the replay buffer's own (:func:`gather_minibatch`): SB3's one-step transition, or the n-step
return, discount and bootstrap state that ``NStepReplayBuffer`` computes, with NumPy's summation order. For
prioritized replay the loss is weighted by the importance-sampling weights as ``td_loss_and_errors`` weights it,
and the TD errors come back for ``update_priorities``; the lean rollout's upkeep of the sum tree (new transitions
at the maximum priority) is :func:`set_leaves`. A dueling network's heads are the last layer's outputs [V, A],
combined into Q by :func:`_dueling_q`; its backward pass starts from the combination's exact gradient.

Same numbers: everything is float32 and summed in the order torch's CPU kernels sum, so that ReLU and argmax
decisions come out as on the autograd path and the two paths stay together over long runs:

* the ``nn.Linear`` products (x·Wᵀ, δᵀ·a, δ·W; MKL): chains over the summed index in index order, with FMAs
  or with separately rounded products, or (MKL's kernel for a few outputs) in 4 or 8 lanes added by halves;
  which one MKL uses depends on shape, CPU and even the output (blocks of 4 outputs or rows are summed unlike
  the rest), so :func:`calibrate` asks torch once per shape, output by output;
* ``δ.sum(0)`` (the bias gradients): ATen's cascade sum (:func:`_column_sums`);
* ``linalg.vector_norm`` (gradient clipping): ATen's norm kernel (:func:`_norm`);
* Adam: ``torch._fused_adam_``'s CPU kernel, including where its compiler fused multiply-adds (:func:`_adam`).

On the machine this was written on (AMD EPYC, torch 2.13 with MKL 2024.2) the compiled and the autograd path
agree bit for bit after thousands of steps; where a BLAS sums in an order :func:`calibrate` does not know, the
products fall back to FMA chains and differ from torch in the last bit.

The weights and Adam's state live in flat float32 buffers that the torch Parameters and the optimizer's state
tensors are views of (:class:`CompiledTrainer`): the kernel updates the memory that ``state_dict()``, ``save``
and the general path use, and nothing is copied per call.
"""

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import NStepReplayBuffer

from lunar_sb3.soft_dqn.policies import DuelingQNetwork

try:
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    HAS_NUMBA = True
except (ImportError, OSError):  # no numba, one built for another NumPy, a broken llvmlite: the torch step
    HAS_NUMBA = False

if TYPE_CHECKING:
    from lunar_sb3.soft_dqn.soft_dqn import SoftUpdateDQN

ENV_SWITCH = "LUNAR_SB3_NUMBA"
# Stand-ins for the kernel's optional arrays (no discount tables, no weights, no TD errors wanted)
_NO_ARRAY_1D = np.empty(0, dtype=np.float32)
_NO_ARRAY_2D = np.empty((0, 0), dtype=np.float32)


def enabled() -> bool:
    """Numba is importable and not switched off with ``LUNAR_SB3_NUMBA=0`` (read at each ``learn``)."""
    return HAS_NUMBA and os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def torch_vector_width() -> int:
    """Floats per ``at::vec::Vectorized<float>`` in the torch kernels followed here: it decides summation orders.

    8: ATen builds its AVX512 variant only for kernels marked for it; the reductions and the fused Adam used
    here run their AVX2 build (8 floats) on AVX512 CPUs too, and the NEON and generic builds are 8 wide as well.
    """
    return 8


if HAS_NUMBA:

    @intrinsic
    def fma32(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
        """a·b + c rounded once, as the FMA instructions in MKL's and ATen's float32 kernels."""
        signature = types.float32(types.float32, types.float32, types.float32)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.fma(*args)

        return signature, codegen

    def _rows_fma_kernel(n_vectors: int, fused: bool) -> Any:
        """A register-blocked kernel for 8·n_vectors output columns (see :func:`_accumulate` for its meaning).

        Written as LLVM IR because the loop vectoriser keeps accumulators in memory (it cannot rule out that
        the output aliases the inputs), which makes a 64-wide row cost a load and a store per FMA; here the
        n_vectors accumulators live in registers for the whole chain and are stored once at the end.
        ``fused``: acc + c·x as one FMA, else as a rounded product and a rounded sum (both are found in MKL).
        """

        @intrinsic
        def rows_fma(
            typingctx: Any,
            dst: Any,
            dst_start: Any,
            src: Any,
            src_start: Any,
            src_stride: Any,
            coef: Any,
            coef_start: Any,
            coef_stride: Any,
            idx: Any,
            count: Any,
        ) -> Any:
            arrays_ok = all(getattr(a, "dtype", None) == types.float32 for a in (dst, src, coef))
            if not (arrays_ok and getattr(idx, "dtype", None) == types.int64):
                return None  # the IR below is written for float32 data and int64 indices
            signature = types.void(
                dst, dst_start, src, src_start, src_stride, coef, coef_start, coef_stride, idx, count
            )

            def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
                i64, vector = ir.IntType(64), ir.VectorType(ir.FloatType(), 8)
                fma = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(vector, [vector] * 3), "llvm.fma.v8f32"
                )
                pointers = [context.make_array(sig.args[i])(context, builder, args[i]).data for i in (0, 2, 5, 8)]
                dst_p, src_p, coef_p, idx_p = pointers
                dst_start, src_start, src_stride, coef_start, coef_stride, count = (
                    context.cast(builder, args[i], sig.args[i], types.int64) for i in (1, 3, 4, 6, 7, 9)
                )
                zero = ir.Constant(vector, [0.0] * 8)
                entry = builder.block
                check = builder.append_basic_block("rows_fma.check")
                body = builder.append_basic_block("rows_fma.body")
                done = builder.append_basic_block("rows_fma.done")
                builder.branch(check)
                builder.position_at_end(check)
                k = builder.phi(i64)
                k.add_incoming(ir.Constant(i64, 0), entry)
                accumulators = []
                for _ in range(n_vectors):
                    phi = builder.phi(vector)
                    phi.add_incoming(zero, entry)
                    accumulators.append(phi)
                builder.cbranch(builder.icmp_signed("<", k, count), body, done)

                builder.position_at_end(body)
                row = builder.load(builder.gep(idx_p, [k]))
                c = builder.load(builder.gep(coef_p, [builder.add(coef_start, builder.mul(row, coef_stride))]))
                lane0 = builder.insert_element(ir.Constant(vector, None), c, ir.Constant(ir.IntType(32), 0))
                splat = builder.shuffle_vector(
                    lane0, ir.Constant(vector, None), ir.Constant(ir.VectorType(ir.IntType(32), 8), [0] * 8)
                )
                base = builder.add(src_start, builder.mul(row, src_stride))
                updated = []
                for v, accumulator in enumerate(accumulators):
                    address = builder.gep(src_p, [builder.add(base, ir.Constant(i64, 8 * v))])
                    loaded = builder.load(builder.bitcast(address, vector.as_pointer()), align=4)
                    if fused:
                        updated.append(builder.call(fma, [splat, loaded, accumulator]))
                    else:
                        updated.append(builder.fadd(accumulator, builder.fmul(splat, loaded)))
                next_k = builder.add(k, ir.Constant(i64, 1))
                builder.branch(check)
                k.add_incoming(next_k, body)
                for phi, value in zip(accumulators, updated, strict=True):
                    phi.add_incoming(value, body)

                builder.position_at_end(done)
                for v, accumulator in enumerate(accumulators):
                    address = builder.gep(dst_p, [builder.add(dst_start, ir.Constant(i64, 8 * v))])
                    builder.store(accumulator, builder.bitcast(address, vector.as_pointer()), align=4)
                return context.get_dummy_value()

            return signature, codegen

        return rows_fma

    _rows_fma_64, _rows_fma_32, _rows_fma_16, _rows_fma_8 = (_rows_fma_kernel(n, True) for n in (8, 4, 2, 1))
    _rows_mul_64, _rows_mul_32, _rows_mul_16, _rows_mul_8 = (_rows_fma_kernel(n, False) for n in (8, 4, 2, 1))

    # error_model="numpy": a float division by zero gives inf/nan as in torch instead of raising, and the loops
    # without that check vectorise
    jit = njit(cache=True, nogil=True, error_model="numpy")
else:

    def fma32(a: Any, b: Any, c: Any) -> Any:  # pragma: no cover - never called without Numba
        raise RuntimeError("fma32 needs Numba")

    _rows_fma_64 = _rows_fma_32 = _rows_fma_16 = _rows_fma_8 = fma32
    _rows_mul_64 = _rows_mul_32 = _rows_mul_16 = _rows_mul_8 = fma32

    def jit(function: Any) -> Any:  # the kernels stay plain Python functions, never called
        return function


# ---------------------------------------------------------------------------------------------------------------
# Building blocks. Scalars are float32 throughout (a Python float constant would silently promote to float64).
# Activations, weights and scratch are flat float32 arrays with explicit offsets: the vector kernel takes pointers.
# ---------------------------------------------------------------------------------------------------------------
@jit
def _layer_offsets(dims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where W_l ([dims[l+1], dims[l]], row-major like nn.Linear) and b_l start in a flat parameter buffer."""
    n_layers = dims.shape[0] - 1
    weight_offsets = np.empty(n_layers, np.int64)
    bias_offsets = np.empty(n_layers, np.int64)
    offset = 0
    for layer in range(n_layers):
        weight_offsets[layer] = offset
        offset += dims[layer + 1] * dims[layer]
        bias_offsets[layer] = offset
        offset += dims[layer + 1]
    return weight_offsets, bias_offsets


@jit
def _transpose(src: np.ndarray, src_start: int, rows: int, columns: int, dst: np.ndarray, dst_start: int) -> None:
    """dst[dst_start:] = the [rows, columns] matrix at src[src_start:], transposed ([columns, rows])."""
    for c in range(columns):
        for r in range(rows):
            dst[dst_start + c * rows + r] = src[src_start + r * columns + c]


@jit
def _nonzero(values: np.ndarray, start: int, stride: int, count: int, idx: np.ndarray) -> int:
    """The r < count with values[start + r·stride] != 0, in increasing order, into idx; returns how many.

    Written without a branch: ReLU zeros are ~50 % and random, and a mispredicted skip costs more than an FMA.
    """
    zero = np.float32(0.0)
    n = 0
    for r in range(count):
        idx[n] = r
        n += values[start + r * stride] != zero
    return n


@jit
def _accumulate(
    dst: np.ndarray,
    dst_start: int,
    src: np.ndarray,
    src_start: int,
    src_stride: int,
    width: int,
    coef: np.ndarray,
    coef_start: int,
    coef_stride: int,
    idx: np.ndarray,
    count: int,
    fused: bool,
) -> None:
    """dst[dst_start + c] = Σ_k coef[coef_start + r_k·coef_stride] · src[src_start + r_k·src_stride + c], c < width.

    r_k = idx[k] for k < count. Each output is a chain from 0 in k order (FMAs if ``fused``, else a rounded
    product added to a rounded sum), which is how MKL's GEMM kernels sum; terms left out are those with a zero
    coefficient, which would add ±0. The columns go through the register-blocked vector kernels 64, 32, 16 or
    8 at a time, the last few through a scalar chain.
    """
    c = 0
    while width - c >= 64:
        if fused:
            _rows_fma_64(dst, dst_start + c, src, src_start + c, src_stride, coef, coef_start, coef_stride, idx, count)
        else:
            _rows_mul_64(dst, dst_start + c, src, src_start + c, src_stride, coef, coef_start, coef_stride, idx, count)
        c += 64
    if width - c >= 32:
        if fused:
            _rows_fma_32(dst, dst_start + c, src, src_start + c, src_stride, coef, coef_start, coef_stride, idx, count)
        else:
            _rows_mul_32(dst, dst_start + c, src, src_start + c, src_stride, coef, coef_start, coef_stride, idx, count)
        c += 32
    if width - c >= 16:
        if fused:
            _rows_fma_16(dst, dst_start + c, src, src_start + c, src_stride, coef, coef_start, coef_stride, idx, count)
        else:
            _rows_mul_16(dst, dst_start + c, src, src_start + c, src_stride, coef, coef_start, coef_stride, idx, count)
        c += 16
    if width - c >= 8:
        if fused:
            _rows_fma_8(dst, dst_start + c, src, src_start + c, src_stride, coef, coef_start, coef_stride, idx, count)
        else:
            _rows_mul_8(dst, dst_start + c, src, src_start + c, src_stride, coef, coef_start, coef_stride, idx, count)
        c += 8
    while c < width:
        acc = np.float32(0.0)
        for k in range(count):
            r = idx[k]
            if fused:
                acc = fma32(coef[coef_start + r * coef_stride], src[src_start + r * src_stride + c], acc)
            else:
                acc = acc + coef[coef_start + r * coef_stride] * src[src_start + r * src_stride + c]
        dst[dst_start + c] = acc
        c += 1


@jit
def _linear(
    x: np.ndarray,
    batch: int,
    n_in: int,
    n_out: int,
    weights: np.ndarray,
    weights_t: np.ndarray,
    weight_offset: int,
    bias_offset: int,
    relu: bool,
    lanes: np.ndarray,
    out: np.ndarray,
    scratch: np.ndarray,
    idx: np.ndarray,
) -> None:
    """out = x·Wᵀ + b ([batch, n_in] → [batch, n_out]), ReLU'd if asked, summed in the order of MKL's kernel.

    ``weights`` holds W at weight_offset and b at bias_offset; ``weights_t`` holds Wᵀ at weight_offset.
    ``lanes[j]`` is output j's order. 0: an FMA chain over the inputs, then + b (MKL's GEMM microkernel);
    vectorised over the outputs (rows of Wᵀ, skipping each sample's zero inputs) when all are 0 and there are 8
    outputs or more (or fewer than 8 samples), else over the batch (on xᵀ). L: MKL's kernels for few outputs:
    L partial sums (inputs i ≡ m mod L, products and sums rounded separately), added pairwise by halves, then + b
    (MKL takes blocks of 4 outputs in 4 lanes, the rest in 8).
    """
    zero = np.float32(0.0)
    widest_lanes = 0
    for j in range(n_out):
        widest_lanes = max(widest_lanes, lanes[j])
    if widest_lanes > 0 or (n_out < 8 and batch >= 8):
        x_t = scratch[: n_in * batch]
        q_t = scratch[n_in * batch : (n_in + n_out) * batch]
        partial = scratch[(n_in + n_out) * batch : (n_in + n_out + max(widest_lanes, 1)) * batch]
        _transpose(x, 0, batch, n_in, x_t, 0)
        for j in range(n_out):
            row = weight_offset + j * n_in
            n_lanes = lanes[j]
            if n_lanes == 0:
                count = _nonzero(weights, row, 1, n_in, idx)
                _accumulate(q_t, j * batch, x_t, 0, batch, batch, weights, row, 1, idx, count, True)
                continue
            for m in range(n_lanes):
                count = 0
                for i in range(m, n_in, n_lanes):
                    idx[count] = i
                    count += 1
                _accumulate(partial, m * batch, x_t, 0, batch, batch, weights, row, 1, idx, count, False)
            half = n_lanes // 2
            while half > 0:
                for m in range(half):
                    for b in range(batch):
                        partial[m * batch + b] = partial[m * batch + b] + partial[(m + half) * batch + b]
                half //= 2
            for b in range(batch):
                q_t[j * batch + b] = partial[b]
        for b in range(batch):
            for j in range(n_out):
                out[b * n_out + j] = q_t[j * batch + b]
    else:
        for b in range(batch):
            count = _nonzero(x, b * n_in, 1, n_in, idx)
            _accumulate(out, b * n_out, weights_t, weight_offset, n_out, n_out, x, b * n_in, 1, idx, count, True)
    for b in range(batch):
        for j in range(n_out):
            value = out[b * n_out + j] + weights[bias_offset + j]
            if relu and value < zero:
                value = zero
            out[b * n_out + j] = value


@jit
def _transpose_weights(flat: np.ndarray, dims: np.ndarray, weight_offsets: np.ndarray, out: np.ndarray) -> None:
    """Every Wᵀ of ``flat`` at its W's offset in ``out`` (the forward pass reads rows of Wᵀ)."""
    for layer in range(dims.shape[0] - 1):
        _transpose(flat, weight_offsets[layer], dims[layer + 1], dims[layer], out, weight_offsets[layer])


@jit
def _q_values(
    flat: np.ndarray,
    flat_t: np.ndarray,
    dims: np.ndarray,
    weight_offsets: np.ndarray,
    bias_offsets: np.ndarray,
    lanes: np.ndarray,
    x: np.ndarray,
    batch: int,
    ping: np.ndarray,
    pong: np.ndarray,
    scratch: np.ndarray,
    idx: np.ndarray,
) -> np.ndarray:
    """Q(x, ·) ([batch, n_actions], flat) of the network in ``flat`` (Wᵀ in ``flat_t``), via two scratch buffers."""
    n_layers = dims.shape[0] - 1
    current = x
    for layer in range(n_layers):
        out = ping if layer % 2 == 0 else pong
        _linear(
            current,
            batch,
            dims[layer],
            dims[layer + 1],
            flat,
            flat_t,
            weight_offsets[layer],
            bias_offsets[layer],
            layer < n_layers - 1,
            lanes[layer],
            out,
            scratch,
            idx,
        )
        current = out
    return current


@jit
def _dueling_q(heads: np.ndarray, batch: int, n_actions: int, out: np.ndarray) -> None:
    """Q = V + A − mean_a′ A from the dueling heads [V, A_0, ..., A_n−1] of each row, as ``DuelingQNetwork``'s forward.

    Torch's CPU mean is the sum divided by the count. A row of fewer than 8 elements is summed by ATen's
    ``row_sum``: 4 partial sums over elements i ≡ k mod 4 of the first multiple of 4, the rest added to the first,
    then ((p0 + p1) + p2) + p3; longer rows (8 or more actions with AVX2) are vectorised, in another order, so
    :func:`dueling_mean_is_torchs` checks before the kernel is used. Then (V + A) − mean.
    """
    zero = np.float32(0.0)
    n_heads = n_actions + 1
    grouped = n_actions - n_actions % 4
    for b in range(batch):
        first = b * n_heads + 1  # A_0
        p0 = p1 = p2 = p3 = zero
        for i in range(0, grouped, 4):
            p0 += heads[first + i]
            p1 += heads[first + i + 1]
            p2 += heads[first + i + 2]
            p3 += heads[first + i + 3]
        for i in range(grouped, n_actions):
            p0 += heads[first + i]
        mean = (((p0 + p1) + p2) + p3) / np.float32(n_actions)
        for a in range(n_actions):
            out[b * n_actions + a] = (heads[first - 1] + heads[first + a]) - mean


@jit
def _weight_grad(
    delta: np.ndarray,
    n_out: int,
    inputs: np.ndarray,
    n_in: int,
    batch: int,
    fused: np.ndarray,
    grads: np.ndarray,
    offset: int,
    scratch: np.ndarray,
    idx: np.ndarray,
) -> None:
    """∂L/∂W = δᵀ·a ([n_out, n_in] at grads[offset:]) as chains over the batch in batch order.

    Vectorised along the wider of the two dimensions: rows of a, skipping the samples whose δ is zero (row j of
    the result with FMAs if ``fused[j]``), or (for a layer with fewer inputs than outputs) rows of δ, skipping
    zero inputs, into a transposed scratch (all rows as ``fused[0]`` says).
    """
    if n_in >= n_out:
        for j in range(n_out):
            count = _nonzero(delta, j, n_out, batch, idx)
            row_fused = fused[j] == 1
            _accumulate(grads, offset + j * n_in, inputs, 0, n_in, n_in, delta, j, n_out, idx, count, row_fused)
    else:
        for i in range(n_in):
            count = _nonzero(inputs, i, n_in, batch, idx)
            _accumulate(scratch, i * n_out, delta, 0, n_out, n_out, inputs, i, n_in, idx, count, fused[0] == 1)
        _transpose(scratch, 0, n_in, n_out, grads, offset)


@jit
def _input_grad(
    delta: np.ndarray,
    n_out: int,
    weights: np.ndarray,
    weight_offset: int,
    layer_in: np.ndarray,
    n_in: int,
    batch: int,
    fused: bool,
    out: np.ndarray,
    idx: np.ndarray,
) -> None:
    """δ of the layer below: (δ·W) where the ReLU output a > 0, else 0 (``threshold_backward``)."""
    zero = np.float32(0.0)
    for b in range(batch):
        count = _nonzero(delta, b * n_out, 1, n_out, idx)
        _accumulate(out, b * n_in, weights, weight_offset, n_in, n_in, delta, b * n_out, 1, idx, count, fused)
        for i in range(n_in):
            if not layer_in[b * n_in + i] > zero:
                out[b * n_in + i] = zero


@jit
def probe_layer(
    x: np.ndarray, weight: np.ndarray, delta: np.ndarray, lanes: np.ndarray, grad_fused: np.ndarray, below_fused: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x·Wᵀ (output j in ``lanes[j]`` lanes), δᵀ·x (row j with FMAs if ``grad_fused[j]``) and δ·W of one layer."""
    batch, n_in = x.shape
    n_out = weight.shape[0]
    widest = max(max(n_in, n_out), batch)
    flat = np.zeros(n_out * n_in + n_out, np.float32)
    flat[: n_out * n_in] = weight.ravel()
    flat_t = np.empty(n_out * n_in, np.float32)
    _transpose(flat, 0, n_out, n_in, flat_t, 0)
    scratch = np.empty((2 * widest + 16) * widest, np.float32)
    idx = np.empty(widest, np.int64)
    x_flat, delta_flat = x.ravel().copy(), delta.ravel().copy()
    forward = np.empty(batch * n_out, np.float32)
    _linear(x_flat, batch, n_in, n_out, flat, flat_t, 0, n_out * n_in, False, lanes, forward, scratch, idx)
    grad = np.empty(n_out * n_in, np.float32)
    _weight_grad(delta_flat, n_out, x_flat, n_in, batch, grad_fused, grad, 0, scratch, idx)
    below = np.empty(batch * n_in, np.float32)
    ones = np.ones(batch * n_in, np.float32)  # no ReLU mask
    _input_grad(delta_flat, n_out, flat, 0, ones, n_in, batch, below_fused, below, idx)
    return forward.reshape((batch, n_out)), grad.reshape((n_out, n_in)), below.reshape((batch, n_in))


@jit
def _ceil_log2(x: int) -> int:
    """ATen's ``CeilLog2``: 1 for x <= 2, else the bit length of x − 1."""
    if x <= 2:
        return 1
    bits = 0
    rest = x - 1
    while rest > 0:
        bits += 1
        rest >>= 1
    return bits


@jit
def _cascade(x: np.ndarray, row0: int, row_step: int, count: int, col0: int, col1: int, out: np.ndarray) -> None:
    """out[c] = Σ_r x[row0 + r·row_step, c] for columns col0 ≤ c < col1, in the order of ATen's ``multi_row_sum``.

    ATen sums chunks of 2^level_power rows, folds chunk sums into up to three coarser levels, and adds the
    levels up at the end; the same row schedule applies to every column, so they are done side by side.
    """
    zero = np.float32(0.0)
    width = col1 - col0
    acc = np.zeros((4, width), np.float32)
    level_power = max(4, _ceil_log2(count) // 4)
    level_step = 1 << level_power
    level_mask = level_step - 1
    i = 0
    while i + level_step <= count:
        for _ in range(level_step):
            r = row0 + i * row_step
            for c in range(width):
                acc[0, c] += x[r, col0 + c]
            i += 1
        for level in range(1, 4):
            for c in range(width):
                acc[level, c] += acc[level - 1, c]
                acc[level - 1, c] = zero
            if i & (level_mask << (level * level_power)) != 0:
                break
    while i < count:
        r = row0 + i * row_step
        for c in range(width):
            acc[0, c] += x[r, col0 + c]
        i += 1
    for c in range(width):
        total = acc[0, c]
        for level in range(1, 4):
            total += acc[level, c]
        out[col0 + c] = total


@jit
def _column_sums(x: np.ndarray, out: np.ndarray, vec_width: int) -> None:
    """out = x.sum(dim=0) for a contiguous [rows, columns] float32 array, as ATen's ``cascade_sum`` orders it.

    ATen takes groups of 4·vec_width columns (4 columns when there are fewer than vec_width) through
    ``multi_row_sum`` over all rows; the remaining columns through ``row_sum``, which keeps 4 partial sums
    (rows ≡ k mod 4), adds the rows past the last multiple of 4 to the first, and then adds the partials up.
    """
    rows, columns = x.shape
    group = 4 * vec_width if columns >= vec_width else 4
    grouped = (columns // group) * group
    if grouped > 0:
        _cascade(x, 0, 1, rows, 0, grouped, out)
    if grouped < columns:
        width = columns - grouped
        partials = np.empty((4, columns), np.float32)
        n_ilp = rows // 4
        for k in range(4):
            _cascade(x, k, 4, n_ilp, grouped, columns, partials[k])
        for r in range(n_ilp * 4, rows):
            for c in range(width):
                partials[0, grouped + c] += x[r, grouped + c]
        for c in range(grouped, columns):
            total = partials[0, c]
            for k in range(1, 4):
                total += partials[k, c]
            out[c] = total


@jit
def _norm(x: np.ndarray, vec_width: int) -> np.float32:
    """‖x‖₂ of a float32 vector as ATen's CPU ``vector_norm`` computes it (``norm_kernel_tensor_iterator_impl``).

    vec_width lanes accumulate x² of every full vector (``acc += x*x``, not fused), the lanes are added one
    after the other, then the ragged end element by element: as the compiler built that loop, four at a time
    with separate products and sums, the last one to three as FMAs.
    """
    size = x.shape[0]
    end = size - size % vec_width
    lanes = np.zeros(vec_width, np.float32)
    for start in range(0, end, vec_width):
        for lane in range(vec_width):
            square = x[start + lane] * x[start + lane]
            lanes[lane] = lanes[lane] + square
    total = lanes[0]
    for lane in range(1, vec_width):
        total = total + lanes[lane]
    fours = end + (size - end) // 4 * 4
    for i in range(end, fours):
        square = x[i] * x[i]
        total = total + square
    for i in range(fours, size):
        total = fma32(x[i], x[i], total)
    return np.sqrt(total)


@jit
def _adam(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    vec_width: int,
) -> None:
    """One tensor's update as ``torch._fused_adam_``'s CPU kernel (``adam_math``) computes it, in float32.

    The coefficients are computed in double from the (already incremented) step, then used as float32.
    The compiler that built torch contracts ``a·b + c`` into FMAs, and differently in the kernel's vectorised
    loop (elements up to the last multiple of vec_width) and its scalar tail; both are spelled out here:
    g += p·wd and the lerp m += (1 − β1)·(g − m) are single FMAs in both, v = β2·v + (1 − β2)·g² is
    fma((1 − β2)·g, g, β2·v) in the vector loop and fma(v, β2, (1 − β2)·g·g) in the tail.
    """
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    neg_step_size = np.float32(-(lr / bias_correction1))
    bias_correction2_sqrt = np.float32(np.sqrt(bias_correction2))
    lerp_weight = np.float32(1.0 - beta1)
    # lerp(m, g, w) = m + w·(g − m) for small w, else g − (1 − w)·(g − m), each as one FMA
    small_weight = abs(lerp_weight) < np.float32(0.5)
    lerp_coeff = lerp_weight if small_weight else lerp_weight - np.float32(1.0)
    beta2_32 = np.float32(beta2)
    sq_coeff = np.float32(1.0 - beta2)
    eps32 = np.float32(eps)
    decay = np.float32(weight_decay)
    size = param.shape[0]
    end = size - size % vec_width
    for d in range(end):  # the vectorised loop; the same body again below for the tail, so that this one vectorises
        p = param[d]
        g = fma32(p, decay, grad[d]) if weight_decay != 0.0 else grad[d]
        m = exp_avg[d]
        m = fma32(lerp_coeff, g - m, m if small_weight else g)
        v = fma32(sq_coeff * g, g, exp_avg_sq[d] * beta2_32)
        exp_avg[d] = m
        exp_avg_sq[d] = v
        param[d] = p + neg_step_size * m / (np.sqrt(v) / bias_correction2_sqrt + eps32)
    for d in range(end, size):
        p = param[d]
        g = fma32(p, decay, grad[d]) if weight_decay != 0.0 else grad[d]
        m = exp_avg[d]
        m = fma32(lerp_coeff, g - m, m if small_weight else g)
        v = fma32(exp_avg_sq[d], beta2_32, sq_coeff * g * g)
        exp_avg[d] = m
        exp_avg_sq[d] = v
        param[d] = p + neg_step_size * m / (np.sqrt(v) / bias_correction2_sqrt + eps32)


@jit
def _pairwise_block(terms: np.ndarray, start: int, count: int) -> np.float32:
    """Σ terms[start:start + count] for count <= 128, in the order of NumPy's float32 ``pairwise_sum``.

    Fewer than 8 terms: a chain from −0; else 8 accumulators over blocks of 8, added as
    ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the remaining terms one by one.
    """
    if count < 8:
        total = np.float32(-0.0)
        for i in range(start, start + count):
            total += terms[i]
        return total
    r0, r1, r2, r3 = terms[start], terms[start + 1], terms[start + 2], terms[start + 3]
    r4, r5, r6, r7 = terms[start + 4], terms[start + 5], terms[start + 6], terms[start + 7]
    i = 8
    while i < count - count % 8:
        j = start + i
        r0 += terms[j]
        r1 += terms[j + 1]
        r2 += terms[j + 2]
        r3 += terms[j + 3]
        r4 += terms[j + 4]
        r5 += terms[j + 5]
        r6 += terms[j + 6]
        r7 += terms[j + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < count:
        total += terms[start + i]
        i += 1
    return total


@jit
def _pairwise_sum(terms: np.ndarray, start: int, count: int) -> np.float32:
    """Σ terms[start:start + count] in float32, in the order of NumPy's ``pairwise_sum`` (what ``.sum(axis=1)`` runs).

    Up to 128 terms: :func:`_pairwise_block`; more: the sums of the two halves (the first a multiple of 8 long),
    each split the same way, added. NumPy recurses; here the split tree is walked with an explicit stack, because
    Numba's cache cannot reload a recursive function (the process crashes).
    """
    if count <= 128:
        return _pairwise_block(terms, start, count)
    starts = np.empty(64, np.int64)
    counts = np.empty(64, np.int64)
    stages = np.empty(64, np.int64)  # 0: left half next, 1: right half next, 2: add the halves
    left = np.empty(64, np.float32)
    starts[0], counts[0], stages[0] = start, count, 0
    top = 0
    value = np.float32(0.0)  # the sum of the part finished last
    while top >= 0:
        size = counts[top]
        if size <= 128:
            value = _pairwise_block(terms, starts[top], size)
            top -= 1
            continue
        half = size // 2
        half -= half % 8
        if stages[top] == 0:
            stages[top] = 1
            starts[top + 1], counts[top + 1], stages[top + 1] = starts[top], half, 0
            top += 1
        elif stages[top] == 1:
            left[top] = value
            stages[top] = 2
            starts[top + 1], counts[top + 1], stages[top + 1] = starts[top] + half, size - half, 0
            top += 1
        else:
            value = left[top] + value
            top -= 1
    return value


@jit
def gather_minibatch(
    observations: np.ndarray,
    actions: np.ndarray,
    next_observations: np.ndarray,
    rewards: np.ndarray,
    dones: np.ndarray,
    timeouts: np.ndarray,
    rows: np.ndarray,
    envs: np.ndarray,
    n_step: int,
    last_valid: int,
    reward_discounts: np.ndarray,
    target_discounts: np.ndarray,
    gamma: float,
    obs: np.ndarray,
    next_obs: np.ndarray,
    taken: np.ndarray,
    batch_rewards: np.ndarray,
    batch_dones: np.ndarray,
    batch_discounts: np.ndarray,
    terms: np.ndarray,
) -> None:
    """The minibatch of slots (rows[b], envs[b]) as SB3 gathers it, into flat float32 arrays.

    ``n_step`` = 0: ``ReplayBuffer._get_samples``: s, a, s′, r, done·(1 − timeout) and the discount γ.
    ``n_step`` = n: ``NStepReplayBuffer._get_samples``: the transition runs until the first done or timeout within
    n steps (inclusive), where row ``last_valid`` (the newest, pos − 1) counts as a timeout unless it is a done, as
    SB3 marks it for the duration of the call; r = Σ_k (r_k·γᵏ)·mask_k summed in NumPy's order, s′ and
    done·(1 − timeout) of the last step, discount ``target_discounts[steps taken]``. The discount tables are
    NumPy's own ``γ ** arange`` (float32 powers), so that they are bit for bit the buffer's.
    """
    zero = np.float32(0.0)
    one = np.float32(1.0)
    n_in = next_observations.shape[2]
    buffer_size = rewards.shape[0]
    for b in range(rows.shape[0]):
        i, e = rows[b], envs[b]
        for f in range(n_in):
            obs[b * n_in + f] = observations[i, e, f]
        taken[b] = actions[i, e, 0]
        if n_step == 0:
            last = i
            batch_rewards[b] = rewards[i, e]
            batch_dones[b] = dones[i, e] * (one - timeouts[i, e])
            batch_discounts[b] = np.float32(gamma)
        else:
            end = n_step - 1  # index of the last step taken: the first done or timeout, else n − 1
            for k in range(n_step):
                j = (i + k) % buffer_size
                if dones[j, e] != zero or timeouts[j, e] != zero or j == last_valid:
                    end = k
                    break
            for k in range(n_step):
                terms[k] = rewards[(i + k) % buffer_size, e] * reward_discounts[k] * (one if k <= end else zero)
            batch_rewards[b] = _pairwise_sum(terms, 0, n_step)
            last = (i + end) % buffer_size
            done = dones[last, e]
            timeout = timeouts[last, e]
            if last == last_valid:  # SB3's temporary mark: timeout or not done
                timeout = one if timeout != zero or done == zero else zero
            batch_dones[b] = done * (one - timeout)
            batch_discounts[b] = target_discounts[end + 1]
        for f in range(n_in):
            next_obs[b * n_in + f] = next_observations[last, e, f]


@jit
def train_steps(
    observations: np.ndarray,
    actions: np.ndarray,
    next_observations: np.ndarray,
    rewards: np.ndarray,
    dones: np.ndarray,
    timeouts: np.ndarray,
    batch_indices: np.ndarray,
    env_indices: np.ndarray,
    n_step: int,
    last_valid: int,
    reward_discounts: np.ndarray,
    target_discounts: np.ndarray,
    weights: np.ndarray,
    td_errors: np.ndarray,
    dims: np.ndarray,
    params: np.ndarray,
    target: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    steps: np.ndarray,
    gamma: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    max_grad_norm: float,
    huber: bool,
    double_q: bool,
    dueling: bool,
    lanes: np.ndarray,
    grad_fused: np.ndarray,
    below_fused: np.ndarray,
    vec_width: int,
) -> float:
    """``len(batch_indices)`` gradient steps of ``SoftUpdateDQN._train_general``; returns the sum of the losses.

    The replay memory arrays are SB3's ``ReplayBuffer`` fields ([position, env, ...]); minibatch k is the slots
    (batch_indices[k], env_indices[k]), gathered by :func:`gather_minibatch` (``n_step``, ``last_valid`` and the
    discount tables are its arguments: 0 for one-step transitions, else ``NStepReplayBuffer``'s returns).
    ``weights`` ([n_steps, batch], or empty for none): prioritized replay's importance-sampling weights; the loss
    is then mean_b(w_b·loss_b), as in ``SoftUpdateDQN.td_loss_and_errors``. ``td_errors`` ([n_steps, batch], or
    empty): receives δ = Q(s, a) − y of each step, computed before that step's update (the new priorities).
    ``params``/``target`` hold [W0, b0, W1, b1, ...] of the online and target Linear/ReLU stacks with widths
    ``dims``; ``exp_avg``/``exp_avg_sq`` Adam's moments in the same layout and ``steps`` Adam's step per tensor.
    All of them are updated in place. ``dueling``: the stack's last layer outputs [V, A] (``DuelingQNetwork``), one
    more than there are actions, and Q = V + A − mean A. ``max_grad_norm`` <= 0 means no clipping. The summation
    orders come from :func:`calibrate`: ``lanes`` ([n_layers, widest]) of each output of each layer's forward
    pass (MKL's lanes, 0 for FMA chains), ``grad_fused`` ([n_layers, widest]) of each row of each weight gradient
    and ``below_fused`` ([n_layers]) of each input gradient (1: FMA chains, 0: unfused chains).
    """
    zero = np.float32(0.0)
    one = np.float32(1.0)
    n_steps, batch = batch_indices.shape
    n_layers = dims.shape[0] - 1
    last = n_layers - 1
    n_in, n_outputs = dims[0], dims[n_layers]
    n_actions = n_outputs - 1 if dueling else n_outputs
    widest = 0
    for width in dims:
        widest = max(widest, width)
    weight_offsets, bias_offsets = _layer_offsets(dims)
    n_params = params.shape[0]
    # Scratch, allocated once per call (a few hundred nanoseconds)
    grads = np.empty(n_params, np.float32)
    online_t = np.empty(n_params, np.float32)  # Wᵀ of every layer at W's offset
    target_t = np.empty(n_params, np.float32)
    inputs = [np.empty(batch * dims[layer], np.float32) for layer in range(n_layers)]  # of each Linear, kept
    next_obs = np.empty(batch * n_in, np.float32)
    outputs = np.empty(batch * n_outputs, np.float32)  # of the last layer: Q, or the dueling heads [V, A]
    q_values = np.empty(batch * n_actions, np.float32) if dueling else outputs
    next_q = np.empty(batch * n_actions, np.float32)
    ping = np.empty(batch * widest, np.float32)
    pong = np.empty(batch * widest, np.float32)
    scratch = np.empty((2 * widest + 16) * max(batch, widest), np.float32)
    idx = np.empty(max(batch, widest), np.int64)
    taken = np.empty(batch, np.int64)
    next_actions = np.empty(batch, np.int64)
    td_targets = np.empty(batch, np.float32)
    batch_rewards = np.empty(batch, np.float32)
    batch_dones = np.empty(batch, np.float32)
    batch_discounts = np.empty(batch, np.float32)
    terms = np.empty(max(n_step, 1), np.float32)
    norms = np.empty(2 * n_layers, np.float32)
    weighted = weights.shape[0] > 0
    record_errors = td_errors.shape[0] > 0
    # The target network does not change between the gradient steps of one call (Polyak comes after)
    _transpose_weights(target, dims, weight_offsets, target_t)
    loss_sum = 0.0
    for k in range(n_steps):
        # -- minibatch: the replay buffer's own gather (one-step or n-step)
        gather_minibatch(
            observations,
            actions,
            next_observations,
            rewards,
            dones,
            timeouts,
            batch_indices[k],
            env_indices[k],
            n_step,
            last_valid,
            reward_discounts,
            target_discounts,
            gamma,
            inputs[0],
            next_obs,
            taken,
            batch_rewards,
            batch_dones,
            batch_discounts,
            terms,
        )
        _transpose_weights(params, dims, weight_offsets, online_t)

        # -- TD target y = r + (1 − done)·γ·max_a′ Q̂(s′, a′), or Q̂(s′, argmax_a′ Q(s′, a′)) for Double DQN, with
        #    the sample's own discount (γⁿ, shorter at an episode end) for n-step returns; only terminations stop
        #    bootstrapping, not time limits
        if double_q:
            q = _q_values(
                params, online_t, dims, weight_offsets, bias_offsets, lanes, next_obs, batch, ping, pong, scratch, idx
            )
            if dueling:
                _dueling_q(q, batch, n_actions, next_q)
                q = next_q
            for b in range(batch):  # argmax: the first maximum, as torch's
                best = 0
                for a in range(1, n_actions):
                    if q[b * n_actions + a] > q[b * n_actions + best]:
                        best = a
                next_actions[b] = best
        q = _q_values(
            target, target_t, dims, weight_offsets, bias_offsets, lanes, next_obs, batch, ping, pong, scratch, idx
        )
        if dueling:
            _dueling_q(q, batch, n_actions, next_q)
            q = next_q
        for b in range(batch):
            if double_q:
                next_value = q[b * n_actions + next_actions[b]]
            else:
                next_value = q[b * n_actions]
                for a in range(1, n_actions):
                    next_value = max(next_value, q[b * n_actions + a])
            td_targets[b] = batch_rewards[b] + (one - batch_dones[b]) * batch_discounts[b] * next_value

        # -- forward pass on s, keeping every Linear layer's input for the backward pass
        for layer in range(n_layers):
            _linear(
                inputs[layer],
                batch,
                dims[layer],
                dims[layer + 1],
                params,
                online_t,
                weight_offsets[layer],
                bias_offsets[layer],
                layer < last,
                lanes[layer],
                inputs[layer + 1] if layer < last else outputs,
                scratch,
                idx,
            )
        if dueling:
            _dueling_q(outputs, batch, n_actions, q_values)

        # -- loss on Q(s, a) − y and ∂loss/∂Q(s, a), as torch's mse_loss / smooth_l1_loss (β = 1) and their backward:
        #    mean reduction: (2/B)·e, or (1/B)·e clamped to ±1/B; weighted mean(w·loss): the mean's 1/B times w
        #    reaches the unreduced loss's backward as its grad_output g, which gives (2·e)·g, or e·g clamped to ±g
        delta = ping  # ∂L/∂Q ([batch, n_actions]): one non-zero per row, the taken action
        delta[: batch * n_actions] = zero
        norm = np.float32(1.0 / batch) if huber else np.float32(2.0 / batch)
        inverse_batch = one / np.float32(batch)  # MeanBackward: grad / numel, in float32
        loss = 0.0
        for b in range(batch):
            error = q_values[b * n_actions + taken[b]] - td_targets[b]
            if record_errors:
                td_errors[k, b] = error
            if huber:
                if error <= -one or error >= one:
                    sample_loss = abs(float(error)) - 0.5
                else:
                    sample_loss = 0.5 * float(error) * float(error)
            else:
                sample_loss = float(error) * float(error)
            if weighted:
                g = weights[k, b] * inverse_batch
                loss += float(weights[k, b]) * sample_loss
                if not huber:
                    gradient = (np.float32(2.0) * error) * g
                elif error <= -one:
                    gradient = -g
                elif error >= one:
                    gradient = g
                else:
                    gradient = error * g
            else:
                loss += sample_loss
                if not huber:
                    gradient = norm * error
                elif error <= -one:
                    gradient = -norm
                elif error >= one:
                    gradient = norm
                else:
                    gradient = norm * error
            delta[b * n_actions + taken[b]] = gradient
        loss_sum += float(np.float32(loss / batch))
        if dueling:
            # back through Q = V + A − mean A, as autograd: ∂L/∂V = Σ_a ∂L/∂Q_a, ∂L/∂A_j = ∂L/∂Q_j + (−Σ_a ∂L/∂Q_a)/n;
            # each row of ∂L/∂Q has one non-zero, g, so the sums are g exactly (rows rewritten back to front in place)
            count = np.float32(n_actions)
            for b in range(batch - 1, -1, -1):
                g = delta[b * n_actions + taken[b]]
                share = -g / count
                for a in range(n_actions - 1, -1, -1):
                    delta[b * n_outputs + 1 + a] = (g if a == taken[b] else zero) + share
                delta[b * n_outputs] = g

        # -- backward pass, layer by layer: ∂L/∂W = δᵀ·a, ∂L/∂b = Σ_batch δ, δ below = (δ·W) where a > 0
        below = pong
        for layer in range(last, -1, -1):
            n_out, n_prev = dims[layer + 1], dims[layer]
            layer_in = inputs[layer]
            _weight_grad(
                delta, n_out, layer_in, n_prev, batch, grad_fused[layer], grads, weight_offsets[layer], scratch, idx
            )
            bias_start = bias_offsets[layer]
            _column_sums(
                delta[: batch * n_out].reshape((batch, n_out)), grads[bias_start : bias_start + n_out], vec_width
            )
            if layer > 0:
                fused = below_fused[layer] == 1
                _input_grad(delta, n_out, params, weight_offsets[layer], layer_in, n_prev, batch, fused, below, idx)
                delta, below = below, delta

        # -- clip_grad_norm_: scale by min(1, max_norm / (‖(‖g_t‖)_t‖ + 1e-6)), even when that is 1
        if max_grad_norm > 0.0:
            for t in range(2 * n_layers):
                start = weight_offsets[t // 2] if t % 2 == 0 else bias_offsets[t // 2]
                size = dims[t // 2 + 1] * (dims[t // 2] if t % 2 == 0 else 1)
                norms[t] = _norm(grads[start : start + size], vec_width)
            total = _norm(norms, vec_width)
            coeff = one / (total + np.float32(1e-6)) * np.float32(max_grad_norm)
            if coeff > one:
                coeff = one
            for d in range(n_params):
                grads[d] = grads[d] * coeff

        # -- Adam, tensor by tensor as the fused kernel (each has its own step count)
        for t in range(2 * n_layers):
            start = weight_offsets[t // 2] if t % 2 == 0 else bias_offsets[t // 2]
            end = start + dims[t // 2 + 1] * (dims[t // 2] if t % 2 == 0 else 1)
            steps[t] += one
            _adam(
                params[start:end],
                grads[start:end],
                exp_avg[start:end],
                exp_avg_sq[start:end],
                float(steps[t]),
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                vec_width,
            )
    return loss_sum


@jit
def greedy_actions(params: np.ndarray, dims: np.ndarray, observations: np.ndarray, dueling: bool) -> np.ndarray:
    """argmax_a Q(s, a) for a few observations (the first maximum, as torch's ``argmax``).

    ``dueling``: the last layer's outputs are [V, A], combined into Q as :func:`_dueling_q` does.

    For one to a few rows, transposing the weights would cost more than it saves: each output is a scalar FMA
    chain over the inputs, four outputs at a time so that the chains overlap.
    """
    zero = np.float32(0.0)
    n_layers = dims.shape[0] - 1
    weight_offsets, bias_offsets = _layer_offsets(dims)
    batch = observations.shape[0]
    result = np.empty(batch, np.int64)
    widest = 0
    for width in dims:
        widest = max(widest, width)
    x = np.empty(widest, np.float32)
    y = np.empty(widest, np.float32)
    for b in range(batch):
        for f in range(dims[0]):
            x[f] = observations[b, f]
        for layer in range(n_layers):
            n_out, n_prev = dims[layer + 1], dims[layer]
            w = weight_offsets[layer]
            j = 0
            while j < n_out:
                rows = min(4, n_out - j)
                a0 = a1 = a2 = a3 = zero
                r0 = w + j * n_prev
                r1 = r0 + n_prev * min(1, rows - 1)  # rows past the last are computed again and dropped
                r2 = r0 + n_prev * min(2, rows - 1)
                r3 = r0 + n_prev * min(3, rows - 1)
                for i in range(n_prev):
                    xi = x[i]
                    a0 = fma32(xi, params[r0 + i], a0)
                    a1 = fma32(xi, params[r1 + i], a1)
                    a2 = fma32(xi, params[r2 + i], a2)
                    a3 = fma32(xi, params[r3 + i], a3)
                for r, acc in enumerate((a0, a1, a2, a3)):
                    if r < rows:
                        value = acc + params[bias_offsets[layer] + j + r]
                        if layer < n_layers - 1 and value < zero:
                            value = zero
                        y[j + r] = value
                j += rows
            x, y = y, x
        if dueling:
            n_actions = dims[n_layers] - 1
            _dueling_q(x, 1, n_actions, y)
            x, y = y, x
        else:
            n_actions = dims[n_layers]
        best = 0
        for a in range(1, n_actions):
            if x[a] > x[best]:
                best = a
        result[b] = best
    return result


# ---------------------------------------------------------------------------------------------------------------
# Replay memory upkeep for the lean rollout
# ---------------------------------------------------------------------------------------------------------------
@jit
def set_leaves(tree: np.ndarray, capacity: int, depth: int, first_leaf: int, count: int, value: float) -> None:
    """Set ``count`` consecutive leaves of a ``SumTree``'s node array to ``value`` and recompute their ancestors.

    The tree ``SumTree.update(leaves, [value] * count)`` leaves behind: there, as here, the leaves are written
    first and then every ancestor, level by level, is recomputed as the float sum of its two children, so the
    result does not depend on the order. Here in one compiled call instead of a dozen NumPy ones: the lean rollout
    does this for every env step of prioritized replay (new transitions get the maximum priority).
    """
    low = capacity + first_leaf
    high = low + count - 1
    for node in range(low, high + 1):
        tree[node] = value
    for _ in range(depth):
        low >>= 1
        high >>= 1
        for parent in range(low, high + 1):
            tree[parent] = tree[2 * parent] + tree[2 * parent + 1]


# ---------------------------------------------------------------------------------------------------------------
# Calibration: which summation order this torch's BLAS uses for each product, found by asking it
# ---------------------------------------------------------------------------------------------------------------
LANE_CANDIDATES = (0, 4, 8, 2, 16)
_calibrated: dict[tuple[tuple[int, ...], int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_calibration_misses: dict[tuple[tuple[int, ...], int], list[str]] = {}


def calibrate(dims: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The summation orders (see :func:`train_steps`) under which the kernel reproduces torch's products bit for bit.

    MKL picks its kernel by shape and CPU, and they do not all sum alike: on an AMD EPYC with MKL 2024.2, x·Wᵀ
    sums blocks of 4 outputs in 4 lanes without FMAs and the 1-3 outputs left over in 8 lanes; δᵀ·a chains
    blocks of 4 rows with FMAs and the rows left over without, and with 8 inputs all rows without; the 64-wide
    products chain with FMAs. So each layer's forward pass, weight gradient and input gradient is computed once
    on random data by torch and by the kernel in each candidate order, and for each output of the forward pass,
    each row of the weight gradient and each input gradient as a whole the order that reproduces torch's result
    exactly is used (FMA chains if none does: then the two paths differ in the last bit of those sums, and
    :func:`calibration_misses` names them). Returns (lanes [n_layers, widest], grad_fused [n_layers, widest],
    below_fused [n_layers]); cached per shape and batch size.
    """
    key = (tuple(int(d) for d in dims), int(batch))
    if key in _calibrated:
        return _calibrated[key]
    n_layers = len(dims) - 1
    widest = max(int(d) for d in dims)
    lanes = np.zeros((n_layers, widest), dtype=np.int64)
    grad_fused = np.ones((n_layers, widest), dtype=np.int64)
    below_fused = np.ones(n_layers, dtype=np.int64)
    misses = []
    rng = np.random.default_rng(0)
    for layer in range(n_layers):
        n_in, n_out = int(dims[layer]), int(dims[layer + 1])
        x = rng.standard_normal((batch, n_in)).astype(np.float32)
        weight = rng.standard_normal((n_out, n_in)).astype(np.float32)
        delta = (rng.standard_normal((batch, n_out)) * (rng.random((batch, n_out)) < 0.5)).astype(np.float32)
        tx, tw, td = th.from_numpy(x), th.from_numpy(weight), th.from_numpy(delta)
        with th.no_grad():  # what autograd runs for nn.Linear: addmm, then δᵀ·a and δ·W
            forward = th.addmm(th.zeros(n_out), tx, tw.t()).numpy()
            grad, below = td.t().mm(tx).numpy(), td.mm(tw).numpy()
        all_fused, none_fused = np.ones(n_out, np.int64), np.zeros(n_out, np.int64)
        matched = np.zeros(n_out, dtype=bool)
        for candidate in LANE_CANDIDATES:
            if candidate > 0 and n_in % candidate != 0:
                continue
            result = probe_layer(x, weight, delta, np.full(n_out, candidate, np.int64), all_fused, True)[0]
            new = ~matched & np.all(result == forward, axis=0)
            lanes[layer, :n_out][new] = candidate
            matched |= new
            if matched.all():
                break
        layer_lanes = lanes[layer, :n_out]
        _, grad_f, below_f = probe_layer(x, weight, delta, layer_lanes, all_fused, True)
        _, grad_u, below_u = probe_layer(x, weight, delta, layer_lanes, none_fused, False)
        # unfused only where that, and not the FMA chain, reproduces torch
        rows_unfused = np.all(grad_u == grad, axis=1) & ~np.all(grad_f == grad, axis=1)
        grad_fused[layer, :n_out] = ~rows_unfused
        below_fused[layer] = not (np.array_equal(below_u, below) and not np.array_equal(below_f, below))
        # what the chosen orders still do not reproduce
        result, result_grad, result_below = probe_layer(
            x, weight, delta, layer_lanes, grad_fused[layer, :n_out], bool(below_fused[layer])
        )
        if not np.array_equal(result, forward):
            misses.append(
                f"layer {layer} forward, outputs {np.flatnonzero(np.any(result != forward, axis=0)).tolist()}"
            )
        if not np.array_equal(result_grad, grad):
            misses.append(
                f"layer {layer} weight gradient, rows {np.flatnonzero(np.any(result_grad != grad, axis=1)).tolist()}"
            )
        if layer > 0 and not np.array_equal(result_below, below):  # the first layer's is never computed
            misses.append(f"layer {layer} input gradient")
    _calibrated[key] = lanes, grad_fused, below_fused
    _calibration_misses[key] = misses
    return lanes, grad_fused, below_fused


def calibration_misses(dims: np.ndarray, batch: int) -> list[str]:
    """The products whose torch summation order :func:`calibrate` did not find (empty: the kernel is bit-exact)."""
    calibrate(dims, batch)
    return _calibration_misses[(tuple(int(d) for d in dims), int(batch))]


_dueling_checked: dict[int, bool] = {}


def dueling_mean_is_torchs(n_actions: int) -> bool:
    """Whether :func:`_dueling_q` reproduces ``DuelingQNetwork``'s combination bit for bit for ``n_actions``.

    Checked once per action count against torch on random heads; otherwise the fast path keeps its torch step.
    """
    if n_actions not in _dueling_checked:
        heads = th.from_numpy(np.random.default_rng(0).standard_normal((256, n_actions + 1)).astype(np.float32))
        value, advantages = heads[:, :1], heads[:, 1:]
        expected = (value + advantages - advantages.mean(dim=1, keepdim=True)).numpy()
        q = np.empty(256 * n_actions, np.float32)
        _dueling_q(heads.numpy().ravel(), 256, n_actions, q)
        _dueling_checked[n_actions] = bool(np.array_equal(q, expected.ravel()))
    return _dueling_checked[n_actions]


# ---------------------------------------------------------------------------------------------------------------
# Binding: flat buffers that the model's own tensors are views of
# ---------------------------------------------------------------------------------------------------------------
def _flat_buffer(tensors: list[th.Tensor]) -> tuple[th.Tensor, list[th.Tensor]]:
    """A flat float32 buffer holding ``tensors`` one after the other, and the views of it shaped like them.

    If the tensors already are exactly such views (a previous binding), their buffer is returned and nothing
    moves; otherwise a new buffer gets their values and the caller must put the returned views in their place.
    """
    first = tensors[0].detach()
    total = sum(t.numel() for t in tensors)
    storage = first.untyped_storage()
    offset = 0
    consecutive = first.dtype == th.float32 and storage.nbytes() == 4 * total
    for tensor in tensors:
        consecutive = (
            consecutive
            and tensor.dtype == th.float32
            and tensor.is_contiguous()
            and tensor.untyped_storage().data_ptr() == storage.data_ptr()
            and tensor.storage_offset() == offset
        )
        offset += tensor.numel()
    if consecutive:
        return first.as_strided((total,), (1,), 0), tensors
    flat = th.cat([t.detach().reshape(-1).to(th.float32) for t in tensors])
    views, offset = [], 0
    for tensor in tensors:
        views.append(flat[offset : offset + tensor.numel()].view(tensor.shape))
        offset += tensor.numel()
    return flat, views


def _linear_parameters(sequential: th.nn.Module) -> list[th.nn.Parameter]:
    """[W0, b0, W1, b1, ...] of a Linear/ReLU stack: the layout of the flat buffers."""
    return [p for layer in sequential if isinstance(layer, th.nn.Linear) for p in (layer.weight, layer.bias)]


class CompiledTrainer:
    """The fast path's gradient steps through :func:`train_steps`, on flat buffers that the model's tensors view.

    Binding makes the online and the target network's parameters views of one flat float32 buffer each
    (``param.data = flat[a:b].view_as(param)``: the Parameter objects, which the optimizer and the user hold, stay
    the same) and Adam's ``exp_avg``, ``exp_avg_sq`` and ``step`` tensors views of three more, placed in the
    optimizer's state as torch's first ``step()`` would create them. The kernel then updates the very memory that
    ``state_dict()``, ``save`` and the general path use, and the whole training state crosses into Numba as five
    arrays per call (with the replay memory's six, the minibatch indices, the discount tables, the weights and the
    TD errors: 19 arrays, a few µs of unboxing).

    ``load_state_dict`` on the optimizer replaces its state tensors, ``param.data = ...`` replaces storage:
    :meth:`ensure_bound`, called before every kernel call, checks that the bound tensors are still the ones in
    place (data pointers of the parameters, identity of the optimizer's state and its tensors: about a
    microsecond) and binds again, keeping the current values, when anything was replaced.
    The model's ``_polyak_pairs`` (the soft update's aliases) are re-pointed to the flat buffers as well: the
    old per-tensor aliases would otherwise keep updating storage the parameters no longer use.
    """

    def __init__(self, model: "SoftUpdateDQN") -> None:
        self.model = model
        self.vec_width = torch_vector_width()
        self.bindings = 0
        self._orders: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._discounts: dict[tuple[float, int], tuple[np.ndarray, np.ndarray]] = {}
        self.bind()

    @staticmethod
    def unsupported_reason(model: "SoftUpdateDQN") -> str | None:
        """Why the torch gradient step must be used for a model the fast path's allow-list accepted, or None."""
        if not HAS_NUMBA:
            return "numba is not installed"
        if not enabled():
            return f"{ENV_SWITCH}={os.environ.get(ENV_SWITCH)}"
        group = model.policy.optimizer.param_groups[0]
        if [id(p) for p in group["params"]] != [id(p) for p in _linear_parameters(model.policy.q_net.q_net)]:
            return "the optimizer's parameters are not exactly the Q-network's"
        buffer = model.replay_buffer
        if buffer.actions.ndim != 3 or buffer.actions.shape[2] != 1:
            return "actions stored with more than one component"
        if isinstance(model.policy.q_net, DuelingQNetwork) and not dueling_mean_is_torchs(int(model.action_space.n)):
            return f"a dueling mean over {model.action_space.n} actions, which torch sums in another order"
        return None

    @classmethod
    def for_model(cls, model: "SoftUpdateDQN") -> "CompiledTrainer | None":
        return cls(model) if cls.unsupported_reason(model) is None else None

    def bind(self) -> None:
        """(Re-)establish the flat buffers and the views of them; values are kept."""
        model = self.model
        optimizer = model.policy.optimizer
        online = _linear_parameters(model.policy.q_net.q_net)
        target = _linear_parameters(model.policy.q_net_target.q_net)
        linears = [layer for layer in model.policy.q_net.q_net if isinstance(layer, th.nn.Linear)]
        self.dims = np.array([linears[0].in_features] + [layer.out_features for layer in linears], dtype=np.int64)
        self.dueling = isinstance(model.policy.q_net, DuelingQNetwork)

        self.flat_online, views = _flat_buffer(online)
        for param, view in zip(online, views, strict=True):
            if view is not param:
                param.data = view
        self.flat_target, views = _flat_buffer(target)
        for param, view in zip(target, views, strict=True):
            if view is not param:
                param.data = view
        # The soft update lerps these aliases: one flat pair instead of one pair per tensor
        model._polyak_pairs = ([self.flat_online], [self.flat_target])

        states = []
        for param in online:
            state = optimizer.state[param]
            if not {"step", "exp_avg", "exp_avg_sq"} <= state.keys():  # what Adam(fused=True)'s first step creates
                state.clear()
                state["step"] = th.zeros((), dtype=th.float32)
                state["exp_avg"] = th.zeros_like(param, memory_format=th.preserve_format)
                state["exp_avg_sq"] = th.zeros_like(param, memory_format=th.preserve_format)
            states.append(state)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            flat, views = _flat_buffer([state[key] for state in states])
            for state, view in zip(states, views, strict=True):
                state[key] = view
            setattr(self, f"flat_{key}", flat)

        self.optimizer = optimizer
        self.online, self.target = online, target
        self.arrays = tuple(
            t.numpy() for t in (self.flat_online, self.flat_target, self.flat_exp_avg, self.flat_exp_avg_sq)
        )
        self.steps = self.flat_step.numpy()
        # What ensure_bound compares: the parameters' data pointers, the optimizer's state container, its
        # per-parameter dicts in order, and the tensors in them
        self._parameters = online + target
        self._pointers = [p.data_ptr() for p in self._parameters]
        self._state = optimizer.state
        self._state_dicts = states
        self._state_tensors = [(s["exp_avg"], s["exp_avg_sq"], s["step"]) for s in states]
        self.bindings += 1

    def is_bound(self) -> bool:
        """Whether the model and its optimizer still hold exactly the bound tensors (about a microsecond)."""
        optimizer = self.model.policy.optimizer
        if optimizer is not self.optimizer or optimizer.state is not self._state:
            return False  # e.g. optimizer.load_state_dict, which replaces the state container
        for param, pointer in zip(self._parameters, self._pointers, strict=True):
            if param.data_ptr() != pointer:  # e.g. param.data = ..., or module.to() with a copy
                return False
        if len(self._state) != len(self._state_dicts):
            return False
        for state, bound, tensors in zip(self._state.values(), self._state_dicts, self._state_tensors, strict=False):
            if state is not bound:
                return False
            exp_avg, exp_avg_sq, step = tensors
            if state.get("exp_avg") is not exp_avg or state.get("exp_avg_sq") is not exp_avg_sq:
                return False
            if state.get("step") is not step:
                return False
        return True

    def ensure_bound(self) -> bool:
        """Bind again if any bound tensor was replaced since; True if that happened."""
        if self.is_bound():
            return False
        self.bind()
        return True

    def train(
        self,
        batch_indices: np.ndarray,
        env_indices: np.ndarray,
        weights: np.ndarray | None = None,
        td_errors: np.ndarray | None = None,
    ) -> float:
        """Gradient steps on the minibatches (batch_indices[k], env_indices[k]); the sum of their losses.

        The buffer decides the gather: n-step returns for an ``NStepReplayBuffer`` (with its own n and γ), the
        plain transition otherwise. ``weights`` ([steps, batch] float32): importance-sampling weights of the
        loss; ``td_errors`` ([steps, batch] float32): filled with each step's δ = Q(s, a) − y.
        """
        model = self.model
        buffer = model.replay_buffer
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        params, target, exp_avg, exp_avg_sq = self.arrays
        if isinstance(buffer, NStepReplayBuffer):
            n_step = int(buffer.n_steps)
            reward_discounts, target_discounts = self._discount_tables(float(buffer.gamma), n_step)
            # NStepReplayBuffer treats row pos − 1 (Python's index -1 when pos is 0) as the end of its data
            last_valid = (buffer.pos - 1) % buffer.buffer_size
        else:
            n_step, last_valid = 0, -1
            reward_discounts = target_discounts = _NO_ARRAY_1D
        return train_steps(
            buffer.observations,
            buffer.actions,
            buffer.next_observations,
            buffer.rewards,
            buffer.dones,
            buffer.timeouts,
            batch_indices,
            env_indices,
            n_step,
            last_valid,
            reward_discounts,
            target_discounts,
            _NO_ARRAY_2D if weights is None else weights,
            _NO_ARRAY_2D if td_errors is None else td_errors,
            self.dims,
            params,
            target,
            exp_avg,
            exp_avg_sq,
            self.steps,
            float(model.gamma),
            float(group["lr"]),
            float(beta1),
            float(beta2),
            float(group["eps"]),
            float(group["weight_decay"]),
            -1.0 if model.max_grad_norm is None else float(model.max_grad_norm),
            model.loss == "huber",
            bool(model.double_q),
            self.dueling,
            *self.summation_orders(batch_indices.shape[1]),
            self.vec_width,
        )

    def _discount_tables(self, gamma: float, n_step: int) -> tuple[np.ndarray, np.ndarray]:
        """γᵏ for the rewards (k < n) and for the bootstrap (k ≤ n), by NumPy's float32 power as the buffer takes them.

        ``NStepReplayBuffer`` computes ``gamma ** arange(n, dtype=float32)`` and ``gamma ** steps.astype(float32)``:
        the same float32 powers of the same exponents, element by element, as these tables hold.
        """
        key = (gamma, n_step)
        tables = self._discounts.get(key)
        if tables is None:
            tables = self._discounts[key] = (
                np.ascontiguousarray(gamma ** np.arange(n_step, dtype=np.float32), dtype=np.float32),
                np.ascontiguousarray(gamma ** np.arange(n_step + 1, dtype=np.float32), dtype=np.float32),
            )
        return tables

    def summation_orders(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kernel's summation orders for this network and minibatch size (:func:`calibrate`, looked up once)."""
        orders = self._orders.get(batch)
        if orders is None:
            orders = self._orders[batch] = calibrate(self.dims, batch)
        return orders

    def greedy_actions(self, observations: np.ndarray) -> np.ndarray:
        """argmax_a Q(s, a) for a batch of observations, on the bound online weights."""
        return greedy_actions(self.arrays[0], self.dims, observations, self.dueling)
