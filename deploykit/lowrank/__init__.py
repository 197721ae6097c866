"""Low-rank factorisation of convolutions and linear layers: rank planning, then SVD or Tucker-2
factorised layers (tensorly), replayable from a per-layer record."""

from deploykit.lowrank.factorize import (
    apply_plans,
    factorise,
    rebuild,
    svd_conv,
    svd_linear,
    tucker2_conv,
)
from deploykit.lowrank.plan import (
    LayerPlan,
    conv_macs,
    eligible_layers,
    factorised_macs,
    linear_macs,
    plan_layers,
    rank_for_energy,
)

__all__ = [
    "LayerPlan",
    "apply_plans",
    "conv_macs",
    "eligible_layers",
    "factorise",
    "factorised_macs",
    "linear_macs",
    "plan_layers",
    "rank_for_energy",
    "rebuild",
    "svd_conv",
    "svd_linear",
    "tucker2_conv",
]
