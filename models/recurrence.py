"""The Elman recurrence over time, with a hand-written backward pass.

Given the projected inputs a_t = x_t · W_xh + b_h for every step (one large
matrix product, done by the caller), `elman_scan` runs

    h_t = g(a_t + h_{t-1} · W_hh)

Differentiating a `lax.scan` with JAX's autodiff makes the backward pass
compute dW_hh as one small outer product per step and keep extra residuals.
The VJP here instead saves only the hidden states in the forward scan, runs
just the delta recurrence in the reverse scan,

    d_t = (dL/dy_t + dL/dh_t) ⊙ g'(y_t),    dL/dh_{t-1} = d_t · W_hhᵀ

and then forms dW_hh = Σ_t h_{t-1}ᵀ d_t as one large matrix product over all
steps at once. On a 2-core CPU that halves the time of a training step of
the layer (benchmarks/rnn_layer.py); on GPU/TPU it is the same arithmetic
with fewer, larger kernels. g' is written in terms of the output y = g(a),
so the pre-activations need not be kept. Activations given as callables,
whose derivative is unknown here, use JAX's autodiff of the plain scan.

The scans run time-major: XLA slices the leading axis of a scan's inputs
for free, and the two transposes cost less than strided slicing per step.

On CPU, float32 scans with a named activation can run both scans, and the
dW_hh product, in the C++ kernels of models/elman_kernel.py instead: they
split the batch over the cores (XLA runs a scan's steps on one) and read
either layout, so batch-major callers need no transposes. Which of the two
runs a shape is timed once per machine (models/kernel_choice.py). Elsewhere,
or where the kernels cannot be built, the XLA scans below.

With the batch split over devices (data-parallel training: a jitted step
whose inputs are split along a mesh axis, the weights replicated), each
device runs the recurrence on its own rows and only dW_hh is added up
across devices. The kernels, and dW_hh's product of flattened rows, are
wrapped for that (_on_own_rows): XLA's partitioner learns the split from
the inputs' shardings, with no mesh context needed from the caller. The
choice between kernels and XLA's scan is made there, by the rows each
device has.
"""

from collections.abc import Callable
import functools
import math

import jax
from jax import numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from models import elman_kernel
from models import kernel_choice

ACTIVATIONS = {
    'tanh': jnp.tanh,
    'relu': jax.nn.relu,
    'sigmoid': jax.nn.sigmoid,
    'identity': lambda x: x,
}

# g'(a) as a function of y = g(a), for each named activation.
_DERIVATIVES_FROM_OUTPUT = {
    'tanh': lambda y: 1.0 - y * y,
    'relu': lambda y: (y > 0).astype(y.dtype),
    'sigmoid': lambda y: y * (1.0 - y),
    'identity': jnp.ones_like,
}


def check_activation(activation: str | Callable) -> None:
  """Raises ValueError unless `activation` is a callable or a known name."""
  if not (callable(activation) or activation in ACTIVATIONS):
    raise ValueError(f'Unknown activation {activation!r}; '
                     f'choose one of {sorted(ACTIVATIONS)} or pass a callable.')


def elman_scan(x_proj: jax.Array, mask: jax.Array | None, h0: jax.Array,
               w_hh: jax.Array, activation: str | Callable = 'tanh'
               ) -> tuple[jax.Array, jax.Array]:
  """Runs the Elman recurrence over time, given the projected inputs.

  Args:
    x_proj: f32[batch, time, units], x_t · W_xh + b_h for every step.
    mask: f32[batch, time] or None; 0 marks padding, where the state is
      carried unchanged and the output is zero.
    h0: f32[batch, units], the state before the first step.
    w_hh: f32[units, units], the recurrent weights shared by all steps.
    activation: a name in ACTIVATIONS (hand-written gradient), or a callable
      applied elementwise (JAX's autodiff).

  Returns:
    (outputs f32[batch, time, units], final state f32[batch, units]).
  """
  def xla_scan(x_proj, mask, h0, w_hh):
    outputs, h_last = _xla_time_major(
        activation, jnp.swapaxes(x_proj, 0, 1),
        None if mask is None else jnp.swapaxes(mask, 0, 1), h0, w_hh)
    return jnp.swapaxes(outputs, 0, 1), h_last

  def kernel_scan(x_proj, mask, h0, w_hh):
    return _kernel_scan(activation, True, x_proj, mask, h0, w_hh)

  mask = _as_mask(mask, x_proj)
  h0 = h0.astype(x_proj.dtype)  # the carry keeps one dtype through the scan
  if not _use_kernels(activation, x_proj, batch=x_proj.shape[0]):
    return xla_scan(x_proj, mask, h0, w_hh)
  return kernels_on_cpu(kernel_scan, xla_scan, x_proj, mask, h0,
                        w_hh.astype(x_proj.dtype))


