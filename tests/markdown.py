"""README.md and the guides in docs/ as the tests read them: fenced blocks,
inline code, headings, links, and the commands they quote."""

import glob
import os
import re
import shlex

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, 'README.md')
DOCS = os.path.join(REPO, 'docs')

_FENCE = re.compile(r'^```([^\n`]*)\n(.*?)^```[ \t]*$', re.M | re.S)
_SEPARATORS = ('&&', '||', '|', ';')


def pages():
  """README.md and every docs/*.md, as absolute paths."""
  return [README] + sorted(glob.glob(os.path.join(DOCS, '*.md')))


def read(path):
  with open(path, encoding='utf-8') as f:
    return f.read()


def fenced_blocks(text):
  """[(info string, body)] of the text's ``` blocks, in order."""
  return [(m.group(1).strip(), m.group(2)) for m in _FENCE.finditer(text)]


def prose(text):
  """The text without its fenced blocks (each left as one empty line)."""
  return _FENCE.sub('\n', text)


def inline_code(text):
  """The `...` spans of the prose, each joined onto one line."""
  return [' '.join(span.split())
          for span in re.findall(r'`([^`]+)`', prose(text))]


def opening_commands():
  """The commands of README.md's first fenced block, comments left out."""
  _, body = fenced_blocks(read(README))[0]
  lines = (line.split('#', 1)[0].strip() for line in body.splitlines())
  return [line for line in lines if line]


def opening_command(command):
  """`command` as README.md's opening block quotes it (an error if it does
  not), so that a test runs what the front door says."""
  commands = opening_commands()
  if command not in commands:
    raise AssertionError(f'README.md opens with {commands}, not {command!r}')
  return command


def between_markers(path, name):
  """The fenced block between `<!-- name -->` and `<!-- /name -->`."""
  text = read(path)
  start, end = f'<!-- {name} -->', f'<!-- /{name} -->'
  if start not in text or end not in text:
    raise AssertionError(f'{path} has no {start} ... {end} block')
  block = text.split(start, 1)[1].split(end, 1)[0]
  return block.strip().strip('`').strip()


def slug(heading):
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces
  to dashes."""
  return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(text):
  """The anchors of the text's headings (outside fenced blocks)."""
  return {slug(m.group(1))
          for m in re.finditer(r'^#{1,6}\s+(.*?)\s*#*\s*$', prose(text), re.M)}


def links(text):
  """The targets of the text's [...](...) links and images, outside code."""
  text = re.sub(r'`[^`]*`', '', prose(text))
  return re.findall(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)',
                    text)


def _words(line):
  """Shell words of a line, comments dropped; quoted words holding commands
  of their own (`--command "cd x && python -m ..."`) are split again."""
  words = []
  for word in shlex.split(line, comments=True):
    words.extend(shlex.split(word) if re.search(r'\s', word) else [word])
  return words


def _commands_in(line, last_module=None):
  """[(module, flags)] of each `python -m experiments.X ...` in a line; a
  line starting with `...` continues `last_module`'s command."""
  if 'experiments.' not in line and not line.lstrip().startswith('...'):
    return []
  if line.lstrip().startswith('...') and last_module:
    line = f'python -m experiments.{last_module} {line.lstrip()[3:]}'
  words = _words(line)
  out = []
  for i in range(len(words) - 2):
    if (os.path.basename(words[i]).startswith('python') and
        words[i + 1] == '-m' and words[i + 2].startswith('experiments.')):
      flags = []
      for word in words[i + 3:]:
        if word in _SEPARATORS:
          break
        word = word.strip('[]')
        if word.startswith('--'):
          flags.append(word[2:].split('=', 1)[0])
      out.append((words[i + 2].split('.', 1)[1], flags))
  return out


def commands(path):
  """[(module, flags, where)] of every `python -m experiments.X` command
  the page quotes, in fenced blocks (continued lines joined) and in inline
  code."""
  text = read(path)
  name = os.path.relpath(path, REPO)
  out = []
  for info, body in fenced_blocks(text):
    if info not in ('', 'sh', 'bash', 'shell', 'console'):
      continue
    last = None
    for line in body.replace('\\\n', ' ').splitlines():
      for module, flags in _commands_in(line, last):
        out.append((module, flags, f'{name}: {line.strip()}'))
        last = module
  for span in inline_code(text):
    for module, flags in _commands_in(span):
      out.append((module, flags, f'{name}: `{span}`'))
  return out


def make_targets(path):
  """[(target, where)] of every `make X` the page quotes in code."""
  text = read(path)
  name = os.path.relpath(path, REPO)
  lines = [line for info, body in fenced_blocks(text)
           if info in ('', 'sh', 'bash', 'shell', 'console')
           for line in body.splitlines()] + inline_code(text)
  return [(m.group(1), f'{name}: {line.strip()}') for line in lines
          for m in re.finditer(r'(?:^|[\s;&|(])make\s+([A-Za-z][\w.-]*)',
                               line.split('#', 1)[0])]
