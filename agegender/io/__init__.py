"""Step 1 of the pipeline, input: images (:mod:`.images`, with the size and format limits of :mod:`.limits`) and
videos (:mod:`.video`, decode and encode). Everything a visitor or a script hands over is checked here before any
native decoder sees it."""
