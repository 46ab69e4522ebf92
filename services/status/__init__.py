"""`nija status`: the mesh's health and flow, from gRPC health checks and /metrics scrapes.

members   who is in the mesh (the manifest `nija up` writes, or the default ports)
promtext  Prometheus text -> samples, counter deltas (pure)
view      two scrapes and the time between them -> the view model (pure)
probe     the I/O: health checks and /metrics scrapes, on an injectable clock
render    the view model as a rich table
"""
