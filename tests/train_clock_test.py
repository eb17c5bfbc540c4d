"""The training clock: span arithmetic, its file, and resuming from it.

`tests/optim_test.py` covers `progress`/`done`; these tests drive the clock
with a fake `perf_counter`, so the arithmetic is exact.
"""

import json
import os

import numpy as np
import pytest

from condnerf import train_clock


class _FakeTime:
  """Stands in for the `time` module inside `train_clock`."""

  def __init__(self, now=100.0):
    self.now = now

  def perf_counter(self):
    return self.now


@pytest.fixture(name='fake_time')
def _fake_time(monkeypatch):
  fake = _FakeTime()
  monkeypatch.setattr(train_clock, 'time', fake)
  return fake


def test_elapsed_adds_running_spans_to_earlier_sessions(fake_time):
  clock = train_clock.TrainClock(steps=10, minutes=1.0, seconds=7.0)
  assert clock.elapsed() == 7.0  # nothing runs before `resume`.
  fake_time.now = 105.0
  assert clock.elapsed() == 7.0
  clock.resume()
  fake_time.now = 108.0
  assert clock.elapsed() == 10.0  # a running span counts as it runs.
  clock.resume()  # already running: the span keeps its start.
  fake_time.now = 110.0
  clock.pause()
  assert clock.elapsed() == 12.0
  clock.pause()  # already paused: nothing changes.
  fake_time.now = 500.0  # time while paused is not training time.
  assert clock.elapsed() == 12.0
  clock.resume()
  fake_time.now = 504.5
  clock.pause()
  assert clock.elapsed() == 16.5


def test_progress_and_done_follow_the_synced_time_only(fake_time):
  clock = train_clock.TrainClock(steps=1000, minutes=1.0)
  clock.resume()
  fake_time.now += 30.0
  assert clock.progress(10) == 0.01  # not synced yet: still 0 s.
  clock.sync(10)
  assert clock.shared == 30.0
  assert clock.progress(10) == 0.5
  assert not clock.done(10)
  fake_time.now += 30.0
  assert not clock.done(11)
  clock.sync(11)
  assert clock.done(11)
  assert clock.progress(11) == 1.0


def test_sync_without_a_budget_still_tracks_elapsed(fake_time):
  clock = train_clock.TrainClock(steps=10, minutes=0.0, sync_every=5)
  clock.resume()
  fake_time.now += 4.0
  clock.sync(3)  # not a multiple of sync_every: one process syncs anyway.
  assert clock.shared == 4.0
  assert clock.progress(3) is None
  assert not clock.done(9) and clock.done(10)


def test_constructor_clamps_steps_and_sync_every():
  clock = train_clock.TrainClock(steps=0, minutes=0.5, sync_every=0)
  assert clock.steps == 1 and clock.sync_every == 1
  assert clock.budget == 30.0
  assert clock.done(1)
  assert clock.progress(0) == 0.0


def test_write_then_read_round_trips(tmp_path):
  train_clock.write_clock(str(tmp_path), 40, 12.25)
  assert train_clock.read_clock(str(tmp_path), 40) == 12.25
  path = tmp_path / train_clock.CLOCK_FILE
  assert json.loads(path.read_text()) == {'steps': {'40': 12.25}}
  # Atomic write: nothing else is left in the folder.
  assert os.listdir(tmp_path) == [train_clock.CLOCK_FILE]


def test_write_accepts_numpy_scalars_and_keeps_earlier_steps(tmp_path):
  train_clock.write_clock(str(tmp_path), np.int64(5), np.float32(1.5))
  train_clock.write_clock(str(tmp_path), np.int32(10), np.float64(3.0))
  record = json.loads((tmp_path / train_clock.CLOCK_FILE).read_text())
  assert record == {'steps': {'5': 1.5, '10': 3.0}}
  assert train_clock.read_clock(str(tmp_path), 10) == 3.0
  # The earlier step keeps its time: a save of 10 may not be committed.
  assert train_clock.read_clock(str(tmp_path), 5) == 1.5


def test_read_returns_zero_without_a_matching_record(tmp_path):
  workdir = str(tmp_path)
  assert train_clock.read_clock(workdir, 10) == 0.0  # no file.
  train_clock.write_clock(workdir, 10, 8.0)
  assert train_clock.read_clock(workdir, 0) == 0.0  # a fresh start.
  assert train_clock.read_clock(workdir, 20) == 0.0  # another checkpoint.
  assert train_clock.read_clock(workdir, 10) == 8.0


@pytest.mark.parametrize('text', [
    'not json', '{"step": 10}', '{"seconds": 3.0}', '[10, 3.0]',
    '{"step": 10, "seconds": "soon"}', '{"step": 10, "seconds": null}', ''])
def test_read_returns_zero_for_an_unreadable_record(tmp_path, text):
  (tmp_path / train_clock.CLOCK_FILE).write_text(text)
  assert train_clock.read_clock(str(tmp_path), 10) == 0.0


def test_a_resumed_clock_continues_from_the_recorded_time(tmp_path,
                                                          fake_time):
  workdir = str(tmp_path)
  first = train_clock.TrainClock(steps=1000, minutes=1.0)
  first.resume()
  fake_time.now += 20.0
  first.pause()
  train_clock.write_clock(workdir, 50, first.elapsed())
  second = train_clock.TrainClock(steps=1000, minutes=1.0,
                                  seconds=train_clock.read_clock(workdir, 50))
  # The recorded time counts before the resumed run syncs or steps.
  assert second.progress(50) == pytest.approx(1.0 / 3.0)
  second.resume()
  fake_time.now += 40.0
  second.sync(51)
  assert second.elapsed() == 60.0
  assert second.done(51)


def test_a_clock_resumed_past_its_budget_is_done_at_once(tmp_path):
  train_clock.write_clock(str(tmp_path), 7, 61.0)
  clock = train_clock.TrainClock(steps=1000, minutes=1.0,
                                 seconds=train_clock.read_clock(
                                     str(tmp_path), 7))
  assert clock.done(7)
  assert clock.progress(7) == 1.0
