"""Publishing: the model card, the model folder's exports (Marian, CTranslate2) and serving."""
