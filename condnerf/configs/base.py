"""The canonical config: every experiment is a small diff of `get_config`.

Sections: data, model, codes, optim, train, eval, evals, render, edit, seed,
model_name.
Arguments (after `:` in `--config=FILE:ARGS`):
  runlocal   shrink everything to a seconds-long run (tests use it).
  fast       the hash-grid + proposal-sampler model family.
"""

import ml_collections

from condnerf import occupancy
from condnerf.configs import common

FIELD_DEFAULTS = dict(
    encoding='posenc',  # 'posenc' or 'hashgrid'.
    min_deg=0,
    max_deg=10,
    hash_levels=16,
    hash_log2_table_size=19,
    hash_features=2,
    hash_base_resolution=16,
    hash_max_resolution=2048,
    scene_bound=0.0,  # 0 = take the dataset's scene bound.
    use_contraction=False,
    width=256,
    depth=8,
    skip=4,
    feature_dim=256,
    density_activation='softplus',
    density_bias=-1.0,
)


def get_config(arg=None):
  """Returns the base ConfigDict (vanilla coarse/fine NeRF, concat codes)."""
  arg = common.parse_arg(arg, runlocal=False, fast=False)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model_name = 'conditional_nerf'

  config.data = ml_collections.ConfigDict(dict(
      name='blender',  # key of condnerf.data.scenes.DATASETS.
      path='',  # dataset folder.
      appearance='auto',  # 'auto', 'ids', 'per_frame' or 'shared'.
      num_codes=0,  # rows of the code table; 0 = infer from the data.
      factor=1,  # downsampling (LLFF: the images_<factor> folder).
      background=(1.0, 1.0, 1.0),
      holdout=8,  # LLFF/nerfstudio: every holdout-th image is a test view.
      max_frames=0,  # keep the first N frames of each split (0 = all).
      # Sample forward-facing captures in NDC (llff only; see condnerf.ndc).
      ndc=False,
      masks=True,  # llff: use masks_<factor>/ when present (alpha, box).
  ))

  config.model = ml_collections.ConfigDict(dict(
      num_samples=(64, 128),  # intervals per level, coarse first.
      sampler='hierarchical',  # 'hierarchical', 'proposal' or 'occupancy'.
      # sampler='occupancy' (bounded scenes): see occupancy.DEFAULTS.
      occupancy=dict(occupancy.DEFAULTS),
      lindisp=False,
      clip_to_bound=False,  # cut rays to the field's scene box first.
      resample_padding=0.01,
      dtype='float32',  # compute dtype: 'float32' or 'bfloat16'.
      field=dict(FIELD_DEFAULTS),
      proposal_field=dict(FIELD_DEFAULTS, encoding='hashgrid', width=16,
                          depth=1, skip=-1, feature_dim=0, hash_levels=5,
                          hash_log2_table_size=17, hash_features=1,
                          hash_max_resolution=128),
      head=dict(
          kind='mlp',  # 'mlp' (latent-code head) or 'palette'.
          conditioning='concat',  # 'concat', 'film' or 'none'.
          width=128,
          depth=1,
          dir_deg=4,
          palette_size=6,  # palette head: K entries per code.
          # Palette head: multiplies the weights' logits before the
          # softmax. Above 1 the weights start sharper (each point nearer to
          # one entry) and move faster under Adam, which helps the parts
          # claim entries of their own (fields.PaletteHead).
          weight_logit_scale=1.0,
          # Palette head: 'none' (a learned intensity s(x) scales the
          # albedo) or 'sh' (the light code's spherical-harmonics
          # irradiance at the density field's normal does: relightable).
          shading='none',
          # Shading 'sh': 'density' (the density field's normals) or
          # 'predicted' (an MLP's, pulled towards them; train.normal_weight).
          normals='density',
      ),
  ))

  config.codes = ml_collections.ConfigDict(dict(
      dim=32,  # code_dim.
      init_scale=0.01,  # std of the initial entries.
      prior_weight=0.0,  # L2 prior on the codes of each batch.
      # Palette head: where palettes start. 'data': near each appearance's
      # mean object color (`codes.palette_centers`); 'uniform': anywhere in
      # [0.15, 0.85].
      palette_init='data',
      # Shaded head: where light codes start. 'data': each appearance's
      # recorded light (material datasets), else a default light from
      # above; 'default': always that (experiment.initial_lights).
      light_init='data',
      # Shaded head: L2 pull of each light code towards its start
      # (losses.light_prior); keeps the codes in the recorded lights' units.
      light_prior_weight=0.0,
  ))

  config.optim = ml_collections.ConfigDict(dict(
      lr_init=5e-4,
      lr_final=5e-5,
      warmup_steps=100,
      clip_grad_norm=0.0,  # 0 = no clipping.
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      codes_lr_init=5e-3,
      codes_lr_final=5e-4,
  ))

  config.train = ml_collections.ConfigDict(dict(
      steps=20000,
      # Wall-clock training budget (0 = none): training stops when it is
      # used up, and the learning-rate decay follows the budget, not steps.
      minutes=0.0,
      batch_size=1024,  # rays per step, over all devices of all processes.
      # Samples per step (model.sampler='occupancy'; 0 = batch_size x
      # model.occupancy.samples_per_ray): the field is evaluated on this
      # many, and the rays that do not fit drop out of the step's loss.
      sample_budget=0,
      # Training frames in shards (frame i in shard i % frame_shards); each
      # batch is one equal block of rays per shard, and in a multi-process
      # run each process reads only the shards its rows of the batch come
      # from. Fixed for a run: it decides which rays each step draws.
      frame_shards=1,
      coarse_loss_weight=0.1,  # hierarchical: weight of non-final levels.
      interlevel_loss_weight=1.0,  # proposal: weight of the interlevel loss.
      randomized=True,  # jitter samples during training.
      # Compare each training ray on a random background color (images
      # with alpha only): empty space cannot fake the background.
      random_background=False,
      # Palette head: weights of its regularizers (see models.shade): the
      # residual's squared size, the entropy of the palette weights, and how
      # unevenly a batch uses the entries (losses.palette_usage; decays to
      # 0 by the share palette_usage_until of training, 0 = constant). The
      # entropy weight ramps in from the share palette_entropy_from.
      residual_weight=0.1,
      palette_entropy_weight=0.01,
      palette_entropy_from=0.0,
      palette_usage_weight=0.0,
      palette_usage_until=0.0,
      # Palette head: pull every opaque pixel's palette weights towards the
      # entry whose color fits it best (losses.palette_assignment), from
      # the share palette_assignment_from of training on. 0 = off.
      palette_assignment_weight=0.0,
      palette_assignment_from=0.5,
      # Shaded head with predicted normals: weight of their squared gap to
      # the density field's normals (Ref-NeRF's predicted-normal loss).
      normal_weight=0.0,
      log_every=100,
      # Training steps per jitted call (unrolled, the state donated), so a
      # small batch on an accelerator is not bound by dispatch; it must
      # divide log_every, checkpoint_every and val_every. 1 on CPUs, where
      # dispatch is cheap next to a step.
      steps_per_call=1,
      checkpoint_every=2000,
      keep_checkpoints=3,
      val_every=2000,  # render one validation view every N steps (0 = off).
      # Transfer: start a new run from another run's field weights.
      init_from='',  # workdir of the source run ('' = fresh start).
      freeze='',  # comma-separated regexes of param paths kept fixed.
      # With init_from: comma-separated regexes of the param paths taken
      # from it ('' = all); the others start fresh (e.g. 'MLP|Dense':
      # the decoders, with new hash grids for a new scene).
      init_params='',
      # The divergence guard (condnerf/divergence.py): stop when, in `hold`
      # of the last `window` steps, the gradient norm was 0, the loss above
      # loss_factor x its minimum, or the gradient norm above grad_factor x
      # its recent median; no checkpoint within `window` steps of a
      # suspect step.
      guard=dict(window=50, hold=0.8, loss_factor=10.0, grad_factor=1000.0,
                 history=200),
  ))

  config.eval = ml_collections.ConfigDict(dict(
      split='test',
      chunk=4096,  # rays per rendering call.
      max_images=0,  # evaluate the first N images (0 = all).
      save_images=True,
      names='',  # --mode=eval: 'a,b' of config.evals to run ('' = all).
  ))

  # The evaluators a run uses (condnerf/evaluators): name -> type and its
  # arguments; each writes to <workdir>/<name>/ at the end of training and
  # in --mode=eval. The image metrics' split, max_images and save_images
  # are the eval section's (the same fields: set either); lpips names the
  # LPIPS network ('alex', 'vgg', '' = none).
  config.evals = ml_collections.ConfigDict(dict(
      eval=dict(type='image_metrics', lpips='alex',
                **{k: config.eval.get_ref(k)
                   for k in ('split', 'max_images', 'save_images')}),
  ))

  config.render = ml_collections.ConfigDict(dict(
      num_frames=40,
      radius=4.0,
      elevation=30.0,
      code=-1,  # row of the code table; -1 = mean code.
      fps=20,
      light_turns=0.0,  # shaded head: turns of the light about up (0 = none).
      fixed_camera=False,  # keep the first pose (with light_turns).
  ))

  config.edit = ml_collections.ConfigDict(dict(
      # 'recolor', 'palette', 'relight', 'benchmark', 'swap',
      # 'interpolate', 'fit', 'nerfw' or 'codes' (condnerf/edit/operations.py).
      operation='recolor',
      name='edit',  # outputs go to <workdir>/edit/<name>/.
      split='test',  # views are indices into this split.
      views=(0,),  # recolor: scribbled views; fit: views to invert.
      mask='',  # recolor: scribble mask PNG for views[0] (white = scribble).
      pixels='',  # recolor: or 'row,col;row,col;...' on views[0].
      color='#2f5cff',  # recolor: target as #RRGGBB, R,G,B or r,g,b.
      keep_mask='',  # recolor: optional PNG of pixels that must not change.
      method='code',  # recolor: a key of condnerf.edit.methods.METHODS.
      init_code=-1,  # recolor/palette: the code row to start from; -1 = mean.
      palette='',  # palette: entries to set, 'k=#RRGGBB;k=r,g,b'.
      steps=200,
      learning_rate=0.0,  # 0 = the method's default.
      code_a=0,  # swap/interpolate: first code row (or the bank name below).
      code_b=1,  # interpolate: second code row.
      bank_code='',  # swap: render with this named code from the bank.
      num=5,  # interpolate: images in the sweep.
      bank='',  # code bank file; '' = <workdir>/edit/codes.npz.
      # relight: towards the light 'x,y,z' ('' = keep the direction),
      # intensity and ambient (-1 = keep the code's), degrees to turn the
      # light about up, and a frame of the split whose light to copy (-1).
      light_direction='',
      light_intensity=-1.0,
      light_ambient=-1.0,
      light_rotate=0.0,
      light_from=-1,
      scribbles=64,  # benchmark: scribbled pixels.
      seed=1,  # benchmark: target appearance and scribble pixels.
  ))

  if arg.fast:
    apply_fast(config)
  if arg.runlocal:
    apply_runlocal(config)
  return config


