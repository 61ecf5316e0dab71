"""Meta-datasets (numpy only), named by a spec string:

- ``double_digits``: synthetic Double NMNIST from scikit-learn's digits (64x32 sensor)
- ``glyphs``: N-Omniglot-like characters of 14 scripts from the DejaVu fonts (34x34 sensor)
- ``glyphs_broad``: the broad one: characters of 68 scripts (DejaVu and Noto fonts) and emoji
  objects, every recording under randomised conditions, with a cross-simulator "val_shift" split
- ``double_nmnist:ROOT``: Double NMNIST from an N-MNIST tree (ROOT/Train/0..9, ROOT/Test/0..9)
- ``asl_dvs:ROOT``: Double ASL-DVS from ASL-DVS .mat files
- ``folder:ROOT``: your own recordings, ROOT/<class>/<files in any supported format>
"""

from __future__ import annotations

from spikeshot.models.datasets.base import SPLITS, MetaDataset, MetaSplit, Sensor

KINDS = ("double_digits", "glyphs", "glyphs_broad", "double_nmnist", "asl_dvs", "folder")


def open_dataset(spec: str, cache_dir=None, progress: bool = True) -> MetaDataset:
    """The meta-dataset a spec string names (see the module docstring)."""
    kind, _, root = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown dataset {spec!r}: expected one of {KINDS}")
    needs_root = kind not in ("double_digits", "glyphs", "glyphs_broad")
    if needs_root != bool(root):
        form = f"{kind}:ROOT" if needs_root else kind
        raise ValueError(f"dataset {spec!r}: write it as {form}")
    if kind == "double_digits":
        from spikeshot.models.datasets.double_digits import DoubleDigits

        return DoubleDigits(cache_dir, progress=progress)
    if kind == "glyphs":
        from spikeshot.models.datasets.glyphs import Glyphs

        return Glyphs(cache_dir=cache_dir, progress=progress)
    if kind == "glyphs_broad":
        from spikeshot.models.datasets.glyphs import BROAD, Glyphs

        return Glyphs(BROAD, cache_dir=cache_dir, progress=progress)
    if kind == "double_nmnist":
        from spikeshot.models.datasets.double_nmnist import DoubleNMNIST

        return DoubleNMNIST(root)
    if kind == "asl_dvs":
        from spikeshot.models.datasets.asl_dvs import DoubleASLDVS

        return DoubleASLDVS(root)
    from spikeshot.models.datasets.folder import FolderDataset

    return FolderDataset(root)


__all__ = ["SPLITS", "KINDS", "MetaDataset", "MetaSplit", "Sensor", "open_dataset"]
