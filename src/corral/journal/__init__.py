"""What a run remembers: the SQLite journal, its writer process, the one spec codec,
and the read-only view (:class:`~corral.journal.run.Run`) that ``corral status``
and ``Scheduler.open`` read."""
