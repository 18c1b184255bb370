"""The driver's side of a run: the scheduler facade, its control loop and what it decides.

``scheduler`` is what users call; ``engine`` is the one thread that changes a
job after it is submitted; ``graph``, ``packing``, ``resume`` and ``identity``
are the decisions it asks for (when a job may start, where it fits, whether a
journal already holds its result, what makes two jobs the same).
"""
