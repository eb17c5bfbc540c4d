"""Tests for condnerf.writers."""

import glob
import json
import math
import os
import struct
import tempfile

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np
from tensorboardX.proto import event_pb2

from condnerf import writers


def _read_events(workdir):
  """Parses every TensorBoard event under workdir/tb (TFRecord framing)."""
  events = []
  for path in sorted(glob.glob(os.path.join(workdir, 'tb', '*tfevents*'))):
    with open(path, 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      offset += 12  # Length and its CRC.
      event = event_pb2.Event()
      event.ParseFromString(data[offset:offset + length])
      events.append(event)
      offset += length + 4  # Payload and its CRC.
  return events


def _summary_values(events):
  return {(value.tag, event.step): value
          for event in events if event.HasField('summary')
          for value in event.summary.value}


class MetricWriterTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.workdir = os.path.join(
        self.enter_context(tempfile.TemporaryDirectory()), 'run')

  def test_scalars_go_to_jsonl_and_tensorboard(self):
    with writers.MetricWriter(self.workdir) as writer:
      writer.write_scalars(1, {'loss': jnp.float32(0.5), 'psnr': 20})
      writer.write_scalars(
          2, {'psnr': np.array([25.0]), 'ssim': float('nan')}, split='test')
    with open(os.path.join(self.workdir, 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f]
    self.assertEqual(records[0], {'step': 1, 'split': 'train', 'loss': 0.5,
                                  'psnr': 20.0})
    self.assertEqual(records[1]['split'], 'test')
    self.assertEqual(records[1]['psnr'], 25.0)
    self.assertTrue(math.isnan(records[1]['ssim']))

    values = _summary_values(_read_events(self.workdir))
    self.assertAlmostEqual(values[('train/loss', 1)].simple_value, 0.5)
    self.assertAlmostEqual(values[('test/psnr', 2)].simple_value, 25.0)

  def test_appends_across_writers(self):
    for step in (1, 2):
      writer = writers.MetricWriter(self.workdir)
      writer.write_scalars(step, {'loss': 1.0})
      writer.close()
    with open(os.path.join(self.workdir, 'metrics.jsonl')) as f:
      self.assertEqual([json.loads(line)['step'] for line in f], [1, 2])

  def test_reserved_and_non_scalar_names(self):
    with writers.MetricWriter(self.workdir) as writer:
      with self.assertRaisesRegex(ValueError, 'reserved'):
        writer.write_scalars(1, {'step': 1.0})
      with self.assertRaisesRegex(ValueError, 'scalar'):
        writer.write_scalars(1, {'loss': np.zeros(3)})

  def test_images_and_hparams(self):
    image = np.linspace(0, 1, 4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    with writers.MetricWriter(self.workdir) as writer:
      writer.write_images(3, {'test/render': image,
                              'test/depth': image[..., 0]})
      writer.write_hparams({'model': {'width': 64}, 'seed': 0})
      writer.flush()
    values = _summary_values(_read_events(self.workdir))
    self.assertEqual(values[('test/render', 3)].image.width, 5)
    self.assertEqual(values[('test/render', 3)].image.height, 4)
    self.assertEqual(values[('test/depth', 3)].image.height, 4)
    text = values[('hparams/text_summary', 0)].tensor.string_val[0].decode()
    self.assertIn('| model.width | 64 |', text)
    self.assertIn('| seed | 0 |', text)
    with open(os.path.join(self.workdir, 'metrics.jsonl')) as f:
      self.assertEqual(f.read(), '')

  def test_disabled_writer_does_nothing(self):
    writer = writers.MetricWriter(self.workdir, enabled=False)
    self.assertFalse(writer.enabled)
    writer.write_scalars(1, {'loss': 1.0})
    writer.write_images(1, {'x': np.zeros((2, 2, 3))})
    writer.write_hparams({'a': 1})
    writer.flush()
    writer.close()
    self.assertFalse(os.path.exists(self.workdir))

  def test_flatten_dict(self):

    class FakeConfigDict:

      def __init__(self, d):
        self._d = d

      def to_dict(self):
        return self._d

    config = FakeConfigDict({'a': {'b': 1, 'c': {'d': 'x'}}, 'e': [1, 2]})
    self.assertEqual(writers.flatten_dict(config),
                     {'a.b': 1, 'a.c.d': 'x', 'e': [1, 2]})


if __name__ == '__main__':
  absltest.main()
