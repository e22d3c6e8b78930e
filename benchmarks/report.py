"""The benchmark's printed lines and its markdown table: one row per result, with the CPU, its
vector extensions and the load average before the run in every row."""

from __future__ import annotations

from typing import Any

from inception_jax import machine


def _gib(n: int | None) -> str:
  return 'n/a' if n is None else f'{n / 2**30:.2f} GiB'


def _fmt_mfu(r: dict[str, Any]) -> str:
  achieved = f'{r["model_flops_per_s"] / 1e12:.3g} TFLOP/s model FLOPs'
  if r['mfu'] is None:
    return f'MFU n/a (peak unknown for this device; --peak_tflops) | {achieved}'
  return f'MFU {100 * r["mfu"]:.1f}% of {r["peak_flops"] / 1e12:.1f} TFLOP/s | {achieved}'


def _where(result: dict[str, Any]) -> str:
  dev = result['jax']['device']
  if dev['platform'] != 'cpu':
    return dev['device_kind']
  conv = result.get('cpu_convolutions')
  return machine.cpu_label(dev) + (f', {conv} convolutions' if conv else '')


def _load(result: dict[str, Any]) -> str:
  return f'{result["load_avg_1m_before"]:.2f}' + (' (loaded)' if result['loaded'] else '')


def _runs(r: dict[str, Any]) -> str:
  return ', '.join(f'{x:.2f}' for x in r['runs_images_per_s'])


def report_lines(result: dict[str, Any]) -> list[str]:
  j = result['jax']
  dev = j['device']
  lines = [
      f'{j["model"]} {j["mode"]} | batch {j["batch"]} at {j["image_size"]}x{j["image_size"]} '
      f'{j["dtype"]} | {_where(result)} | {result["date"]} | load average (1 min) before '
      f'{_load(result)}',
      f'  jax {dev["jax_version"]} ({dev["device_count"]} device(s)): '
      f'{j["images_per_s"]:.2f} images/s, median of {j["repeats"]} runs ({_runs(j)}; '
      f'{j["images_per_cpu_s"]:.2f} per CPU-second) | step {1e3 * j["step_time_s"]:.1f} ms | '
      f'compile {j["compile_s"]:.1f} s | peak memory {_gib(j["peak_memory_bytes"])} '
      f'({j["peak_memory_kind"]}) | {_fmt_mfu(j)}',
  ]
  for t in result.get('torch', {}).values():
    lines.append(
        f'  torch {t["device"]["torch_version"]} {t["reference"]} ({t["variant"]}, '
        f'{t["device"]["threads"]} threads): {t["images_per_s"]:.2f} images/s, median of '
        f'{t["repeats"]} runs ({_runs(t)}; {t["images_per_cpu_s"]:.2f} per CPU-second) | step '
        f'{1e3 * t["step_time_s"]:.1f} ms | first step {t["first_step_s"]:.1f} s | peak memory '
        f'{_gib(t["peak_memory_bytes"])} ({t["peak_memory_kind"]})')
  for key, ratio in result.get('ratio', {}).items():
    lines.append(f'  ratio jax / torch {key}: {ratio:.2f}x')
  return lines


HEADER = ('| model | mode | batch | size | dtype | JAX images/s (median) | JAX runs | '
          'JAX images per CPU-s | JAX compile s | JAX peak memory | MFU | PyTorch | '
          'PyTorch images/s (median) | ratio JAX/PyTorch | device | load avg 1 min before | '
          'date | command |')


def markdown_table(results: list[dict[str, Any]]) -> str:
  """One row per result (several PyTorch variants of one row separated by semicolons, in the
  order of their ratios); a row measured above the idle load says ``(loaded)``."""
  rows = [HEADER, '|' + '---|' * (HEADER.count('|') - 1)]
  for r in results:
    j, runs = r['jax'], list(r.get('torch', {}).values())
    join = lambda items: '; '.join(items) or '-'  # noqa: E731
    cells = [
        j['model'], j['mode'], j['batch'], j['image_size'], j['dtype'],
        f'{j["images_per_s"]:.2f}', _runs(j), f'{j["images_per_cpu_s"]:.2f}',
        f'{j["compile_s"]:.0f}', _gib(j['peak_memory_bytes']),
        'n/a' if j['mfu'] is None else f'{100 * j["mfu"]:.1f}%',
        join([f'{t["reference"]} ({t["variant"]}, {t["device"]["threads"]} threads)'
              for t in runs]),
        join([f'{t["images_per_s"]:.2f}' for t in runs]),
        join([f'{v:.2f}' for v in r.get('ratio', {}).values()]),
        _where(r), _load(r), r['date'], f'`{r["command"]}`']
    rows.append('| ' + ' | '.join(map(str, cells)) + ' |')
  return '\n'.join(rows) + '\n'
