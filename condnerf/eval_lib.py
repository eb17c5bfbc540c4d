"""The `eval` and `render` modes of the runner, and camera paths.

Owns `evaluate` (metrics and PNGs of a split), `render_path` (an orbit with
one code) and the orbit helpers shared with the gallery. Loading a trained
run is `experiment.load_trained`.
"""

import os

import jax
import numpy as np
import tqdm

from condnerf import cameras
from condnerf import codes as codes_lib
from condnerf import errors
from condnerf import evaluators
from condnerf import experiment as experiment_lib
from condnerf import images
from condnerf import inference
from condnerf import workdir as workdir_lib
from condnerf.data import base
from condnerf.data import sampler as sampler_lib
from condnerf.edit import methods


def evaluate(config, workdir, experiment=None):
  """`--mode=eval`: the evaluators of `config.evals` on the latest checkpoint.

  `eval.names` ('a,b') runs only those. Each writes to `<workdir>/<name>/`
  (the image metrics to `<workdir>/eval/`). When only image metrics run,
  each process reads only its share of the eval splits' images (the first
  `max_images`; on many processes frames p, p + P, ...: see
  `evaluators.image_metrics`); process 0 writes the results.

  Args:
    config: the run's ConfigDict.
    workdir: the run folder.
    experiment: a prebuilt `Experiment` of `config` (its compiled steps
      are reused), else one is built on the share of the data it needs.
  Returns:
    dict evaluator name -> its results.
  """
  experiment_lib.check_config(config)
  if experiment is not None:
    exp, state = experiment_lib.load_trained(config, workdir, experiment)
    return evaluators.run(evaluators.build(config, exp, config.eval.names),
                          state, workdir)
  share = None
  specs = evaluators.specs(config, config.eval.names)
  if (all(kind == 'image_metrics' for _, kind, _ in specs) and
      len({(a['split'], a['max_images']) for _, _, a in specs}) == 1):
    share = base.Share(jax.process_index(), jax.process_count(),
                       specs[0][2]['max_images'])
  scene = experiment_lib.load_scene(config.data, share=share)
  exp, state = experiment_lib.load_trained(
      config, workdir, experiment_lib.build_experiment(config, scene))
  return evaluators.run(evaluators.build(config, exp, config.eval.names),
                        state, workdir)


def path_poses(scene, num_frames, radius, elevation):
  """f32[num_frames, 4, 4]: an orbit around the origin about the scene's up,
  or for a forward-facing (NDC) scene, whose back nobody photographed, a
  circle in the cameras' plane (half their spread) looking down -z."""
  if scene.ndc:
    centers = scene.train.poses[:, :3, 3]
    spread = 0.5 * float(np.abs(centers[:, :2]).max())
    angles = np.linspace(0.0, 2.0 * np.pi, num_frames, endpoint=False)
    poses = np.tile(np.eye(4, dtype=np.float32), (num_frames, 1, 1))
    poses[:, 0, 3] = spread * np.cos(angles)
    poses[:, 1, 3] = spread * np.sin(angles)
    poses[:, 2, 3] = float(centers[:, 2].mean())
    return poses
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


def render_path(config, workdir, experiment=None):
  """`--mode=render`: an orbit with one code, as PNG frames and a GIF.

  With `render.light_turns` (a shaded head) the code's light also turns
  about the up axis; with `render.fixed_camera` only the light moves.

  Returns:
    The path of the GIF.
  """
  exp, state = experiment_lib.load_trained(config, workdir, experiment)
  rc = config.render
  if rc.code >= exp.scene.num_codes or rc.code < -1:
    raise errors.ConfigError(
        f'render.code={rc.code} is outside the code table '
        f'[0, {exp.scene.num_codes}) (or -1 for the mean code).')
  out_dir = os.path.join(workdir, 'render')
  is_main = jax.process_index() == 0
  paths = orbit_rays(exp.scene, rc.num_frames, rc.radius, rc.elevation,
                     rc.code)
  if rc.fixed_camera:
    paths = [paths[0]] * len(paths)
  table = jax.device_get(state.codes)
  code = (codes_lib.mean_code(table) if rc.code == -1 else
          codes_lib.row(table, rc.code))
  rendered = []
  for i, rays in enumerate(tqdm.tqdm(paths, desc='render',
                                     disable=not is_main)):
    if rc.light_turns:
      # The code's light turned about up, a full turn every
      # num_frames / light_turns frames.
      turned = methods.relight(exp, state, code,
                               rotate=360.0 * rc.light_turns * i /
                               rc.num_frames)
      rgb = inference.render_with_code(exp, state.params, rays,
                                       turned.code)['rgb']
    else:
      rgb = exp.render(state, rays)['rgb']
    rendered.append(np.clip(rgb, 0.0, 1.0))
  if is_main:  # a new render/ replaces the old one once it is complete.
    with workdir_lib.staged_dir(out_dir) as tmp:
      for i, rgb in enumerate(rendered):
        images.save_png(os.path.join(tmp, f'frame_{i:03d}.png'), rgb)
      images.save_gif(os.path.join(tmp, 'path.gif'), rendered, fps=rc.fps)
  return os.path.join(out_dir, 'path.gif')
