"""The gRPC contract of spikeshot, version 1: ``spikeshot.proto`` and the Python code generated from
it (``spikeshot_pb2`` messages, ``spikeshot_pb2_grpc`` stubs and servicer base). The generated files
are committed; ``python -m spikeshot.v1.regenerate`` rewrites them and ``--check`` finds drift."""
