"""The client side of spikeshot: the ``spikeshot-client`` command and the code that streams event
files, folders and live cameras to a spikeshot server.

Importing this package never imports torch: a robot's client needs only numpy, grpcio, protobuf
and aedat.
"""
