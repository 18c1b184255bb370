"""The ``corral`` command: ``main`` parses and dispatches, ``views`` renders plain data."""
