"""FAKE ``neuronxcc`` for contract tests only: the installed Neuron compiler's version, nothing else.

The real package's ``__version__`` looks like ``2.21.33363.0+82129205`` (neuronx-cc of Neuron SDK 2.26.1);
``FAKE_NEURONXCC_VERSION`` overrides it.
"""

import os

IS_FAKE = True
__version__ = os.environ.get("FAKE_NEURONXCC_VERSION", "2.21.33363.0+82129205")
