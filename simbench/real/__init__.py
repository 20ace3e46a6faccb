"""Real-network mode: the same node code on OS processes and machines, over ZeroMQ.

``transport`` (sockets, HMAC framing, size limit), ``faults`` (the config's link delay,
loss and partitions at the application layer), ``runtime`` (RealRuntime), ``world``
(per-node seeds and fault timers; RealWorld runs every node in one process for tests),
``rendezvous`` (hosts files, torchrun/SLURM environments, the TCPStore meeting point),
``node_main`` (one node process), ``launch`` (N local processes), ``merge`` (per-node rows
into a run directory), ``netns`` (namespaces as hosts for tests), ``cli`` (subcommands).
Algorithms never import this package.
"""
