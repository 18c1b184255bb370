"""What runs inside a job's process, whatever backend started it.

``worker`` is the persistent loop that runs Python calls; ``payload`` packs and
unpacks calls and their results; ``abort`` is the flag a job polls to stop
cleanly. Nothing here imports the scheduler or a backend.
"""
