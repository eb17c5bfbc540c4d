"""Entry points that use a trained run: load it, evaluate it, render paths.

Owns `load_trained(config, workdir)` — the one way train, eval, edit and
notebooks get an `Experiment` plus its latest good state — and the `eval`
and `render` modes of the runner.
"""

import os

import jax
import numpy as np
import tqdm

from condnerf import cameras
from condnerf import checkpointing
from condnerf import images
from condnerf import train_lib
from condnerf.data import base
from condnerf.data import sampler as sampler_lib
from condnerf.evaluators import image_metrics


class NoCheckpointError(FileNotFoundError):
  """The workdir has no checkpoint to evaluate or edit."""


def load_trained(config, workdir, experiment=None):
  """Builds the experiment of `config` and restores its latest checkpoint.

  Args:
    config: the ConfigDict the run was trained with.
    workdir: the run's folder.
    experiment: a prebuilt `train_lib.Experiment` (optional).
  Returns:
    (experiment, state).
  Raises:
    NoCheckpointError: nothing to restore.
    checkpointing.CheckpointMismatchError: the checkpoint is of another model.
  """
  exp = train_lib.build_experiment(config) if experiment is None else experiment
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(ckpt_dir):  # do not create folders in a wrong path.
    raise NoCheckpointError(
        f'No checkpoint in {ckpt_dir}; train first with --mode=train and the '
        'same --workdir.')
  ckpt = checkpointing.Checkpointer(ckpt_dir)
  try:
    restored, _ = ckpt.restore(exp.abstract_state().as_dict())
  finally:
    ckpt.close()
  if restored is None:
    raise NoCheckpointError(
        f'No checkpoint in {ckpt_dir}; train first with --mode=train and the '
        'same --workdir.')
  return exp, train_lib.TrainState(**restored)


def evaluate(config, workdir):
  """`--mode=eval`: metrics and PNGs of the eval split in `workdir/eval`.

  On many processes, each reads only its share of the split's images (see
  `evaluators.image_metrics`); process 0 writes the results.
  """
  share = base.Share(jax.process_index(), jax.process_count(),
                     config.eval.max_images)
  scene = train_lib.load_scene(config.data, share=share)
  exp, state = load_trained(config, workdir,
                            train_lib.build_experiment(config, scene))
  evaluator = image_metrics.Evaluator(exp, split=config.eval.split,
                                      max_images=config.eval.max_images,
                                      save_images=config.eval.save_images)
  return evaluator.run(state, os.path.join(workdir, 'eval'))


def path_poses(scene, num_frames, radius, elevation):
  """f32[num_frames, 4, 4] orbit around the origin about the scene's up."""
  return cameras.orbit_path(num_frames, radius, elevation,
                            up=tuple(float(u) for u in scene.up))


def orbit_rays(scene, num_frames, radius, elevation, code_id=-1,
               frames=None):
  """The rays of every camera of an orbit path.

  Args:
    scene: `data.base.Scene` (its up direction).
    num_frames, radius, elevation: the path; elevation in degrees.
    code_id: code row of every ray (-1 = mean code).
    frames: `Frames` whose first view gives the image size, intrinsics and
      near/far (default: the test split, else the training split).
  Returns:
    list of num_frames `structs.Rays` with leading shape [H, W].
  """
  if frames is None:
    frames = scene.test if len(scene.test) else scene.train
  height, width = frames.images[0].shape[:2]
  return [sampler_lib.pose_rays(pose, frames.intrinsics[0], height, width,
                                frames.near, frames.far, code_id)
          for pose in path_poses(scene, num_frames, radius, elevation)]


def render_path(config, workdir):
  """`--mode=render`: an orbit with one code, as PNG frames and a GIF.

  Returns:
    The path of the GIF.
  """
  exp, state = load_trained(config, workdir)
  rc = config.render
  if rc.code >= exp.scene.num_codes or rc.code < -1:
    raise ValueError(f'render.code={rc.code} is outside the code table '
                     f'[0, {exp.scene.num_codes}) (or -1 for the mean code).')
  out_dir = os.path.join(workdir, 'render')
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(out_dir, exist_ok=True)
  rendered = []
  for i, rays in enumerate(tqdm.tqdm(
      orbit_rays(exp.scene, rc.num_frames, rc.radius, rc.elevation, rc.code),
      desc='render', disable=not is_main)):
    rgb = np.clip(exp.render(state, rays)['rgb'], 0.0, 1.0)
    rendered.append(rgb)
    if is_main:
      images.save_png(os.path.join(out_dir, f'frame_{i:03d}.png'), rgb)
  gif = os.path.join(out_dir, 'path.gif')
  if is_main:
    images.save_gif(gif, rendered, fps=rc.fps)
  return gif
