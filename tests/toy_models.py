"""The toy network the learning tests share: one spiking conv layer of 8 channels on 8x8 inputs,
3 ways, fast traces, no burn-in (vary it with ``dataclasses.replace``)."""

from spikeshot.models import ModelConfig

TOY = ModelConfig(
    ways=3,
    input_hw=(8, 8),
    bins=4,
    burn_in=0,
    channels=(8,),
    kernel=3,
    alpha=0.5,
    beta=0.3,
    input_gain=1.0,
)
