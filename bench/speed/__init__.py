"""Speed under named protocols: the harness, its timers and the fp16 model."""
