"""Tools around a model: benchmarks, FLOP counts, ONNX export, torch.compile, visualisation."""
