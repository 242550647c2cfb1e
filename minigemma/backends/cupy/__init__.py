"""The CuPy GPU backend (`backend`)."""
