"""SynthAgent-style task synthesis: persona -> tool ecosystem -> underspecified request ->
solving attempts -> rubric, as a staged, resumable pipeline over the simulator."""
