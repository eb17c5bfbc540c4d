"""The front door keeps its promises: README.md is short and opens with the
two set-up commands, every link in it and in docs/*.md resolves, and every
command they quote names a module, its flags and make targets that exist."""

import json
import os
import re
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

from tests import markdown

REPO = markdown.REPO
MAX_LINES = 200
OPENING_LINES = 30
# Where each command of README.md's opening block is run as written: CI's
# entry point runs `make test`; a test runs the others, reading the command
# from the README (markdown.opening_command).
RUN_BY = {'make demo': 'tests/smoke/demo_test.py', 'make test': '.ci/run'}

# Lists an absl module's flags: {name: {boolean, config}}; `config` marks a
# config_flags flag, which takes `--name.a.b=...` overrides too.
_LIST_FLAGS = r'''
import importlib, json, sys
from absl import flags
importlib.import_module(sys.argv[1])
print('FLAGS ' + json.dumps({
    name: {'boolean': flags.FLAGS[name].boolean,
           'config': type(flags.FLAGS[name]).__module__.startswith(
               'ml_collections')}
    for name in flags.FLAGS}))
'''


def quoted_commands():
  """{module: [(flags, where)]} of every `python -m experiments.X` quoted
  in README.md and docs/*.md."""
  out = {}
  for page in markdown.pages():
    for module, flags, where in markdown.commands(page):
      out.setdefault(module, []).append((flags, where))
  return out


COMMANDS = quoted_commands()


def module_exists(module):
  path = os.path.join(REPO, 'experiments', *module.split('.'))
  return (os.path.isfile(path + '.py') or
          os.path.isfile(os.path.join(path, '__main__.py')))


def makefile_targets():
  text = markdown.read(os.path.join(REPO, 'Makefile'))
  targets = set()
  for m in re.finditer(r'^([A-Za-z][\w.-]*(?:[ \t]+[A-Za-z][\w.-]*)*)[ \t]*:'
                       r'(?!=)', text, re.M):
    targets.update(m.group(1).split())
  return targets


class FrontDoorTest(absltest.TestCase):

  def test_readme_fits_on_a_few_screens(self):
    lines = markdown.read(markdown.README).splitlines()
    self.assertLessEqual(len(lines), MAX_LINES,
                         'README.md is the front door: move detail into a '
                         'guide in docs/ and link it.')

  def test_readme_opens_with_make_demo_and_make_test(self):
    text = markdown.read(markdown.README)
    head = '\n'.join(text.splitlines()[:OPENING_LINES])
    first_block = text.index('```')
    self.assertLess(text[:first_block].count('\n'), OPENING_LINES)
    for command in ('make demo', 'make test'):
      self.assertIn(command, head)
      self.assertIn(command, markdown.opening_commands())

  def test_opening_commands_are_run_as_written(self):
    commands = markdown.opening_commands()
    self.assertNotEqual(commands, [])
    for command in commands:
      with self.subTest(command=command):
        self.assertIn(command, RUN_BY,
                      f'README.md opens with {command!r}, which no test '
                      'runs: add one that reads it with '
                      'markdown.opening_command and name it in RUN_BY.')
        path = os.path.join(REPO, RUN_BY[command])
        text = markdown.read(path)
        if RUN_BY[command] == '.ci/run':
          self.assertIn(command, [line.strip() for line in text.splitlines()],
                        'CI no longer runs it')
        else:
          self.assertTrue(f'opening_command({command!r})' in text,
                          f'{RUN_BY[command]} does not read {command!r} '
                          'from README.md (markdown.opening_command)')

  def test_relative_links_and_anchors_resolve(self):
    for page in markdown.pages():
      name = os.path.relpath(page, REPO)
      for target in markdown.links(markdown.read(page)):
        if re.match(r'[A-Za-z][\w+.-]*:', target):  # http:, mailto:, ...
          continue
        with self.subTest(page=name, link=target):
          path, _, anchor = target.partition('#')
          resolved = (os.path.normpath(os.path.join(os.path.dirname(page),
                                                    path)) if path else page)
          self.assertTrue(resolved.startswith(REPO + os.sep),
                          f'{name} links outside the repository: {target}')
          self.assertTrue(os.path.exists(resolved),
                          f'{name} links to a missing file: {target}')
          if anchor:
            self.assertTrue(resolved.endswith('.md'), target)
            self.assertIn(anchor, markdown.anchors(markdown.read(resolved)),
                          f'{name}: no heading of {path or name} has the '
                          f'anchor #{anchor}')

  def test_quoted_make_targets_exist(self):
    targets = makefile_targets()
    self.assertIn('demo', targets)
    quoted = [q for page in markdown.pages()
              for q in markdown.make_targets(page)]
    self.assertIn('demo', [target for target, _ in quoted])
    for target, where in quoted:
      with self.subTest(where=where):
        self.assertIn(target, targets, f'no Makefile target {target!r}')

  def test_the_commands_are_found(self):
    # A parser that found nothing would pass every check below.
    for module in ('main', 'demo', 'bench', 'ablate', 'view', 'export'):
      self.assertIn(module, COMMANDS)
    walkthrough = markdown.between_markers(
        os.path.join(markdown.DOCS, 'captures.md'), 'walkthrough')
    self.assertIn('python -m experiments.main', walkthrough)


class QuotedCommandsTest(parameterized.TestCase):
  """Every quoted `python -m experiments.X` names a module of experiments/
  and only flags it defines (the module is imported in a subprocess and
  lists absl's flags)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.procs = {
        module: subprocess.Popen(
            [sys.executable, '-c', _LIST_FLAGS, f'experiments.{module}'],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        for module in sorted(COMMANDS) if module_exists(module)}
    cls.flags = {}
    for module, proc in cls.procs.items():
      out, err = proc.communicate(timeout=300)
      line = next((l for l in out.splitlines() if l.startswith('FLAGS ')),
                  None)
      cls.flags[module] = (json.loads(line[len('FLAGS '):]) if line
                           else err[-2000:])

  @parameterized.named_parameters(
      (module.replace('.', '_'), module) for module in sorted(COMMANDS))
  def test_module_and_flags_exist(self, module):
    quoted = COMMANDS[module]
    self.assertTrue(
        module_exists(module),
        f'experiments.{module} does not exist, but is quoted by:\n' +
        '\n'.join(where for _, where in quoted))
    defined = self.flags[module]
    self.assertIsInstance(defined, dict,
                          f'experiments.{module} does not import:\n{defined}')
    for flags, where in quoted:
      for flag in flags:
        with self.subTest(where=where, flag=flag):
          base = flag.split('.', 1)[0]
          known = (flag in defined or
                   ('.' in flag and defined.get(base, {}).get('config')) or
                   (flag.startswith('no') and
                    defined.get(flag[2:], {}).get('boolean')))
          self.assertTrue(known, f'experiments.{module} defines no --{flag}')


if __name__ == '__main__':
  absltest.main()
