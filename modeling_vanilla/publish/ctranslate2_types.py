"""The CTranslate2 types the commands offer: `vanilla-export --quantization` (how the weights are stored) and
`vanilla-translate --compute-type` (what the computation runs in). Apart from publish/serving.py, which imports torch,
so that the commands list them in `--help` without importing it."""

QUANTIZATIONS = ("int8", "int8_float32", "float16", "bfloat16")  # what `--quantization` offers
COMPUTE_TYPES = ("default", "float32", "int8", "int8_float32", "float16", "bfloat16", "int8_float16", "int8_bfloat16")
