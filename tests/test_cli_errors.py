"""Every entry point answers a user's mistake in one line that names the fix, and shows what it
will do before doing it (``--dry_run``).

Each case runs the real command line in a subprocess, as a user types it, and checks the exit
status, that the output is exactly one line, and what that line says. Most cases fail before JAX
or TensorFlow is imported (the config, workdir and data checks), so each costs about a second.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str, env: dict | None = None, timeout: float = 300):
  proc = subprocess.run([sys.executable, '-m', *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env={**os.environ, **(env or {})})
  return proc


def _one_line(proc, *fix: str, status: int = 1) -> str:
  """The single line ``proc`` printed, checked: ``FATAL: ...``, the exit status, and that it
  contains each of ``fix``."""
  out = (proc.stdout + proc.stderr).strip().splitlines()
  assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr[-3000:])
  assert len(out) == 1, out[-40:]
  assert out[0].startswith('FATAL: '), out[0]
  for part in fix:
    assert part in out[0], (part, out[0])
  return out[0]


# ------------------------------------------------------------------------ experiments.train

@pytest.mark.parametrize('config,fix', [
    ('v5.py', ['no such config file', 'v1.py', 'xception.py', 'inception_resnet_v2.py']),
    ('v1', ['config files end in .py', '--config=v1.py']),
    ('v1.py:quik', ["unknown config argument 'quik'", '":quick"']),
])
def test_train_config_name_mistakes(tmp_path, config, fix):
  proc = _run('experiments.train', f'--config={config}', f'--workdir={tmp_path / "w"}')
  _one_line(proc, *fix)
  assert not (tmp_path / 'w').exists()


def test_train_workdir_that_is_a_file_or_under_one(tmp_path):
  (tmp_path / 'file').write_text('x')
  _one_line(_run('experiments.train', '--config=v1.py:quick', f'--workdir={tmp_path / "file"}'),
            'is a file, not a directory')
  # Under a file no directory can be made, for root too (chmod does not stop root).
  proc = _run('experiments.train', '--config=v1.py:quick',
              f'--workdir={tmp_path / "file" / "run"}')
  _one_line(proc, f'{tmp_path / "file"} is a file', 'give a workdir elsewhere')
  assert (tmp_path / 'file').read_text() == 'x'


def test_train_tfds_dataset_not_prepared(tmp_path):
  proc = _run('experiments.train', '--config=v1.py:quick', '--config.data.name=cifar10',
              f'--config.data.data_dir={tmp_path}', f'--workdir={tmp_path / "w"}')
  _one_line(proc, 'cifar10', 'not prepared', '--config.data.download=True',
            f'tfds build cifar10 --file_format=array_record --data_dir={tmp_path}')
  assert not (tmp_path / 'w').exists()


def test_train_image_folder_without_the_eval_split(tmp_path):
  from PIL import Image
  for split in ('train', 'val'):
    for label in ('ant', 'bee'):
      os.makedirs(tmp_path / 'photos' / split / label)
      Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
          tmp_path / 'photos' / split / label / 'a.png')
  proc = _run('experiments.train', '--config=v1.py:quick',
              f'--config.data.name=imagefolder:{tmp_path / "photos"}',
              f'--workdir={tmp_path / "w"}')  # v1.py:quick evaluates on 'test'
  _one_line(proc, "config.data.eval_split='test'", "['train', 'validation']",
            '--config.data.eval_split=validation')


def test_train_dry_run_prints_the_summary_and_stops_before_compiling(tmp_path):
  proc = _run('experiments.train', '--config=v1.py:quick', f'--workdir={tmp_path / "w"}',
              '--dry_run', '--config.optimizer.lr=0.05', '--config.batch_size=64',
              f'--compilation_cache={tmp_path / "cache"}', env={'JAX_LOG_COMPILES': '1'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  # The overrides, and nothing else, differ from the file's values.
  assert 'config (differs from v1.py:quick): batch_size=64, optimizer.lr=0.05\n' in out
  # 1438 digits at 64 a step, 4 epochs: 90 steps; the rate scales with the batch (lr_batch 32).
  assert 'steps: 90 (4.01 epochs of 22.5 steps)' in out
  assert 'peak 0.1 (= 0.05 x 64 / 32)' in out
  devices = int(re.search(r'^devices: (\d+) ', out, re.M).group(1))
  assert f'batch: 64 global, {64 // devices} per device' in out
  assert 'EMA: 0.9998 per step (0.9999 per 32 images)' in out  # 0.9999 ** (64 / 32)
  assert not (tmp_path / 'w').exists() and not (tmp_path / 'cache').exists()
  assert 'Compiling' not in proc.stderr and 'compiling' not in proc.stderr, proc.stderr[-2000:]


def test_evaluate_missing_weights(tmp_path):
  proc = _run('experiments.evaluate', '--config=v1.py:quick', f'--weights={tmp_path / "none"}',
              '--dry_run')
  _one_line(proc, f'{tmp_path / "none"}: no such directory', 'python -m inception_jax.convert')


# ------------------------------------------------------------------ python -m inception_jax.*

def test_convert_missing_garbage_and_existing(tmp_path):
  out = str(tmp_path / 'out')
  base = ('inception_jax.convert', '--model', 'inception_v3', '--source', 'timm')
  _one_line(_run(*base, '--weights', str(tmp_path / 'none.pth'), '--out', out),
            'none.pth: no such weights file')
  (tmp_path / 'garbage.safetensors').write_bytes(b'not a safetensors file at all')
  _one_line(_run(*base, '--weights', str(tmp_path / 'garbage.safetensors'), '--out', out),
            'garbage.safetensors: not a readable safetensors file')
  os.makedirs(tmp_path / 'taken')
  (tmp_path / 'taken' / 'keep').write_text('x')
  _one_line(_run(*base, '--weights', str(tmp_path / 'none.pth'), '--out',
                 str(tmp_path / 'taken')), 'exists; choose a new directory')
  assert os.listdir(tmp_path / 'taken') == ['keep']
  _one_line(_run('inception_jax.convert', '--model', 'inception_v9', '--source', 'timm',
                 '--weights', str(tmp_path / 'garbage.safetensors'), '--out', out),
            "unknown model 'inception_v9'", 'inception_v3')
  assert not os.path.exists(out) and not os.path.exists(out + '.partial')


def test_convert_another_architecture_and_a_pickled_model(tmp_path):
  torch = pytest.importorskip('torch')
  torchvision = pytest.importorskip('torchvision')
  from safetensors.numpy import save_file
  googlenet = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
  state = {k: np.zeros(tuple(v.shape), np.float32) for k, v in googlenet.state_dict().items()
           if v.is_floating_point()}
  save_file(state, str(tmp_path / 'googlenet.safetensors'))
  proc = _run('inception_jax.convert', '--model', 'inception_v3', '--source', 'torchvision',
              '--weights', str(tmp_path / 'googlenet.safetensors'), '--out', str(tmp_path / 'o'))
  line = _one_line(proc, f'of {len(state)} keys match; it looks like inception_v1',
                   '--model inception_v1 --source torchvision')
  assert int(re.search(r'inception_v3: (\d+) of', line).group(1)) <= 2, line  # fc only
  assert len(line) < 400, line  # a summary, not a list of the 287 keys
  # The right flags: one line saying what was written (orbax's INFO logging stays quiet).
  proc = _run('inception_jax.convert', '--model', 'googlenet', '--source', 'torchvision',
              '--weights', str(tmp_path / 'googlenet.safetensors'), '--out', str(tmp_path / 'v1'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (proc.stdout + proc.stderr).strip().splitlines() == [
      f'wrote inception_v1 (torchvision weights, 1000 classes) to {tmp_path / "v1"}']
  assert sorted(os.listdir(tmp_path / 'v1')) == ['model.json', 'variables']
  torch.save(torch.nn.Linear(2, 2), tmp_path / 'model.pth')  # the whole module, pickled
  proc = _run('inception_jax.convert', '--model', 'inception_v3', '--source', 'torchvision',
              '--weights', str(tmp_path / 'model.pth'), '--out', str(tmp_path / 'o'))
  _one_line(proc, 'torch.nn.modules.linear.Linear', 'torch.save(model.state_dict(), PATH)',
            'safetensors')
  assert not (tmp_path / 'o').exists()


def test_predict_missing_weights_and_usage_errors(tmp_path):
  _one_line(_run('inception_jax.predict', '--weights', str(tmp_path / 'none'), 'a.jpg'),
            f'{tmp_path / "none"}: no such directory', 'python -m inception_jax.convert')
  # argparse's own errors are one line too, with exit status 2.
  _one_line(_run('inception_jax.predict', 'a.jpg'), '--weights', 'see --help', status=2)


# ------------------------------------------------------------------------------------- help

ABSL_HELP = ('import sys, importlib\n'
             'from absl import flags\n'
             'importlib.import_module(sys.argv[1])\n'
             'fl = [f for m in ("experiments.cli", sys.argv[1])\n'
             '      for f in flags.FLAGS.get_flags_for_module(m)]\n'
             'print(len(fl), sorted(f.name for f in fl if not (f.help or "").strip()))')


@pytest.mark.parametrize('module,count', [('experiments.train', 10), ('experiments.evaluate', 8),
                                          ('experiments.recipes_table', 6)])
def test_every_absl_flag_has_help(module, count):
  proc = subprocess.run([sys.executable, '-c', ABSL_HELP, module], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split(' ', 1) == [str(count), '[]\n'], proc.stdout


def test_every_argparse_flag_has_help(monkeypatch):
  """Each argparse entry point's parser, as its main builds it: every argument has a help line
  (or is hidden on purpose), and --verbose is there."""
  import importlib

  from inception_jax import entry
  parsers = []

  def capture(self, args=None, namespace=None):
    parsers.append(self)
    raise SystemExit(0)

  monkeypatch.setattr(entry.ArgumentParser, 'parse_args', capture)
  modules = ['inception_jax.convert.__main__', 'inception_jax.predict',
             'inception_jax.models.__main__',
             'inception_jax.compile_benchmark', 'inception_jax.data.benchmark',
             'inception_jax.fid.benchmark', 'benchmarks.throughput', 'benchmarks.convolutions',
             'benchmarks.gpu']
  for name in modules:
    with pytest.raises(SystemExit):
      importlib.import_module(name).main([])
  assert len(parsers) == len(modules)
  for parser in parsers:
    options = {o for a in parser._actions for o in a.option_strings}
    assert '--verbose' in options, parser.prog
    lacking = [a.option_strings or a.dest for a in parser._actions if not a.help]
    assert not lacking, (parser.prog, lacking)
    # One flag style: underscores; a dashed spelling only as an alias of an underscored one.
    for action in parser._actions:
      long = [o for o in action.option_strings if o.startswith('--')]
      if long:
        assert '-' not in long[0][2:], (parser.prog, long)
