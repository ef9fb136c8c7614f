"""Teachers of any architecture behind one contract: RGB in [0, 1] in, depth in metres out.

``load`` parses a ``KIND:TARGET`` spec and runs the teacher; ``hf`` adapts a transformers
depth-estimation model, ``onnx`` an ONNX model run by onnxruntime.
"""
