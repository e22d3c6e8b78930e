"""inception_jax: the Inception family of image classifiers in JAX/Flax.

Importing this package (or ``inception_jax.models``) imports neither TensorFlow nor PyTorch.
"""

__version__ = '0.1.0'
