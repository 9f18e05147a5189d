"""Parameter accounting: which parameters count towards the thesis's "# Params" unit.

Blocks name the submodules that are outside the unit (embedding tables) in an ``uncounted``
class attribute; everything else counts. Seed 000 Table 4.2 counts the CNN-BiLSTM encoder
only (533,930 parameters), not the word/char embeddings nor the task heads.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn


def _uncounted_modules(module: nn.Module) -> set[int]:
    """Ids of every submodule named in the ``uncounted`` attribute of ``module`` or its descendants."""
    excluded: set[int] = set()
    for path, owner in module.named_modules():
        for name in getattr(owner, "uncounted", ()):
            try:
                excluded.add(id(owner.get_submodule(name)))
            except AttributeError:
                # A misspelt name would silently count the embeddings: fail loudly instead.
                where = path or type(owner).__name__
                raise ValueError(
                    f"{where}: `uncounted` names {name!r}, which is not a submodule"
                ) from None
    return excluded


def _walk(
    module: nn.Module, prefix: str, excluded: set[int], seen: set[int]
) -> Iterator[tuple[str, nn.Parameter]]:
    if id(module) in excluded:
        return
    for name, param in module.named_parameters(recurse=False):
        if id(param) not in seen:  # a tied parameter counts once, as in nn.Module.parameters()
            seen.add(id(param))
            yield prefix + name, param
    for name, child in module.named_children():
        yield from _walk(child, f"{prefix}{name}.", excluded, seen)


def counted_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The (qualified name, parameter) pairs of ``module`` that count towards "# Params".

    All parameters except those under a submodule named in the ``uncounted`` attribute of
    ``module`` or of any nested module (names are relative to the module that declares them;
    dotted paths are allowed). Tied parameters appear once, under their first name.
    """
    return list(_walk(module, "", _uncounted_modules(module), set()))


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters in :func:`counted_parameters` of ``module``."""
    return sum(param.numel() for _, param in counted_parameters(module))
