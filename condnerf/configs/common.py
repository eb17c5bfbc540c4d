"""Config helpers shared by every config file: argument parsing.

`parse_arg('variant=fast,runlocal')` turns the text after `:` in
`--config=FILE:ARGS` into a ConfigDict, the way big_vision's configs read
their variants. A bare word is a boolean flag set to True.
"""

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
