"""The learning core (torch): the SNN and ANN baseline, surrogate spike, quantizers, MAML,
meta-datasets, checkpoints; ``zoo/`` holds the shipped meta-trained initialisations."""

from spikeshot.models.config import ModelConfig
from spikeshot.models.maml import adapt
from spikeshot.models.network import Network
from spikeshot.models.quantize import Quantizer

__all__ = ["ModelConfig", "Network", "Quantizer", "adapt"]
