"""Built-in merge methods; importing this package registers them."""

from evomerge.merge.methods import (
    arcee_fusion,
    consensus,
    fisher,
    linear,
    model_stock,
    nearswap,
    passthrough,
    ram,
    regmean,
    sce,
    slerp,
    spectral,
    task_arithmetic,
    wudi,
)

__all__ = ["arcee_fusion", "consensus", "fisher", "linear", "model_stock", "nearswap",
           "passthrough", "ram", "regmean", "sce", "slerp", "spectral", "task_arithmetic", "wudi"]
