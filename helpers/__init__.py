"""Shared code for the federated learning course: import the submodule you need.

runtime        - environment check, seeds, TFF execution context (its worker dies with the kernel)
data           - bundled/real federated digits, ArrayClientData, partitioners, preprocessing, label statistics
models         - Keras model builders, `model_fn` factories, the hand-written SoftmaxRegression VariableModel
training       - round loop with client sampling, progress bar, metrics history and evaluation
plotting       - digit grids, label histograms, mean images, metric curves
program        - tff.program plumbing: TensorBoard/CSV release, federated evaluation, resumable training
clipped_fedavg - FedAvg with client-side gradient clipping composed from TFF's building blocks
aggregators    - clipping aggregators that report the clipping norm and client-update norms
client_weights - processes that return every client's update; local weights, similarity, export
compression    - per-variable encoders, byte-counting encoded aggregation and broadcast
own_data       - your own CSV or image folder as ClientData, validated; Dirichlet re-partition
privacy        - DP-FedAvg: the DP clip in the metrics, epsilon with dp_accounting, cohort for a target epsilon
"""
