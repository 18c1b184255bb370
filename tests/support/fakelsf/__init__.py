"""A fake LSF for tests: bsub/bjobs/bkill/bstop/bresume/bparams/lsid over the
fake batch scheduler's engine (see README.md here)."""
