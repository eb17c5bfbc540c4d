"""condnerf.experiment: the checks a run makes before it trains."""

from absl.testing import absltest
import numpy as np

from condnerf import errors
from condnerf import experiment as experiment_lib


class FreezeTest(absltest.TestCase):

  PARAMS = {'fields_0': {'Dense_0': {'kernel': np.zeros(2)}},
            'heads_0': {'Dense_0': {'bias': np.zeros(2)}}}

  def test_a_pattern_that_matches_nothing_is_refused(self):
    with self.assertRaisesRegex(
        errors.ConfigError,
        "train.freeze pattern '\\^field_' matches none of the field "
        r'parameters.*fields_0/Dense_0/kernel, heads_0/Dense_0/bias \(2 in'):
      experiment_lib.check_freeze('^heads_, ^field_', self.PARAMS)

  def test_matching_patterns_and_none_pass(self):
    experiment_lib.check_freeze('^fields_,bias$', self.PARAMS)
    experiment_lib.check_freeze('', self.PARAMS)


if __name__ == '__main__':
  absltest.main()
