"""The loss family at finite regularization: losses, the regularization path and gradient
descent."""