def kernels_on_cpu(kernels: Callable, xla: Callable, *args):
  """kernels(*args) where XLA compiles for a CPU, xla(*args) elsewhere.

  The kernels are CPU custom calls: a GPU or TPU cannot run them, and
  jax.export cannot serialize them. Chosen per platform from one trace
  (lax.platform_dependent), a function traced on a CPU host still lowers
  for 'cuda' and 'tpu' with XLA's scan alone, and compiled for the CPU it
  holds only the kernels' branch. An artifact for several platforms,
  the CPU among them, is traced under kernel_choice.portable().
  """
  return jax.lax.platform_dependent(*args, cpu=kernels, default=xla)


def input_projection(x: jax.Array, w_xh: jax.Array, b_h: jax.Array
                     ) -> jax.Array:
  """x · W_xh + b_h for every row of f32[..., features] x.

  Its weight gradient Σ_i x_iᵀ d_i sums over every step of every sequence
  into a small result, a product that XLA:CPU runs at about one core's
  speed. Where the kernels can run, elman_kernel's long-sum product
  computes it instead, split over the cores (each device summing its own
  rows, as for dW_hh).
  """
  # kernels_usable() first: under portable() the shapes may be symbolic.
  if (kernel_choice.kernels_usable() and x.ndim >= 2
      and x.dtype == jnp.float32 and w_xh.dtype == jnp.float32
      and x.size > 0):
    return kernels_on_cpu(_kernel_projection, _projection, x, w_xh, b_h)
  return _projection(x, w_xh, b_h)


def _projection(x, w_xh, b_h):
  return x @ w_xh + b_h


@jax.custom_vjp
def _kernel_projection(x, w_xh, b_h):
  return x @ w_xh + b_h


def _kernel_projection_forward(x, w_xh, b_h):
  return x @ w_xh + b_h, (x, w_xh)


def _kernel_projection_backward(residuals, d_out):
  x, w_xh = residuals
  d_w, = _input_weight_gradient_per_device(x.ndim)(x, d_out)
  return (d_out @ w_xh.T, d_w,
          d_out.sum(axis=tuple(range(d_out.ndim - 1))))


_kernel_projection.defvjp(_kernel_projection_forward,
                          _kernel_projection_backward)


@functools.cache
def _input_weight_gradient_per_device(ndim):
  """(Σ_i x_iᵀ d_i,) over a device's rows of x [rows, ..., features] and d
  [rows, ..., units]."""
  def local(x, d_out):
    return (elman_kernel.transposed_product(
        x.reshape(-1, x.shape[-1]), d_out.reshape(-1, d_out.shape[-1]), 0),)
  rows = ' '.join(['b'] + [f't{i}' for i in range(ndim - 2)])
  return _on_own_rows(local, f'{rows} i, {rows} u -> i u')


def elman_scan_time_major(x_proj: jax.Array, mask: jax.Array | None,
                          h0: jax.Array, w_hh: jax.Array,
                          activation: str | Callable = 'tanh'
                          ) -> tuple[jax.Array, jax.Array]:
  """`elman_scan` on f32[time, batch, units] inputs and outputs.

  The mask, if any, is [time, batch]; any nonzero value marks a real step.
  """
  check_activation(activation)
  mask = _as_mask(mask, x_proj)
  h0 = h0.astype(x_proj.dtype)  # the carry keeps one dtype through the scan
  if not _use_kernels(activation, x_proj, batch=x_proj.shape[1]):
    return _xla_time_major(activation, x_proj, mask, h0, w_hh)
  return kernels_on_cpu(
      functools.partial(_kernel_scan, activation, False),
      functools.partial(_xla_time_major, activation), x_proj, mask, h0,
      w_hh.astype(x_proj.dtype))


