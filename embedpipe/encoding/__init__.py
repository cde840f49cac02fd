"""From text to vectors: which model (`models`), loaded when first needed (`lazy`), where and how
it runs (`precision`, remembered per machine and model in `remembered`; OpenVINO in `openvino`,
int8 in `int8`), token-aware chunks (`chunking`), token-budget batches (`batching`), the encode
loop (`encoder`) and output quantization (`quantize`). Start-up without torch: a remembered
OpenVINO export (`torchless`) with a tokenizers-only tokenizer (`tokenizer`).

Heavy libraries (torch, transformers, OpenVINO) load only inside the functions that need them."""
