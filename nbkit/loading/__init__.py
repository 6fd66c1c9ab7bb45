"""nbkit, loading: the model on the GPU (Unsloth) or the CPU (transformers + peft), and the data as written."""
