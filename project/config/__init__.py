"""Cards -> validated config: the pydantic schema, card loading, the backbone table. No TensorFlow."""
