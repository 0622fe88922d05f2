"""Which devices a run uses, and how batches and weights are laid out on them.

Training is data parallel over every device of every process: a 1-D mesh
with one axis, 'data'. Each process feeds its own rows of the global batch,
which become one global array split along that axis; weights, optimizer
slots and model state are replicated. trax's `training.Loop` still drives
training: it sees a single logical device (see `trax_compat`) and jits its
step as usual, and XLA partitions that step from the shardings of its
inputs, reducing the gradients across devices where the batch is summed.

Several processes (hosts of a TPU pod slice, nodes of a GPU cluster, or
processes on one machine) join through `jax.distributed`; on CPU they talk
through JAX's gloo collectives.
"""

import argparse
import contextlib
import dataclasses
import os
from typing import Any, Iterator, Optional, Sequence

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from rnn_toolkit.errors import UsageError

PLATFORMS = ('cpu', 'gpu', 'tpu')
BATCH_AXIS = 'data'


def select_platform(platform: Optional[str]) -> None:
  """Makes JAX use `platform` ('cpu', 'gpu' or 'tpu'; None: what JAX finds).

  Only names it: JAX looks for the devices when first asked, which must come
  after joining other processes (`check_platform_found`).

  Raises:
    UsageError: the platform is unknown.
  """
  if platform is None:
    return
  if platform not in PLATFORMS:
    raise UsageError(f'Unknown platform {platform!r}; choose one of '
                     f'{", ".join(PLATFORMS)}, or leave --platform out to use '
                     f'what JAX finds.')
  jax.config.update('jax_platforms', platform)


def check_platform_found(platform: Optional[str]) -> None:
  """Raises UsageError unless JAX finds devices of `platform` (None: any)."""
  if platform is None:
    return
  try:
    jax.devices()
  except RuntimeError as e:
    reason = ' '.join(str(e).split())
    raise UsageError(
        f'--platform {platform} was asked for, but JAX finds no {platform} '
        f'device here ({reason}). Install the JAX build for it (e.g. '
        f'"jax[cuda13]" for NVIDIA GPUs, "jax[tpu]" on TPU VMs), or leave '
        f'--platform out to use what JAX finds.') from None


