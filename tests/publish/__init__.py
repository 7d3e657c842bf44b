"""Publishing: the Hub folder, the model card, exports and serving."""
