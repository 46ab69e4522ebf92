"""`nija bench`: the mesh's benchmark (issue 10).

Pure logic (`stats`, `targets`, `report`'s Markdown) is kept apart from what does I/O: `mesh`
(the `nija up` process tree, /proc sampling), `load` (the load generators), `echo` (the bare
grpc.aio baseline server) and `run` (the orchestration).
"""
