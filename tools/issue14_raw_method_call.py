"""Issue 14's failure on demand: TFF's metric methods reached through their raw TfMethodTarget binding.

The failing traceback of issue 14 shows TFF's `_KerasModel.reset_metrics` running as plain Python with
`self` = TF's `TfMethodTarget` stand-in while `build_weighted_fed_avg` traced `client_update`. Run as a
script (or with runpy), this file makes every such call take that path, so the failure happens every
time instead of about once in tens of fresh kernels:

    .venv/bin/python tools/repeat_notebook_prefix.py notebooks/01_data_heterogeneity.ipynb \
        --until build_weighted_fed_avg --runs 3 \
        --before-last "import runpy; runpy.run_path('../tools/issue14_raw_method_call.py', run_name='__main__')"

Without `helpers.runtime.forward_method_target_attributes` (installed by `runtime.setup`) every run
fails with "'TfMethodTarget' object has no attribute 'get_metrics'"; with it, none does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

METHODS = ('reset_metrics', 'report_local_unfinalized_metrics')  # Those that call self.get_metrics().


def raw_calling(converted_call: Callable) -> Callable:
    """Return AutoGraph's `converted_call`, except that it calls TFF's metric methods' raw bindings."""
    from tensorflow.python.eager.polymorphic_function.tf_method_target import TfMethodTarget

    def call(f, args, kwargs, caller_fn_scope=None, options=None):
        if inspect.ismethod(f) and isinstance(f.__self__, TfMethodTarget) and f.__name__ in METHODS:
            return f(*args, **(kwargs or {}))  # As the failing traceback shows: self = the stand-in.
        return converted_call(f, args, kwargs, caller_fn_scope, options)

    return call


if __name__ == '__main__':
    from tensorflow.python.autograph.impl import api

    api.converted_call = raw_calling(api.converted_call)
