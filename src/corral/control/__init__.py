"""Acting on a run from outside its driver: the control socket a driver serves
(``server``) and what each request does to that driver (``verbs``, written against
a protocol, so this package imports nothing of the core). The daemon behind
``corral submit`` is a driver like any script: it lives in :mod:`corral.cli.daemon`.
Acting on a run whose driver is gone is the backend's (``BackendInfo.driverless_control``)."""
