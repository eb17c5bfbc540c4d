"""Config helpers shared by every config file: arguments and overrides.

`parse_arg('variant=fast,runlocal')` turns the text after `:` in
`--config=FILE:ARGS` into a ConfigDict, the way big_vision's configs read
their variants. A bare word is a boolean flag set to True.
`with_overrides(config, {'section.key': value})` is the one place dotted
keys are set outside the command line (ablation sweeps, the benchmark):
a copy, locked, where a key the config lacks is an error naming it.
`config_from_file('path.py:arg')` loads a config file as `--config=` does
(`load_file` executes any such file: configs, sweeps).
"""

import copy
import importlib.util
import os

import ml_collections


def parse_arg(arg, lazy=False, **defaults):
  """Parses 'k=v,flag' into a ConfigDict with typed `defaults`.

  Args:
    arg: None, '' or a comma-separated list of `key=value` and `flag`s.
    lazy: accept keys that are not in `defaults` (values stay strings).
    **defaults: known keys with default values; a value is converted to the
      default's type (bool accepts true/false/1/0).
  Returns:
    ml_collections.ConfigDict with every default and the parsed values.
  Raises:
    ValueError: for an unknown key (unless lazy) or a value of the wrong type.
  """
  result = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return result
  for item in arg.split(','):
    item = item.strip()
    if not item:
      continue
    key, has_value, value = item.partition('=')
    if not has_value:
      value = 'true'
    if key not in defaults:
      if not lazy:
        raise ValueError(f'Unknown config argument {key!r} in {arg!r}; '
                         f'known: {sorted(defaults)}.')
      result[key] = value
      continue
    result[key] = _convert(value, defaults[key], key)
  return result


def _convert(value, default, key):
  if isinstance(default, bool):
    if value.lower() in ('1', 'true', 'yes'):
      return True
    if value.lower() in ('0', 'false', 'no'):
      return False
    raise ValueError(f'Config argument {key}={value!r} is not a boolean.')
  try:
    return type(default)(value)
  except ValueError as e:
    raise ValueError(f'Config argument {key}={value!r} is not a '
                     f'{type(default).__name__}.') from e


def with_overrides(config, overrides):
  """A locked copy of `config` with dotted keys set.

  Args:
    config: ConfigDict.
    overrides: {'section.key': value}; nested plain dicts (e.g.
      `data.procedural`) are reached the same way.
  Returns:
    ConfigDict.
  Raises:
    KeyError: a key the config does not have; the message names the key,
      where the path broke off and the keys there are.
    ValueError: a value of the wrong type (ml_collections' message).
  """
  config = copy.deepcopy(config)
  config.lock()
  for key, value in overrides.items():
    *path, leaf = key.split('.')
    node = config
    for depth, part in enumerate(path + [leaf]):
      valid = sorted(node.keys()) if hasattr(node, 'keys') else []
      if part not in valid:
        prefix = '.'.join(path[:depth]) or 'the config'
        raise KeyError(f'unknown config key {key!r} ({part!r} is not in '
                       f'{prefix}; it has {valid})')
      if depth < len(path):
        node = node[part]
    try:
      if isinstance(node, ml_collections.ConfigDict):
        setattr(node, leaf, value)
      else:  # a plain dict field, e.g. data.procedural.
        node[leaf] = value
    except (TypeError, ValueError, AttributeError) as e:
      raise ValueError(f'cannot set {key!r} = {value!r}: {e}') from e
  return config


def load_file(path, name=None):
  """The Python module at `path` (a config or sweep file), executed.

  Args:
    path: the file.
    name: its module name (default: from the file name).
  """
  name = name or f'condnerf_file_{os.path.splitext(os.path.basename(path))[0]}'
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def config_from_file(spec, root='.'):
  """`get_config(arg)` of a config file named 'path[:arg]' (relative to
  `root`), as `--config=path[:arg]` would give it."""
  path, _, arg = spec.partition(':')
  return load_file(os.path.join(root, path)).get_config(arg or None)