def apply_fast(config):
  """Hash grid + proposal sampling: far fewer FLOPs per ray."""
  config.model.sampler = 'proposal'
  config.model.num_samples = (48, 24)
  config.model.field.update(
      encoding='hashgrid', width=64, depth=1, skip=-1, feature_dim=15,
      density_activation='exp', density_bias=0.0, hash_levels=8,
      hash_log2_table_size=15, hash_max_resolution=512)
  config.model.proposal_field.update(hash_log2_table_size=12)
  config.model.head.update(width=64, depth=2)
  config.optim.update(lr_init=5e-3, lr_final=5e-4, warmup_steps=50, eps=1e-15,
                      codes_lr_init=1e-2, codes_lr_final=1e-3)
  config.train.batch_size = 1024


def apply_runlocal(config):
  """Seconds-long run: tiny model, few samples, a handful of steps."""
  config.data.max_frames = 4
  config.model.num_samples = (8, 8)
  config.model.field.update(width=32, depth=2, skip=-1, feature_dim=16,
                            hash_levels=4, hash_log2_table_size=10,
                            hash_max_resolution=64)
  config.model.proposal_field.update(hash_levels=2, hash_log2_table_size=8,
                                     hash_max_resolution=32, width=8)
  config.model.head.update(width=16, depth=1, dir_deg=2)
  config.codes.dim = 8
  config.train.update(steps=4, batch_size=64, log_every=2,
                      checkpoint_every=2, val_every=2)
  config.eval.update(chunk=1024, max_images=2)
  config.render.num_frames = 2
  config.edit.update(steps=20, scribbles=16)
