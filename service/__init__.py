"""The server: engine, gRPC servicer, metrics, configuration and the `spikeshot` command."""
