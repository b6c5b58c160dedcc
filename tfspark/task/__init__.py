"""What runs inside a Spark barrier task: the task itself (`barrier`), its Arrow feed (`feed`, `parquet_read`),
the rendezvous (`rendezvous`), the training loop (`loop`) and its checkpoints (`checkpoint`). Never imports
`tfspark.driver`. See docs/tfspark.md.
"""
