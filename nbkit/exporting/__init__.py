"""nbkit, exporting: what training produced, checked and written out: adapters, merged weights, GGUF, samples."""
