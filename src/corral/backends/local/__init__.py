"""The local backend: persistent worker processes on this machine, packed by cores,
memory and GPUs."""
