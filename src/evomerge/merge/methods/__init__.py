"""Built-in merge methods; importing this package registers them."""

from evomerge.merge.methods import (
    arcee_fusion,
    linear,
    model_stock,
    nearswap,
    passthrough,
    ram,
    sce,
    slerp,
    task_arithmetic,
)

__all__ = ["arcee_fusion", "linear", "model_stock", "nearswap", "passthrough", "ram", "sce",
           "slerp", "task_arithmetic"]
