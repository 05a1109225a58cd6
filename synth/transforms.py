"""MONAI transforms (the engine's only MONAI/torch adapter; imported lazily by ``synth``).

``RandSynthesizeAnomaly`` (array) and ``RandSynthesizeAnomalyd`` (dictionary, with
``D``/``Dict`` aliases) draw one seed per call from MONAI's ``self.R``, so
``set_random_state`` and MONAI's per-worker seeding (``monai.data.DataLoader``)
make pipelines reproducible; the record of every sample is kept.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping

from monai.transforms import MapTransform, RandomizableTransform

from .api import synthesize
from .config import SynthesisConfig

_LAYOUT = {3: "CHW", 4: "CDHW"}


def _layout(image) -> str:
    if image.ndim not in _LAYOUT:
        raise ValueError(f"MONAI transforms take channel-first images (C, H, W) or (C, D, H, W); "
                         f"got shape {tuple(image.shape)}")
    return _LAYOUT[image.ndim]


class RandSynthesizeAnomaly(RandomizableTransform):
    """Array transform: ``(image, foreground=None, source=None) -> (anomalous image, mask)``.

    With probability ``prob`` a task is drawn from the pool (see ``SynthesisConfig``);
    otherwise the identity task runs (empty mask). The record of the last call is in
    ``last_record``.

    Example:
        >>> import numpy as np
        >>> from synth import RandSynthesizeAnomaly
        >>> t = RandSynthesizeAnomaly(prob=1.0)
        >>> _ = t.set_random_state(seed=0)
        >>> image, mask = t(np.random.default_rng(0).random((1, 64, 64), dtype=np.float32))
        >>> image.shape, mask.shape
        ((1, 64, 64), (1, 64, 64))
    """

    def __init__(self, prob: float = 1.0, config: SynthesisConfig | None = None, task: str | None = None):
        RandomizableTransform.__init__(self, prob)
        self.config = config
        self.task = task
        self.last_record = None
        self._seed = 0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._seed = int(self.R.randint(0, 2 ** 31 - 1))

    def __call__(self, img, foreground=None, source=None, randomize: bool = True):
        if randomize:
            self.randomize()
        task = self.task if self._do_transform else "identity"
        result = synthesize(img, rng=self._seed, foreground=foreground, source=source, layout=_layout(img),
                            config=self.config, task=task)
        self.last_record = result.record
        return result.image, result.mask


class RandSynthesizeAnomalyd(RandomizableTransform, MapTransform):
    """Dictionary transform: replaces ``data[key]`` with the anomalous image and adds the
    mask (``gt_mask``), the image label (``gt_label``: 1 when the mask is not empty) and
    the record as JSON (``synthesis_record``), anomalib's field names.

    Example:
        >>> import numpy as np
        >>> from synth import RandSynthesizeAnomalyd
        >>> t = RandSynthesizeAnomalyd(keys="image", foreground_key="foreground")
        >>> sample = {"image": np.random.default_rng(0).random((1, 64, 64), dtype=np.float32),
        ...           "foreground": np.ones((1, 64, 64), bool)}
        >>> out = t(sample)
        >>> sorted(out)
        ['foreground', 'gt_label', 'gt_mask', 'image', 'synthesis_record']
    """

    def __init__(self, keys="image", foreground_key: str | None = None, source_key: str | None = None,
                 mask_key: str = "gt_mask", label_key: str = "gt_label", record_key: str = "synthesis_record",
                 prob: float = 1.0, config: SynthesisConfig | None = None, task: str | None = None,
                 allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if len(self.keys) != 1:
            raise ValueError(f"RandSynthesizeAnomalyd synthesises one image key; got {list(self.keys)}")
        self.array = RandSynthesizeAnomaly(prob=1.0, config=config, task=task)
        self.foreground_key = foreground_key
        self.source_key = source_key
        self.mask_key = mask_key
        self.label_key = label_key
        self.record_key = record_key

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.array.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.array.randomize()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            foreground = d.get(self.foreground_key) if self.foreground_key else None
            source = d.get(self.source_key) if self.source_key else None
            task = self.array.task
            if not self._do_transform:
                self.array.task = "identity"
            try:
                image, mask = self.array(d[key], foreground=foreground, source=source, randomize=False)
            finally:
                self.array.task = task
            d[key] = image
            d[self.mask_key] = mask
            record = self.array.last_record
            d[self.label_key] = int(record.has_anomaly)  # the mask is empty exactly for identity
            d[self.record_key] = record.to_json()
        return d


RandSynthesizeAnomalyD = RandSynthesizeAnomalyDict = RandSynthesizeAnomalyd
