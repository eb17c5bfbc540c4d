"""Optimizers: optax transforms over the trainable tree `{'params', 'codes'}`.

Owns learning-rate schedules and `make_optimizer`, which gives the field
weights and the appearance codes their own schedule via
`optax.multi_transform` (labels 'field' and 'codes'), and freezes field
subtrees chosen by path pattern (label 'frozen', `optax.set_to_zero`) for
transfer from another run. Config stops here: the builder reads plain
numbers.
"""

import math
import re

import jax
import jax.numpy as jnp
import optax

from condnerf import errors
from condnerf import occupancy


def make_schedule(lr_init, lr_final, total_steps, warmup_steps=0):
  """Linear warm-up, then log-linear decay from lr_init to lr_final.

  The decay follows `progress`, the fraction of the training budget used.
  By default that is `count / total_steps`; a run with a wall-clock budget
  passes `max(count / total_steps, elapsed / budget)` instead, so the rate
  reaches lr_final when the time runs out, however many steps that took.

  Args:
    lr_init: peak learning rate, reached after warm-up.
    lr_final: learning rate at the end of the budget (and after).
    total_steps: steps of the whole run.
    warmup_steps: steps of linear warm-up from 0.
  Returns:
    `schedule(count, progress=None) -> f32[]`, the rate of update `count`
    (0-based); `progress` is f32[] in [0, 1] or None.
  """
  total = max(int(total_steps), 1)
  warm = warmup_steps / total

  def schedule(count, progress=None):
    count = jnp.asarray(count, jnp.float32)
    if progress is None:
      progress = count / total
    decay = jnp.clip((progress - warm) / max(1.0 - warm, 1e-9), 0.0, 1.0)
    lr = lr_init * (lr_final / lr_init)**decay
    if warmup_steps > 0:
      lr = lr * jnp.minimum(count / warmup_steps, 1.0)
    return lr

  return schedule


def scale_by_progress_schedule(schedule):
  """`-schedule(count, progress) * updates`, with progress an extra argument.

  Call `update(updates, state, params, progress=p)`; without `progress` the
  schedule uses the step count. The state is optax's ScaleByScheduleState,
  as for `optax.scale_by_learning_rate`, so checkpoints keep their layout.
  """

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *, progress=None, **extra_args):
    del params, extra_args
    lr = schedule(state.count, progress)
    updates = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)
    return updates, optax.ScaleByScheduleState(
        count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _adam_chain(schedule, clip, b1, b2, eps):
  parts = [optax.clip_by_global_norm(clip)] if clip > 0 else []
  # The same structure as optax.adam (scale_by_adam, then the rate).
  parts.append(optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                           scale_by_progress_schedule(schedule)))
  return optax.chain(*parts)


def param_path(path):
  """'fields_0/HashGrid_0/tables'-style name of a pytree path."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def compile_patterns(patterns, setting):
  """Compiled regexes of parameter paths; ConfigError naming `setting` for
  one that is not a regular expression."""
  compiled = []
  for pattern in patterns:
    try:
      compiled.append(re.compile(pattern))
    except re.error as e:
      raise errors.ConfigError(
          f'{setting} pattern {pattern!r} is not a regular expression '
          f'({e}); give comma-separated regexes of parameter paths, e.g. '
          "'^fields_'.") from e
  return compiled


def make_labels(freeze=()):
  """Label function for `multi_transform`: field, codes or frozen leaves.

  Args:
    freeze: regular expressions; a field leaf whose path (e.g.
      'fields_1/MLP_0/Dense_0/kernel') matches any of them is frozen.
  Returns:
    A function of the trainable tree {'params', 'codes'} returning labels.
  """
  patterns = compile_patterns(freeze, 'train.freeze')

  def labels(tree):
    # The occupancy grid is a parameter that `train_step` updates itself.
    field = jax.tree_util.tree_map_with_path(
        lambda path, _: 'frozen' if param_path(path) == occupancy.PARAM or any(
            p.search(param_path(path)) for p in patterns) else 'field',
        tree['params'])
    return {'params': field,
            'codes': jax.tree.map(lambda _: 'codes', tree['codes'])}

  return labels


LEARNING_RATES = ('lr_init', 'lr_final', 'codes_lr_init', 'codes_lr_final')


def check_learning_rates(optim_cfg):
  """Raises ConfigError unless every learning rate is finite and positive."""
  for name in LEARNING_RATES:
    value = optim_cfg[name]
    if not (isinstance(value, (int, float)) and math.isfinite(value) and
            value > 0):
      raise errors.ConfigError(
          f'optim.{name}={value!r} must be a positive number (the rates '
          'decay log-linearly from *_init to *_final); e.g. '
          f'--config.optim.{name}=1e-3.')


def make_optimizer(optim_cfg, total_steps, freeze=()):
  """Adam for the field and, with its own schedule, for the codes.

  Args:
    optim_cfg: the `config.optim` section: lr_init, lr_final, warmup_steps,
      clip_grad_norm, b1, b2, eps, codes_lr_init, codes_lr_final.
    total_steps: steps of the whole run (decay horizon).
    freeze: regular expressions of field-parameter paths that stay fixed
      (transfer learning), see `make_labels`.
  Returns:
    An `optax.GradientTransformationExtraArgs` over `{'params': ...,
    'codes': ...}`; its `update` takes an optional `progress=f32[]` (see
    `make_schedule`).
  """
  c = optim_cfg
  check_learning_rates(c)
  field = _adam_chain(
      make_schedule(c.lr_init, c.lr_final, total_steps, c.warmup_steps),
      c.clip_grad_norm, c.b1, c.b2, c.eps)
  codes = _adam_chain(
      make_schedule(c.codes_lr_init, c.codes_lr_final, total_steps,
                    c.warmup_steps),
      c.clip_grad_norm, c.b1, c.b2, c.eps)
  return optax.multi_transform(
      {'field': field, 'codes': codes, 'frozen': optax.set_to_zero()},
      make_labels(freeze))
