"""`make bench`: the pipeline and the runner measured beside their peers, in one run."""
