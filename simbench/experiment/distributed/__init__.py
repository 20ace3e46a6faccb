"""The multi-process experiment driver of real-network mode, on top of :mod:`simbench.real`.

``node_main`` (one node process: build, meet, run, write its rows), ``launch`` (N local
processes, supervised), ``merge`` (per-node rows into a run directory), ``netns`` (Linux
network namespaces as hosts, for tests and the fidelity benchmark), ``cli`` (the
``launch``, ``node`` and ``merge`` subcommands).
"""
