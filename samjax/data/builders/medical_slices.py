"""TFDS builder of a user's data folder as 2D slices (``medical_slices/<name>``), built offline.

    python -m samjax.data.build --source DIR --name NAME --data-dir OUT

One config per data set: its name is ``NAME`` and it carries the source folder and every option of
the build, so the dataset info records how it was made. Whole cases are split into train /
validation / test by seed. The counts of ``samjax.data.slicing.Counts`` (volumes, slices, slices per
class, empty slices kept and dropped) go into the metadata, per split, with the class names and the
case ids of each split, and the ``preprocessing`` (slicing axis, channel, CT window or percentiles) that
inference on new scans repeats. Read it back without this class: ``tfds.builder_from_directory(path)``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from samjax.data import slicing
from samjax.data.sources import find_cases


@dataclasses.dataclass
class SlicesConfig(tfds.core.BuilderConfig):
    source: str = ""
    format: str = "auto"
    labeled: bool = True
    channel: int = 0
    axis: int = 2
    ct_window: tuple[float, float] | None = None
    percentiles: tuple[float, float] | None = None
    empty: str = "keep"
    empty_every: int = 10
    validation_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0


class MedicalSlices(tfds.core.GeneratorBasedBuilder):
    """2D slices (image, label, case id, slice index, spacing) of 2D files or 3D volumes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def __init__(self, *, config: SlicesConfig, **kwargs):
        if config.ct_window is not None and config.percentiles is not None:
            raise ValueError("give either a CT window or percentiles, not both")
        # Read before TFDS's constructor, which already asks for the dataset info.
        self._format, self._cases, self._class_names = find_cases(
            config.source, config.format, config.labeled, config.channel)
        self._counts: dict[str, dict] = {}
        super().__init__(config=config, **kwargs)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names or ("background", "foreground")

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "image": tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8, encoding="zlib"),
            "case": tfds.features.Text(),
            "slice": tfds.features.Scalar(dtype=np.int32),
            "spacing": tfds.features.Tensor(shape=(2,), dtype=np.float32),
        }
        if self.builder_config.labeled:
            features["label"] = tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding="zlib")
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(counts=self._counts, class_names=list(self.class_names)),
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        fractions = (c.validation_fraction, c.test_fraction) if len(self._cases) > 1 else (0.0, 0.0)
        splits = slicing.split_cases(self._cases, *fractions, c.seed)
        self.info.metadata["format"] = self._format
        # How images became uint8 slices, so inference on new scans (samjax.segment) does the same.
        self.info.metadata["preprocessing"] = {
            "axis": c.axis, "channel": c.channel, "ct_window": None if c.ct_window is None else list(c.ct_window),
            "percentiles": None if c.percentiles is None else list(c.percentiles)}
        self.info.metadata["cases"] = {split: [case.id for case in cases] for split, cases in splits.items()}
        return {split: self._generate_examples(split, cases) for split, cases in splits.items()}

    def _generate_examples(self, split: str, cases):
        c = self.builder_config
        counts = slicing.Counts()
        for case in cases:
            yield from slicing.case_examples(
                case, self._class_names, axis=c.axis, ct_window=c.ct_window, percentiles=c.percentiles,
                empty=c.empty, empty_every=c.empty_every, counts=counts)
        self._counts[split] = counts.as_dict()


def build(source: str, name: str, data_dir: str, overwrite: bool = False, **options) -> MedicalSlices:
    """Builds ``medical_slices/<name>`` from ``source`` into ``data_dir`` and returns the builder.

    ``options`` are ``SlicesConfig`` fields (``format``, ``axis``, ``ct_window``, ``empty``...).
    An existing build of the same name is reused unless ``overwrite``.
    """
    config = SlicesConfig(name=name, source=os.path.abspath(os.path.expanduser(source)), **options)
    builder = MedicalSlices(data_dir=os.path.expanduser(data_dir), config=config)
    mode = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    if overwrite:
        mode = tfds.download.GenerateMode.FORCE_REDOWNLOAD
    builder.download_and_prepare(file_format="array_record",
                                 download_config=tfds.download.DownloadConfig(download_mode=mode))
    return builder
