"""The demo's training job, above the runtime (hal.parallel): its model, corpus and progress display.

    hal.train.progress   rank 0's view of the job: a live display (rich), a JSON-lines metrics log, a summary PNG
"""
