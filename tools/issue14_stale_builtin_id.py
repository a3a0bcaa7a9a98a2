"""Issue 14's failure on demand, by its cause: a TF method binding placed at the id of a freed builtin.

TF 2.14 records `id()` of every value in `builtins` when it is imported (AutoGraph's
`inspect_utils._BUILTIN_FUNCTION_IDS`) and later takes any object with one of those ids for a
builtin, which AutoGraph calls unconverted. In a Jupyter kernel, `builtins.input` is a new bound
method during each cell and is freed when the cell ends, so the id recorded for the cell that imported
TF goes stale; a later object of the same size can get it. When that object is the method TF binds to
a `TfMethodTarget` inside a tf.function method, TFF's `reset_metrics` runs with that stand-in as `self`:
"'TfMethodTarget' object has no attribute 'get_metrics'". The allocator does this by chance, rarely;
this file makes it likely, with real memory and TF's own record of ids:

1. import TF while `builtins.input` holds a bound method, as ipykernel arranges for each cell (and,
   for more chances, while 3 more builtins names hold one each);
2. put the original `input` back (and remove the others), which frees those methods, as ipykernel
   does at the end of the cell;
3. take the freed memory with objects of the same size ("pins");
4. when TF next binds TFF's `reset_metrics` or `report_local_unfinalized_metrics` to a model, free a
   pin just before, so that TF's new method object takes that memory and its stale id.

The allocator does not always give TF that memory: `Trigger.landed` counts the bindings that got a
stale id, out of `Trigger.releases` tries. Run it first in a kernel, before the notebook imports TF
(the `--prelude` of `tools/repeat_notebook_prefix.py`, with `--after` printing the counts):

    .venv/bin/python tools/repeat_notebook_prefix.py notebooks/01_data_heterogeneity.ipynb \
        --until build_weighted_fed_avg --runs 3 \
        --prelude "import runpy; runpy.run_path('../tools/issue14_stale_builtin_id.py', run_name='__main__')" \
        --after "import builtins; t = builtins._issue14_trigger; print('landed', t.landed, 'of', t.releases)"

Without `helpers.runtime.ignore_dead_builtin_ids` (installed by `runtime.setup`) a run in which TF
landed fails in the cell that calls `build_weighted_fed_avg`; with it, none does.
`tests/test_runtime.py` uses `Trigger` in-process.
"""

from __future__ import annotations

import builtins
import gc
import sys
import time
import types

METHODS = ('reset_metrics', 'report_local_unfinalized_metrics')  # TFF's methods that call get_metrics().


class _Owner:
    """Owns the bound methods this file allocates; a bound method of it has the size of ipykernel's."""

    def method(self) -> None:
        """Do nothing."""


POOL_SIZE = 16 * 1024  # CPython 3.11's pymalloc pool on 64-bit Linux (`sys._debugmallocstats()`).


def _fill_pool(address: int, owner: _Owner) -> list[types.MethodType]:
    """Return new method objects that fill the allocator's pool holding `address` up to its last block.

    pymalloc puts a pool back at the front of its list of pools with room when a block is freed in
    it while it was full, so the next object of this size then gets the freed block. New objects come
    from the front pool: allocate until one comes from the pool holding `address` and a later one
    from another pool, i.e. until that pool is full.
    """
    pool = address // POOL_SIZE
    filler, seen = [], False
    for _ in range(300_000):
        filler.append(types.MethodType(_Owner.method, owner))
        if id(filler[-1]) // POOL_SIZE == pool:
            seen = True
        elif seen:
            break
    return filler


