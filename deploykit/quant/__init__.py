"""INT8 quantization: schemes, calibrators, fake-quant modules, graph preparation, sensitivity.

One design serves PTQ and QAT: the model is traced with torch.fx, BatchNorm is folded into the
convolution it follows, and fake-quant modules are placed on the inputs of every quantized
conv/linear and of residual additions. PTQ only calibrates them; QAT then fine-tunes through
them (straight-through gradients). For export the same modules emit explicit
QuantizeLinear/DequantizeLinear (int8 weight initializers) through the dynamo ONNX exporter.
"""
