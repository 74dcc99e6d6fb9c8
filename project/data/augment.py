"""Augmentation: the card's list of albumentations transforms as one `A.Compose`.

albumentations is pinned to 2.0.8, its last MIT release; NO_ALBUMENTATIONS_UPDATE stops it
from checking for a newer version at import.
"""

import os
import warnings

from project.errors import UserError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def build_augmentation(transforms, strength=1.0, seed=None, source="paper card"):
    """An A.Compose from [{'name': 'HorizontalFlip', 'p': 0.5}, ...], or None for an empty list.

    `strength` (0..1, searchable) scales every transform's probability `p`.
    """
    if not transforms:
        return None
    import albumentations as A

    built = []
    for i, spec in enumerate(transforms):
        params = dict(spec)
        name = params.pop("name")
        cls = getattr(A, name, None)
        if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform):
            raise UserError(
                f"{source}: augmentation.{i}.name: unknown albumentations transform {name!r} "
                f"(see albumentations 2.0.8's list of transforms, e.g. HorizontalFlip, Affine, RandomResizedCrop)"
            )
        params["p"] = float(params.get("p", _default_p(cls))) * strength
        try:
            with warnings.catch_warnings():  # albumentations only warns about unknown arguments
                warnings.filterwarnings("error", message=".*not valid for transform.*")
                built.append(cls(**params))
        except Exception as error:  # albumentations validates arguments with pydantic
            message = str(error).splitlines()
            raise UserError(
                f"{source}: augmentation.{i} ({name}): invalid arguments {spec}: {' '.join(message[:3])}"
            ) from None
    return A.Compose(built, seed=seed)


def _default_p(cls):
    import inspect

    default = inspect.signature(cls.__init__).parameters.get("p")
    return 1.0 if default is None or default.default is inspect.Parameter.empty else default.default
