"""The model, configuration and translation pipeline: section 3 and 6.1, and the Hugging Face contract."""
