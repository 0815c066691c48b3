"""The seeded training sample stream: data order and augmentation as a pure function of (seed, iteration).

The global sample stream is a per-epoch permutation, and every sample is augmented with its own generator seeded
by (seed, stream position). Resuming, or splitting the same global batch over several processes, therefore sees
exactly the same samples and augmentations.
"""

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from semask.configs.schema import ExperimentCfg
from semask.data.transforms import TrainTransform
from semask.errors import SemaskError


class SampleStream(Dataset):
    """Map-style view of one rank's share of the seeded global sample stream.

    Local index k (counted from iteration 0) -> iteration it = k // B, slot j = k % B -> global stream position
    (it * world + rank) * B + j -> (epoch, index into that epoch's permutation).
    """

    def __init__(
        self, dataset, transform: TrainTransform, seed: int, batch: int, rank: int, world: int
    ) -> None:
        self.dataset, self.transform = dataset, transform
        self.seed, self.batch, self.rank, self.world = seed, batch, rank, world
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return 2**62

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.dataset), generator=g))
        return self._perm[1]

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor] | SemaskError:
        """(image, label) of local index ``k``, or the :class:`SemaskError` (a bad file) its loading raised.

        The error is returned, not raised, so that it reaches the training loop as it is: a DataLoader worker's
        exception arrives re-created with the worker's traceback in its message. :func:`collate` passes it on.
        """
        it, j = divmod(k, self.batch)
        pos = (it * self.world + self.rank) * self.batch + j
        epoch, idx = divmod(pos, len(self.dataset))
        try:
            item = self.dataset[int(self._permutation(epoch)[idx])]
        except SemaskError as err:
            return err
        out = self.transform(item["image"], item["label"], rng=np.random.default_rng([self.seed, pos]))
        return out["image"], out["label"]


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor] | SemaskError:
    """``default_collate`` of a batch of :class:`SampleStream` items, or the first error among them."""
    errors = [item for item in items if isinstance(item, SemaskError)]
    return errors[0] if errors else default_collate(items)


def train_transform(cfg: ExperimentCfg) -> TrainTransform:
    d = cfg.data
    return TrainTransform(
        crop_size=d.crop_size,
        scale=d.scale,
        ratios=d.ratios,
        ratio_range=d.ratio_range,
        cat_max_ratio=d.cat_max_ratio,
        flip_prob=d.flip_prob,
        photometric=d.photometric,
        short_edges=d.short_edges,
        max_size=d.max_size,
        image_pad_value=d.image_pad_value,
    )
