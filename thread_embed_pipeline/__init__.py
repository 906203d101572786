"""ThreadEmbed Pipeline: chat in, a chat-native Matryoshka embedding model, its evaluation and search out.

The packages follow the data (docs/architecture.md): ``sources`` → ``corpus`` → ``text`` → ``pairs`` →
``training`` → ``evaluation`` → ``search`` → ``release`` → ``disentanglement``, with ``orchestration``
(the Dagster layer) and ``definitions`` on top, and ``schemas``, ``storage``, ``versioning`` and
``models`` shared by all.

Module paths of 0.5 that moved in 0.6 still import (and ``python -m`` still runs them) through
:data:`MOVED_MODULES`, with a ``DeprecationWarning``; they go in 0.7 (CHANGELOG.md).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

__version__ = "0.6.0"

# old module path (0.5) -> where it lives now; the old name is the same module object, not a copy
MOVED_MODULES: dict[str, str] = {
    f"{__name__}.{old}": f"{__name__}.{new}"
    for old, new in {
        "batching": "training.batching",
        "launch_training": "training.launch",
        "hard_negatives": "pairs.hard_negatives",
        "model_card": "release.card",
        "onnx_export": "release.onnx",
        "message_index": "search.message_index",
        "evaluate": "evaluation.cli",
        "external_eval_registry": "evaluation.registry",
        "disentangle": "disentanglement",
        "evaluation.disentanglement": "disentanglement.metrics",
        "summary": "orchestration.summary",
    }.items()
}
# what ``python -m <old>`` runs, where that is not the module itself
_MOVED_PROGRAMS = {f"{__name__}.disentangle": f"{__name__}.disentanglement.cli"}


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def create_module(self, spec):
        warnings.warn(f"{self.old} moved to {self.new} in 0.6; the old path goes in 0.7", DeprecationWarning, stacklevel=3)
        return importlib.import_module(self.new)

    def exec_module(self, module) -> None:
        sys.modules[self.old] = module  # already executed under its new name

    def get_code(self, fullname: str):
        """For ``python -m <old path>``: the program's code (runpy runs it as ``__main__``)."""
        program = _MOVED_PROGRAMS.get(self.old, self.new)
        spec = importlib.util.find_spec(program)
        return spec.loader.get_code(program)

    def is_package(self, fullname: str) -> bool:
        return False


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(fullname, new))


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())