def _xla_time_major(activation, x_proj, mask, h0, w_hh):
  """The recurrence in XLA's scan, time-major: with the hand-written VJP
  for a named activation, JAX's autodiff for a callable."""
  if callable(activation):
    return _scan(activation, x_proj, mask, h0, w_hh)[0]
  return _fast_scan(activation, x_proj, mask, h0, w_hh)


def _as_mask(mask, x_proj):
  """1 at real steps (any nonzero value) and 0 at padding, or None."""
  return None if mask is None else (mask != 0).astype(x_proj.dtype)


def _use_kernels(activation, x_proj, batch, pass_='training'):
  """Whether the kernels run `pass_` ('training': forward and backward, or
  'forward' alone): `batch` is all the rows, which may be split over
  devices; each device then chooses again by its own rows (_local_states),
  whose decisions are made here, while tracing, and not later, in XLA's
  partitioner."""
  check_activation(activation)
  units = x_proj.shape[-1]
  # kernels_usable() first: under portable() the shapes may be symbolic.
  if not (kernel_choice.kernels_usable() and not callable(activation)
          and x_proj.dtype == jnp.float32 and min(x_proj.shape) > 0
          and kernel_choice.use_kernels(batch, units, pass_=pass_)):
    return False
  for devices in range(2, jax.device_count() + 1):
    if batch % devices == 0:
      kernel_choice.use_kernels(batch // devices, units, pass_=pass_)
  return True


def _scan(g, x_proj, mask, h0, w_hh):
  """The forward recurrence.

  Returns:
    ((outputs [time, batch, units], final state [batch, units]), states
    [time, batch, units]): h_t after every step. Unmasked, the states are
    the outputs, and one copy is kept.
  """
  def step(h, inputs):
    a_t, m_t = inputs
    y = g(a_t + h @ w_hh)
    if m_t is None:
      return y, y
    real = m_t[:, None] > 0
    h_next = jnp.where(real, y, h)
    return h_next, (jnp.where(real, y, 0.0), h_next)

  h_last, stacked = jax.lax.scan(step, h0, (x_proj, mask))
  outputs, states = stacked if mask is not None else (stacked, stacked)
  return (outputs, h_last), states


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fast_scan(activation, x_proj, mask, h0, w_hh):
  """(outputs [time, batch, units], final state), with the VJP below.

  Not differentiated (inference), this runs instead: in the kernels where
  they were timed faster for the forward pass alone.
  """
  def xla_scan(x_proj, mask, h0, w_hh):
    return _scan(ACTIVATIONS[activation], x_proj, mask, h0, w_hh)[0]

  def kernel_scan(x_proj, mask, h0, w_hh):
    return _kernel_scan_forward(activation, False, x_proj, mask, h0, w_hh,
                                'forward')[0]

  if not _use_kernels(activation, x_proj, x_proj.shape[1], 'forward'):
    return xla_scan(x_proj, mask, h0, w_hh)
  return kernels_on_cpu(kernel_scan, xla_scan, x_proj, mask, h0, w_hh)


def _fast_scan_forward(activation, x_proj, mask, h0, w_hh):
  """Runs the recurrence; keeps the states, which the backward pass needs."""
  results, states = _scan(ACTIVATIONS[activation], x_proj, mask, h0, w_hh)
  return results, (states, mask, h0, w_hh)


def _fast_scan_backward(activation, residuals, cotangents):
  """Cotangents of (x_proj, mask, h0, w_hh) from those of the results."""
  states, mask, h0, w_hh = residuals
  d_pre, d_h0, d_w_hh = _xla_deltas(activation, *cotangents, states, mask,
                                    h0, w_hh)
  return d_pre, None, d_h0, d_w_hh


def _xla_deltas(activation, d_outputs, d_h_last, states, mask, h0, w_hh):
  """The reverse delta scan in XLA, on time-major arrays: (d_pre, d_h0,
  dW_hh)."""
  step = _delta_step(_DERIVATIVES_FROM_OUTPUT[activation], w_hh.T)
  d_h0, d_pre = jax.lax.scan(step, d_h_last, (d_outputs, states, mask),
                             reverse=True)
  return d_pre, d_h0, _recurrent_weight_gradient(h0, states, d_pre)


def _delta_step(derivative, w_hh_t):
  """The reverse step: (dL/dh_t, inputs at t) -> (dL/dh_{t-1}, d_t)."""
  def step(d_h, inputs):
    d_y, h, m_t = inputs
    d_new = d_y + d_h
    if m_t is not None:  # padding: no output, h_{t-1} passed straight on
      d_new = d_new * m_t[:, None]
    # At real steps the state is g's output; at padding d_new is 0.
    d_pre = d_new * derivative(h)
    d_h_prev = d_pre @ w_hh_t
    if m_t is not None:
      d_h_prev = d_h_prev + d_h * (1.0 - m_t[:, None])
    return d_h_prev, d_pre
  return step


def _recurrent_weight_gradient(h0, states, d_pre):
  """dW_hh = Σ_t h_{t-1}ᵀ d_t of time-major arrays, each device summing
  its own rows (see _on_own_rows)."""
  return _weight_gradient_per_device()(h0, states, d_pre)[0]


def _local_weight_gradient(h0, states, d_pre):
  """(dW_hh,) of one device's rows, as one product over all steps but the
  first.

  Flattened to [time · batch, units], the pairs (h_{t-1}, d_t) are rows i
  and i + batch. XLA:CPU runs this product of flat arrays twice as fast as
  one contracting time and batch as two axes. Flattening a batch split
  over devices would make XLA gather it, hence the split by rows around it.
  """
  batch, units = h0.shape
  flat_states, flat_d = states.reshape(-1, units), d_pre.reshape(-1, units)
  return (flat_states[:-batch].T @ flat_d[batch:] + h0.T @ d_pre[0],)


_fast_scan.defvjp(_fast_scan_forward, _fast_scan_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _kernel_scan(activation, batch_major, x_proj, mask, h0, w_hh):
  """`_fast_scan` with both scans in elman_kernel's CPU kernels, on
  [batch, time, ...] inputs and outputs if batch_major, else time-major.

  Not differentiated (inference), this runs instead: in XLA's scan where it
  was timed faster for the forward pass alone (one row, or a few).
  """
  if _use_kernels(activation, x_proj, x_proj.shape[0 if batch_major else 1],
                  'forward'):
    return _kernel_scan_forward(activation, batch_major, x_proj, mask, h0,
                                w_hh, 'forward')[0]
  swap = _to_time_major(batch_major)
  (outputs, h_last), _ = _scan(ACTIVATIONS[activation], swap(x_proj),
                               None if mask is None else swap(mask), h0, w_hh)
  return swap(outputs), h_last


def _kernel_scan_forward(activation, batch_major, x_proj, mask, h0, w_hh,
                         pass_='training'):
  real = jnp.ones(x_proj.shape[:2], x_proj.dtype) if mask is None else mask
  states, = _states_per_device(activation, batch_major, pass_)(x_proj, real,
                                                                h0, w_hh)
  outputs = states if mask is None else jnp.where(real[..., None] > 0,
                                                  states, 0.0)
  h_last = states[:, -1] if batch_major else states[-1]
  return (outputs, h_last), (states, real, h0, w_hh)


def _kernel_scan_backward(activation, batch_major, residuals, cotangents):
  states, real, h0, w_hh = residuals
  d_outputs, d_h_last = cotangents
  d_pre, d_h0, d_w_hh = _deltas_per_device(activation, batch_major)(
      d_outputs, d_h_last, states, real, h0, w_hh)
  return d_pre, None, d_h0, d_w_hh


_kernel_scan.defvjp(_kernel_scan_forward, _kernel_scan_backward)


# XLA's partitioner cannot split the kernels (custom calls) or a product of
# [time · batch] rows by the batch: given a batch split over devices, it
# would gather the whole batch onto every device and compute all of it
# there. Each is therefore wrapped so that every device runs it on its own
# rows (_on_own_rows). 'b' marks the batch axis of each argument and result;
# dW_hh has none: each device sums its own rows' part, and the devices add
# theirs up.

def _layout(batch_major, terms):
  """Einsum-like terms with 'b t' (batch-major) or 't b' (time-major)."""
  return terms if batch_major else terms.replace('b t', 't b')


@functools.cache
def _weight_gradient_per_device():
  return _on_own_rows(_local_weight_gradient, 'b u, t b u, t b u -> u v')


@functools.cache
def _states_per_device(activation, batch_major, pass_):
  return _on_own_rows(
      functools.partial(_local_states, activation, batch_major, pass_),
      _layout(batch_major, 'b t u, b t, b u, u v -> b t u'))


@functools.cache
def _deltas_per_device(activation, batch_major):
  return _on_own_rows(
      functools.partial(_local_deltas, activation, batch_major),
      _layout(batch_major,
              'b t u, b u, b t u, b t, b u, u v -> b t u, b u, u v'))


def _local_states(activation, batch_major, pass_, x_proj, real, h0, w_hh):
  """(h_t for every t,) of one device's rows: in the kernels, which split
  them over the cores, or in XLA's scan, whichever kernel_choice found
  faster for that many rows and `pass_`. (Under a batch split this runs in
  XLA's partitioner, where nothing may be timed: _use_kernels decided while
  tracing.)"""
  if kernel_choice.use_kernels(*h0.shape, may_time=False, pass_=pass_):
    return (elman_kernel.forward(x_proj, real, h0, w_hh, activation,
                                 batch_major),)
  swap = _to_time_major(batch_major)
  states = _scan(ACTIVATIONS[activation], swap(x_proj), swap(real), h0,
                 w_hh)[1]
  return (swap(states),)


def _local_deltas(activation, batch_major, d_outputs, d_h_last, states, real,
                  h0, w_hh):
  """(d_pre, d_h0, this device's part of dW_hh) of one device's rows."""
  if kernel_choice.use_kernels(*h0.shape, may_time=False):
    d_pre, d_h0 = elman_kernel.backward(d_outputs, d_h_last, states, real,
                                        w_hh, activation, batch_major)
    return d_pre, d_h0, _kernel_weight_gradient(h0, states, d_pre,
                                                batch_major)
  swap = _to_time_major(batch_major)
  d_pre, d_h0, d_w_hh = _xla_deltas(activation, swap(d_outputs), d_h_last,
                                    swap(states), swap(real), h0, w_hh)
  return swap(d_pre), d_h0, d_w_hh


def _to_time_major(batch_major):
  """Swaps [batch, time, ...] and [time, batch, ...] if batch_major."""
  return (lambda a: jnp.swapaxes(a, 0, 1)) if batch_major else (lambda a: a)


def _kernel_weight_gradient(h0, states, d_pre, batch_major):
  """dW_hh = Σ_t h_{t-1}ᵀ d_t, as one kernel product over all steps but the
  first.

  Flattened to [rows, units], the pairs (h_{t-1}, d_t) are rows i and
  i + batch of time-major arrays, and rows i and i + 1 of batch-major ones,
  where the pairs that straddle two sequences are taken out again. (Under a
  batch split over devices, these are one device's arrays.)
  """
  units = h0.shape[-1]
  flat_states, flat_d = states.reshape(-1, units), d_pre.reshape(-1, units)
  if batch_major:
    straddling = states[:-1, -1].T @ d_pre[1:, 0]
    return (elman_kernel.transposed_product(flat_states, flat_d, 1)
            - straddling + h0.T @ d_pre[:, 0])
  return (elman_kernel.transposed_product(flat_states, flat_d, h0.shape[0])
          + h0.T @ d_pre[0])


def _on_own_rows(local_fn, layout):
  """`local_fn`, run by each device on its own rows of the batch.

  Args:
    local_fn: arrays -> tuple of arrays, computed from any subset of the
      batch's rows (all of them on one device).
    layout: einsum-like terms, one per argument and result of local_fn,
      e.g. 'b t u, b u -> b t u, u v': 'b' is the batch axis. Results
      without 'b' are sums over the rows, which the devices add up.

  Returns:
    A function of the arrays that XLA's partitioner splits by the batch
    rows when the arrays' batch axis is split over a mesh. It learns the
    split from the arguments' shardings alone
    (jax.experimental.custom_partitioning), so callers need no mesh
    context. The other axes are kept whole on every device. On one device
    it is local_fn itself.
  """
  operands, results = ([term.split() for term in side.split(',')]
                       for side in layout.split('->'))

  def shardings(mesh, arg_shapes):
    axes = _batch_mesh_axes(mesh, operands, arg_shapes)
    def sharding(term):
      return NamedSharding(mesh, PartitionSpec(
          *(axes if factor == 'b' else None for factor in term)))
    return axes, [sharding(t) for t in operands], [sharding(t) for t in results]

  def partition(mesh, arg_shapes, result_shape):
    del result_shape  # follows from the arguments' split
    axes, arg_shardings, result_shardings = shardings(mesh, arg_shapes)
    def lower_fn(*arrays):
      return tuple(
          out if axes is None or 'b' in term else jax.lax.psum(out, axes)
          for out, term in zip(local_fn(*arrays), results))
    return mesh, lower_fn, tuple(result_shardings), tuple(arg_shardings)

  def infer_sharding_from_operands(mesh, arg_shapes, result_shape):
    del result_shape
    return tuple(shardings(mesh, arg_shapes)[2])

  @custom_partitioning
  def on_rows(*arrays):
    return local_fn(*arrays)

  # Shardy (JAX's default partitioner) propagates by the rule; the older
  # GSPMD one by infer_sharding_from_operands. Both keep every axis but
  # the batch whole (a scan needs all steps and units). Shardy wants them
  # in the order they first appear in the rule.
  whole = tuple(f for f in _factors(operands + results) if f != 'b')
  on_rows.def_partition(
      partition, infer_sharding_from_operands=infer_sharding_from_operands,
      sharding_rule=layout, need_replication_factors=whole)
  return _batched_by_vmap(on_rows, local_fn, operands, results)


def _batched_by_vmap(on_rows, local_fn, operands, results):
  """`on_rows`, which JAX cannot vmap (custom_partitioning has no batching
  rule), vmapped as `local_fn` would be: the vmap of local_fn, itself run on
  each device's rows, with the mapped axis a new leading axis 'k<n>'.
  (retention.py vmaps the backward pass.)"""
  batchable = jax.custom_batching.custom_vmap(on_rows)

  @batchable.def_vmap
  def vmap_rule(axis_size, in_batched, *arrays):
    del axis_size
    mapped = f'k{len(_factors(operands + results))}'  # a name not yet used
    layout = '{} -> {}'.format(
        ', '.join(' '.join([mapped] * batched + term)
                  for batched, term in zip(in_batched, operands)),
        ', '.join(' '.join([mapped] + term) for term in results))
    in_axes = [0 if batched else None for batched in in_batched]
    mapped_fn = _on_own_rows(jax.vmap(local_fn, in_axes=in_axes), layout)
    outputs = mapped_fn(*arrays)
    return outputs, (True,) * len(outputs)

  return batchable


def _factors(terms):
  """The factors (axis names) of a layout's terms, in order of appearance."""
  return list(dict.fromkeys(factor for term in terms for factor in term))


def _batch_mesh_axes(mesh, operands, arg_shapes):
  """The mesh axes that split the batch rows of the arguments, or None.

  The first argument whose batch axis is split decides; None (every
  device gets every row) where none is, where the split is not a mesh's
  (NamedSharding), or where it is uneven: the padding rows of an uneven
  split would add garbage to dW_hh.
  """
  for term, shape in zip(operands, arg_shapes):
    sharding = shape.sharding
    if 'b' not in term or not isinstance(sharding, NamedSharding):
      continue
    row_axis = term.index('b')
    spec = tuple(sharding.spec) + (None,) * len(term)
    axes = spec[row_axis]
    if axes is None:
      continue
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    devices = math.prod(mesh.shape[axis] for axis in axes)
    return axes if shape.shape[row_axis] % devices == 0 else None
  return None
