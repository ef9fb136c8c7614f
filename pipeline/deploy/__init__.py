"""Deployment formats: ``export`` writes a student as a torch.export program or an ONNX model,
``archive`` inspects and loads an exported program before torch deserialises it."""
