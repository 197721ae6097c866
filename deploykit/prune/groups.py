"""A bound on the size of torch-pruning's pruning groups.

torch-pruning forms a group by following every dependency of a layer's channels until no new
(layer, channel indices) pair appears. Where slices of one tensor are added to another and
concatenated back, block after block (ReXNet's partial residual,
``torch.cat([y[:, :c] + x, y[:, c:]], 1)``), each pass produces index sets not seen before, and
the group grows exponentially with depth: for ``rexnet_100`` it passed 20,000 entries in half
a minute and, left alone, ran for hours. A legitimate group stays within a fraction of the
graph's size (about 0.4x its nodes on the torchvision models, e.g. 198 entries for
densenet201's 712 nodes), so :func:`bounded_groups` stops a group at twenty times the model's
module count, within seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["GroupsDoNotClose", "bounded_groups", "group_limit"]


class GroupsDoNotClose(Exception):
    """A pruning group grew past :func:`group_limit` entries without closing."""

    def __init__(self, limit: int, root: str):
        self.limit, self.root = limit, root
        super().__init__(f"the pruning group of {root} grew past {limit:,} entries without "
                         "closing (channel slices added and concatenated block after block, as "
                         "in ReXNet's partial residual, multiply torch-pruning's index sets)")


def group_limit(model: nn.Module) -> int:
    """The most entries a pruning group of ``model`` may hold: 20x its modules, at least 2,000."""
    return max(2000, 20 * sum(1 for _ in model.modules()))


@contextlib.contextmanager
def bounded_groups(limit: int) -> Iterator[None]:
    """While active, a torch-pruning group that grows past ``limit`` entries raises
    :class:`GroupsDoNotClose` (naming the group's root layer) instead of growing on."""
    from torch_pruning.dependency.group import Group

    original = Group.add_dep

    def add_dep(self: Group, dep: object, idxs: object) -> None:
        if len(self._group) >= limit:
            root = self._group[0].dep.target if self._group else dep.target
            raise GroupsDoNotClose(limit, getattr(root, "_name", None) or str(root))
        original(self, dep, idxs)

    Group.add_dep = add_dep
    try:
        yield
    finally:
        Group.add_dep = original
