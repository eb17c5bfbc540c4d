"""Optimizers: optax transforms over the trainable tree `{'params', 'codes'}`.

Owns learning-rate schedules and `make_optimizer`, which gives the field
weights and the appearance codes their own schedule via
`optax.multi_transform` with the prefix labels `{'params': 'field',
'codes': 'codes'}`. Config stops here: the builder reads plain numbers.
"""

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


def make_optimizer(optim_cfg, total_steps):
  """Adam for the field and, with its own schedule, for the codes.

  Args:
    optim_cfg: the `config.optim` section: lr_init, lr_final, warmup_steps,
      clip_grad_norm, b1, b2, eps, codes_lr_init, codes_lr_final.
    total_steps: steps of the whole run (decay horizon).
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
  return optax.multi_transform({'field': field, 'codes': codes},
                               {'params': 'field', 'codes': 'codes'})
