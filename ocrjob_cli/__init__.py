"""`ocrjob`, the command line: a client of the storage contract, the data plane and the operator API."""
