"""Research ablations: sweeps of config variants over paired seeds (:mod:`.runner`), their
report with confidence intervals (:mod:`.report`), and SLURM through submitit (:mod:`.slurm`).
Config files declare sweeps with the helpers re-exported here."""

from inception_jax.sweep.runner import chain, product, zipped

__all__ = ['chain', 'product', 'zipped']
