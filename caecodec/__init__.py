"""caecodec: the course's image codec, a convolutional autoencoder with real files.

Layers, from the bottom (each imports only those above it in this list):

* ``errors``, ``paths``: the one exception type; where models and data live.
* ``fileio``, ``formats``, ``entropy``, ``photo_context``, ``metrics``, ``bdrate``, ``mnist``,
  ``images``, ``classic``: bytes, files, numbers and pictures. No Keras: reading a ``.cae`` header
  (``cae info``) never starts TensorFlow.
* ``backend``: Keras and TensorFlow, imported once and quietly.
* ``keras_layers``, ``models``, ``modelio``, ``training``: networks, saving and training.
* ``digit_codec``, ``pca``, ``photo_codec``, ``codec_training``: the codecs and their training.
* ``files``, ``cli``: the user's path, image file -> ``.cae`` -> image file, and the
  ``cae`` command (``python -m caecodec``).
* ``compare``, ``photo_eval``, ``matched``, ``plots``, ``rd_plots``, ``app``: comparisons
  with the classic codecs, figures and the classroom app.

``tests/test_package.py`` checks this order (no import cycles) and the import limits.
Importing ``caecodec`` itself imports none of the modules.
"""
__version__ = "1.0.0"