class Trigger:
    """Frees builtins values TF has recorded and gives their memory to TF's next metric-method bindings."""

    def __init__(self, stale: int = 4) -> None:
        self.owner = _Owner()
        self.stale = stale  # How many recorded ids to make stale: more give TF more chances to land.
        self.stale_ids: set[int] = set()
        self.pins: dict[int, types.MethodType] = {}  # Stale id -> our method that holds its memory.
        self.landed = 0  # How many TF bindings got a stale id.
        self.releases = 0  # How many times a pin was freed for one.
        self._originals = None
        self._saved: tuple[float, bool] | None = None
        self._filler: list | None = None

    def record(self, recorded_ids: frozenset | None = None) -> frozenset:
        """Put new bound methods in builtins, record ids as TF does (or import TF), then free them."""
        saved = builtins.input
        names = [f'_issue14_stale_{k}' for k in range(1, self.stale)]
        builtins.input = self.owner.method  # As ipykernel's `_forward_input` does for a cell.
        for name in names:  # More of the same, for more chances.
            setattr(builtins, name, self.owner.method)
        self.stale_ids = {id(builtins.input)} | {id(getattr(builtins, name)) for name in names}
        if recorded_ids is None:
            from tensorflow.python.autograph.pyct import inspect_utils  # Records the ids on first import.

            recorded_ids = inspect_utils._BUILTIN_FUNCTION_IDS
        else:  # TF is already imported: the set its import would have recorded now.
            recorded_ids = recorded_ids | frozenset(id(v) for v in vars(builtins).values())
        builtins.input = saved  # As `_restore_input` does when the cell ends: the method is freed.
        for name in names:
            delattr(builtins, name)
        if not self.stale_ids <= recorded_ids:
            raise RuntimeError('TF was imported before this trigger ran: run it before the first TF import.')
        self._pin()
        return recorded_ids

    def _pin(self) -> None:
        """Take the memory at each free stale id with a bound method of our own, so nothing else takes it."""
        kept = []  # Methods that landed elsewhere stay alive, so the allocator moves on.
        for _ in range(100_000):
            if len(self.pins) == len(self.stale_ids):
                return
            candidate = types.MethodType(_Owner.method, self.owner)
            if id(candidate) in self.stale_ids:
                self.pins[id(candidate)] = candidate
            else:
                kept.append(candidate)
        # Long-lived objects took the others' memory: fewer chances are left.

    def install(self) -> None:
        """Wrap TF's method binding so that TFF's metric methods are bound in pinned memory."""
        from tensorflow.python.eager.polymorphic_function import polymorphic_function, tf_method_target

        self._originals = (polymorphic_function.class_method_to_instance_method,
                           tf_method_target.TfMethodTarget.__init__)
        original_bind, original_init = self._originals
        trigger = self

        def init(target, weak_instance, python_function):
            # TF builds `MethodType(python_function, TfMethodTarget(...))`: this runs just before the
            # MethodType is allocated (polymorphic_function.py, lines 1662-1665).
            original_init(target, weak_instance, python_function)
            if trigger.pins and python_function.__name__ in METHODS:
                # Until `bind` returns, hold off thread switches (a kernel has several threads) and
                # garbage collection, which could allocate in between.
                trigger._saved = sys.getswitchinterval(), gc.isenabled()
                sys.setswitchinterval(1000.0)
                gc.disable()
                # Short tuples have the same size. Filling CPython's free lists of them lets TF's call
                # take its argument tuple from there, so that the MethodType is the next object of
                # this size.
                spare = [(i, i) for i in range(100)] + [(i, i, i) for i in range(100)]
                del spare
                stale_id = next(iter(trigger.pins))
                trigger._filler = _fill_pool(stale_id, trigger.owner)
                del trigger.pins[stale_id]  # Frees the memory at the stale id.
                trigger.releases += 1

        def bind(original_function, instance):
            bound = original_bind(original_function, instance)
            if trigger._saved is not None:
                interval, collecting = trigger._saved
                trigger._saved = trigger._filler = None
                sys.setswitchinterval(interval)
                if collecting:
                    gc.enable()
            if id(bound.__wrapped__) in trigger.stale_ids:  # __wrapped__: the MethodType on a TfMethodTarget.
                trigger.landed += 1
            return bound

        polymorphic_function.class_method_to_instance_method = bind
        tf_method_target.TfMethodTarget.__init__ = init

    def uninstall(self) -> None:
        """Put TF's method binding back and let go of the pins."""
        from tensorflow.python.eager.polymorphic_function import polymorphic_function, tf_method_target

        if self._originals is not None:
            (polymorphic_function.class_method_to_instance_method,
             tf_method_target.TfMethodTarget.__init__) = self._originals
            self._originals = None
        self.pins.clear()


if __name__ == '__main__':
    _trigger = Trigger()
    _trigger.record()
    _trigger.install()
    builtins._issue14_trigger = _trigger  # Kept alive for the rest of the kernel, and inspectable.
