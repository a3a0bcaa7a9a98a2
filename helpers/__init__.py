"""Shared code for the federated learning course: import the submodule you need.

runtime  - environment check, seeds, TFF execution context (its worker dies with the kernel)
data     - bundled/real federated digits, ArrayClientData, partitioners, preprocessing, label statistics
models   - Keras model builders and `model_fn` factories
training - round loop with client sampling, progress bar, metrics history and evaluation
plotting - digit grids, label histograms, mean images, metric curves
"""
