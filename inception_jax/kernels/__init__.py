"""The CPU forms of the model layer's operations: convolutions whose gradients take the forms
XLA:CPU's libraries run fastest (:mod:`.conv`), pooling with max pooling's gradient as taps
(:mod:`.pool`), and BatchNorm's training function with its own gradient (:mod:`.batch_norm`).

Functions of arrays and static settings only: nothing here knows an architecture or a weights'
origin, or reads the process' settings. Which form runs where there is a choice is an argument
(``cpu_convolutions``), which the entry points pass to the models
(:func:`inception_jax.machine.set_cpu_convolutions`). On other backends every function keeps
JAX's own rules, chosen when lowered.
"""
