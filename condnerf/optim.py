"""Optimizers: optax transforms over the trainable tree `{'params', 'codes'}`.

Owns learning-rate schedules and `make_optimizer`, which gives the field
weights and the appearance codes their own schedule via
`optax.multi_transform` (labels 'field' and 'codes'), and freezes field
subtrees chosen by path pattern (label 'frozen', `optax.set_to_zero`) for
transfer from another run. Config stops here: the builder reads plain
numbers.
"""

import re

import jax
import optax


def make_schedule(lr_init, lr_final, total_steps, warmup_steps=0):
  """Linear warm-up, then log-linear decay from lr_init to lr_final.

  Args:
    lr_init: peak learning rate, reached after warm-up.
    lr_final: learning rate at `total_steps` (and after).
    total_steps: steps of the whole run.
    warmup_steps: steps of linear warm-up from 0.
  Returns:
    An optax schedule `step -> lr`.
  """
  decay = optax.exponential_decay(
      init_value=lr_init, transition_steps=max(total_steps - warmup_steps, 1),
      decay_rate=lr_final / lr_init, end_value=lr_final)
  if warmup_steps <= 0:
    return decay
  warmup = optax.linear_schedule(0.0, lr_init, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def _adam_chain(schedule, clip, b1, b2, eps):
  parts = [optax.clip_by_global_norm(clip)] if clip > 0 else []
  parts.append(optax.adam(schedule, b1=b1, b2=b2, eps=eps))
  return optax.chain(*parts)


def param_path(path):
  """'fields_0/HashGrid_0/tables'-style name of a pytree path."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def make_labels(freeze=()):
  """Label function for `multi_transform`: field, codes or frozen leaves.

  Args:
    freeze: regular expressions; a field leaf whose path (e.g.
      'fields_1/MLP_0/Dense_0/kernel') matches any of them is frozen.
  Returns:
    A function of the trainable tree {'params', 'codes'} returning labels.
  """
  patterns = [re.compile(p) for p in freeze]

  def labels(tree):
    field = jax.tree_util.tree_map_with_path(
        lambda path, _: 'frozen' if any(
            p.search(param_path(path)) for p in patterns) else 'field',
        tree['params'])
    return {'params': field,
            'codes': jax.tree.map(lambda _: 'codes', tree['codes'])}

  return labels


def make_optimizer(optim_cfg, total_steps, freeze=()):
  """Adam for the field and, with its own schedule, for the codes.

  Args:
    optim_cfg: the `config.optim` section: lr_init, lr_final, warmup_steps,
      clip_grad_norm, b1, b2, eps, codes_lr_init, codes_lr_final.
    total_steps: steps of the whole run (decay horizon).
    freeze: regular expressions of field-parameter paths that stay fixed
      (transfer learning), see `make_labels`.
  Returns:
    An `optax.GradientTransformation` over `{'params': ..., 'codes': ...}`.
  """
  c = optim_cfg
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
