"""Two image tasks on generated 16x16 images: where a bright square is, and its size."""

import torch

from mtlrun.data.custom import SharedTensors, TaskTensors

QUADRANTS = ["top left", "top right", "bottom left", "bottom right"]
SIZES = ["small", "large"]


def squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n images (n, 1, 16, 16) in [0, 1], the square's quadrant (n,) and its size (n,)."""
    g = torch.Generator().manual_seed(seed)
    quadrant = torch.randint(0, 4, (n,), generator=g)
    large = torch.randint(0, 2, (n,), generator=g)
    images = torch.rand(n, 1, 16, 16, generator=g) * 0.3
    for i in range(n):
        side = 7 if large[i] else 3
        top, left = 8 * int(quadrant[i] // 2), 8 * int(quadrant[i] % 2)
        images[i, 0, top : top + side, left : left + side] = 1.0
    return images, quadrant, large


def make_tasks(n_train: int = 300, n_eval: int = 60, seed: int = 0) -> dict[str, TaskTensors]:
    """Each task on its own images (one input stream per task)."""
    sizes = {"train": n_train, "valid": n_eval, "test": n_eval}
    where = {s: squares(n, seed + k) for k, (s, n) in enumerate(sizes.items())}
    big = {s: squares(n, seed + 10 + k) for k, (s, n) in enumerate(sizes.items())}
    return {
        "quadrant": TaskTensors(**{s: (x, q) for s, (x, q, _) in where.items()}, classes=QUADRANTS),
        "size": TaskTensors(**{s: (x, b) for s, (x, _, b) in big.items()}, classes=SIZES),
    }


def make_shared(n_train: int = 300, n_eval: int = 60, seed: int = 0) -> SharedTensors:
    """Both tasks label the same images (one shared input)."""
    sizes = {"train": n_train, "valid": n_eval, "test": n_eval}
    splits = {s: squares(n, seed + k) for k, (s, n) in enumerate(sizes.items())}
    return SharedTensors(
        **{s: (x, {"quadrant": q, "size": b}) for s, (x, q, b) in splits.items()},
        classes={"quadrant": QUADRANTS, "size": SIZES},
    )
