"""The defaults of ``config.data``'s fields, in one place: the experiment configs start from
these tables, and the pipelines fall back on them for a config without the field. Imports
nothing, so that configs and benchmarks read it without TensorFlow."""

# TF-slim's inception_preprocessing (train: distorted bounding-box crop, resize, flip, colour
# distortion in its default fast_mode; eval: central crop of 0.875, bilinear resize), [-1, 1].
PREPROCESS = {
    'use_bboxes': True,
    'crop_area_min': 0.05,  # GoogLeNet's recipe takes 8% (experiments/configs/v1.py)
    'crop_area_max': 1.0,
    'crop_aspect_min': 3 / 4,
    'crop_aspect_max': 4 / 3,
    'crop_min_object_covered': 0.1,
    'crop_max_attempts': 100,
    'train_interpolation': 'bilinear',
    'random_interpolation': False,
    'flip': True,
    'color_distortion': 'fast',
    'normalization': 'inception',
    'eval_crop_fraction': 0.875,
    'eval_resize': 'crop_then_resize',
    'eval_resize_size': 0,
    'eval_interpolation': 'bilinear',
    'eval_antialias': False,
    'pp_train': '',
    'pp_eval': '',
}

# The synthetic dataset (inception_jax.data.synthetic): ImageNet-1k's classes and split sizes.
SYNTHETIC = {
    'synthetic_classes': 1000,
    'synthetic_train_examples': 1_281_167,
    'synthetic_eval_examples': 50_000,
}
