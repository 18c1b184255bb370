"""Acting on a run from outside its driver: the control socket, the verbs it
serves, the daemon behind ``corral submit``, and what may be done with no driver."""
