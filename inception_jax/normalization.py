"""Input normalisations: the pixels a set of weights expects, by name.

The one table both input paths read: the tf.data pipelines (``config.data.normalization``,
:mod:`inception_jax.data.preprocess`) and the JAX side (:mod:`inception_jax.evaluate`,
:mod:`inception_jax.predict`, converted weights' ``model.json``). Imports nothing.
"""

# Input preprocessing a set of weights expects: pixels scaled to [0, 1] (or [0, 255] with
# scale=255), optionally reordered to BGR, then (x - mean) / std; eval crop fraction and resize.
INCEPTION = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), scale=1.0, bgr=False, crop_pct=0.875,
                 interpolation='bilinear')  # TF-slim / Keras 'tf' mode: [-1, 1]
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1.0, bgr=False,
                crop_pct=0.875, interpolation='bilinear')
CAFFE_BGR = dict(mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0), scale=255.0, bgr=True,
                 crop_pct=0.875, interpolation='bilinear')  # pretrainedmodels bninception
FACENET = dict(mean=(0.5, 0.5, 0.5), std=(128 / 255,) * 3, scale=1.0, bgr=False, crop_pct=1.0,
               interpolation='bilinear')  # facenet-pytorch fixed_image_standardization
# The FID graph (TF inception-2015-12-05): (x - 128) / 128 of 0-255 values, whole image resized
# (inception_jax.fid.resize does it as each FID reference does).
FID = dict(mean=(128 / 255,) * 3, std=(128 / 255,) * 3, scale=1.0, bgr=False, crop_pct=1.0,
           interpolation='bilinear')
# By the name ``config.data.normalization`` gives them.
NORMALIZATIONS = {'inception': INCEPTION, 'imagenet': IMAGENET, 'caffe_bgr': CAFFE_BGR,
                  'facenet': FACENET, 'fid': FID}

# The names ``config.data.normalization`` accepts (the FID graph's is for inception_jax.fid).
CONFIG_NAMES = ('inception', 'imagenet', 'caffe_bgr', 'facenet')