def join_processes(coordinator_address: Optional[str] = None,
                   num_processes: Optional[int] = None,
                   process_id: Optional[int] = None) -> None:
  """Joins this process to a multi-process run through `jax.distributed`.

  Values left as None come from the environment: JAX_COORDINATOR_ADDRESS,
  or a cluster JAX detects by itself (TPU pod slices, Slurm, Open MPI,
  Kubernetes, ...).

  Raises:
    UsageError: the values are incomplete or the coordinator can't be reached.
  """
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  except (ValueError, TypeError, RuntimeError) as e:
    reason = ' '.join(str(e).split())
    raise UsageError(
        f'Joining the multi-process run failed ({reason}). Give '
        f'--coordinator_address HOST:PORT (the same on every process), '
        f'--num_processes N and --process_id I (0 to N-1, one per process), '
        f'or run where JAX detects the cluster itself (TPU pod slices, '
        f'Slurm, Open MPI).') from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the device flags train.py and evaluate.py share to `parser`."""
  group = parser.add_argument_group('devices')
  group.add_argument('--platform', choices=PLATFORMS,
                     help='run on this platform (default: what JAX finds).')
  group.add_argument('--multihost', action='store_true',
                     help='join a multi-process run through jax.distributed; '
                          'the values below, when left out, come from '
                          'JAX_COORDINATOR_ADDRESS or the cluster JAX '
                          'detects (TPU pod slice, Slurm, Open MPI).')
  group.add_argument('--coordinator_address', metavar='HOST:PORT',
                     help='address of process 0 (implies --multihost; '
                          'JAX_COORDINATOR_ADDRESS in the environment too).')
  group.add_argument('--num_processes', type=int,
                     help='how many processes take part (implies --multihost).')
  group.add_argument('--process_id', type=int,
                     help='this process, 0 to N-1 (implies --multihost).')


def set_up(args: argparse.Namespace) -> None:
  """Selects the platform and joins other processes, as `args` ask.

  A process joins others when given --multihost, any of the three
  process flags, or JAX_COORDINATOR_ADDRESS in its environment.

  Raises:
    UsageError: the platform is absent or the processes can't join.
  """
  select_platform(args.platform)
  given = (args.coordinator_address, args.num_processes, args.process_id)
  if (args.multihost or any(value is not None for value in given)
      or os.environ.get('JAX_COORDINATOR_ADDRESS')):
    # JAX refuses to join once it has looked for devices, so join first.
    join_processes(*given)
  check_platform_found(args.platform)


@contextlib.contextmanager
def log_in_process_0_only() -> Iterator[None]:
  """Silences the standard output of every process but process 0.

  trax and the loop print progress and metrics, which are the same in
  every process: one copy per run is enough. Errors (stderr) still show.
  """
  if jax.process_index() == 0:
    yield
    return
  with open(os.devnull, 'w') as devnull, contextlib.redirect_stdout(devnull):
    yield


@dataclasses.dataclass(frozen=True)
class DataParallel:
  """The device mesh of a run and how arrays are placed on it.

  Attributes:
    mesh: all devices of all processes along one axis, BATCH_AXIS.
  """
  mesh: Mesh

  @classmethod
  def over_all_devices(cls) -> 'DataParallel':
    return cls(Mesh(np.asarray(jax.devices()), (BATCH_AXIS,)))

  @property
  def n_devices(self) -> int:
    return self.mesh.devices.size

  @property
  def process_index(self) -> int:
    return jax.process_index()

  @property
  def process_count(self) -> int:
    return jax.process_count()

  @property
  def is_writer(self) -> bool:
    """Whether this process writes the run directory (only process 0 does)."""
    return jax.process_index() == 0

  def check_batch_size(self, batch_size: int, binding: str) -> None:
    """Raises UsageError unless `batch_size` splits evenly over the devices."""
    if batch_size % self.n_devices:
      raise UsageError(
          f'{binding} = {batch_size} does not divide evenly over the '
          f'{self.n_devices} devices this run uses ({self.describe_devices()}). '
          f'Bind {binding} to a multiple of {self.n_devices}, e.g. '
          f'{round_up(batch_size, self.n_devices)}.')

  def process_rows(self, batch_size: int) -> slice:
    """The slice of a global batch's rows this process feeds."""
    per_process = batch_size // self.process_count
    start = self.process_index * per_process
    return slice(start, start + per_process)

  def place_batch(
      self, local_batch: Sequence[np.ndarray]) -> tuple[jax.Array, ...]:
    """Assembles the processes' rows into global arrays split along the mesh.

    Args:
      local_batch: a tuple of NumPy arrays, this process's rows.

    Returns:
      A tuple of jax Arrays of the global batch, split over BATCH_AXIS.
    """
    sharding = NamedSharding(self.mesh, PartitionSpec(BATCH_AXIS))
    return tuple(jax.make_array_from_process_local_data(sharding, x)
                 for x in local_batch)

  def split_rows(self, array: Any) -> jax.Array:
    """Global `array`, its rows split over the mesh like a batch's."""
    return jax.device_put(array, NamedSharding(self.mesh,
                                               PartitionSpec(BATCH_AXIS)))

  def replicate(self, tree: Any) -> Any:
    """Copies every array of `tree` to every device of the mesh."""
    sharding = NamedSharding(self.mesh, PartitionSpec())
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x, sharding), tree,
        is_leaf=lambda x: x is None)

  def gather(self, array: jax.Array) -> np.ndarray:
    """The whole of global `array` as a NumPy array, in every process."""
    if self.process_count == 1:
      return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))

  def any_process(self, flag: Any) -> bool:
    """Whether `flag` is true in any process (every process must call it)."""
    if self.process_count == 1:
      return bool(flag)
    # Every process must pass the same shape: a 0-d flag, whatever `flag` is.
    flags = multihost_utils.process_allgather(np.int32(bool(flag)))
    return bool(np.any(flags))

  def each_process(self, value: int) -> list[int]:
    """[int `value` of process 0, of process 1, ...] (every process must call it)."""
    if self.process_count == 1:
      return [int(value)]
    values = multihost_utils.process_allgather(np.int32(value))
    return [int(v) for v in np.ravel(values)]

  def describe_devices(self) -> str:
    kinds = sorted({d.device_kind for d in self.mesh.devices.flat})
    return (f'{self.n_devices} {"/".join(kinds)} device'
            f'{"s" if self.n_devices > 1 else ""} in {self.process_count} '
            f'process{"es" if self.process_count > 1 else ""}')

  def describe(self) -> str:
    """A line for the log: the platform, devices, processes and mesh."""
    local = ', '.join(str(d) for d in jax.local_devices())
    return (f'Data parallel over {self.describe_devices()} '
            f'(mesh {dict(self.mesh.shape)}); this process is '
            f'{self.process_index} of {self.process_count}, with {local}.')


def local_mesh() -> Mesh:
  """A one-axis mesh of this process's devices (generation runs on these)."""
  return Mesh(np.asarray(jax.local_devices()), (BATCH_AXIS,))


def round_up(value: int, factor: int) -> int:
  """The smallest multiple of `factor` that is >= `value`."""
  return -(-value // factor) * factor
