"""Editing a trained run's look: every edit is an operation on a code.

Data flows one way through the package:
  scribbles   what to change: edit batches from colors, pixel lists, masks
              and brush strokes; one seeded pixel sampler.
  optimize    how: geometry cached once, the data-parallel gradient step and
              loop, inversion (`fit`);
  linear      or in closed form: color linear in the palette or the light
              code on cached geometry, and the palette solve.
  methods     the registry of edit methods (code, palette, palette_part,
              light and the weight-level baselines), each returning an
              `EditResult`; `relight` sets a light without pixels.
  scoring     one scorer (target PSNR, preservation, drift, collateral) and
              the NeRF-W half-image protocol.
  operations  the `--mode=edit` drivers.
The field is frozen by construction in every code method: gradients (or the
least-squares solve) reach only the code.
"""
