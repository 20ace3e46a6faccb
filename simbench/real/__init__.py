"""The real runtime: the same node code on OS processes and machines, over ZeroMQ.

``transport`` (sockets, HMAC framing, size limit), ``faults`` (the config's link delay,
loss and partitions at the application layer), ``runtime`` (RealRuntime), ``world``
(fault timers; RealWorld runs every node in one process for tests), ``rendezvous`` (hosts
files, torchrun/SLURM environments, the TCPStore meeting point). The driver that starts
node processes and merges their rows is :mod:`simbench.experiment.distributed`.
Algorithms never import this package.
"""
