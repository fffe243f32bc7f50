"""`spectra api`: spectra's methods as an OpenAI-compatible reasoning server, a door onto the run
machinery (the plans, the config builder, the scheduler and its limits, the records), not a second
engine. `contract` reads a request, `catalog` picks its method and builds its config, `service`
solves it, `replies` and `streaming` answer it, `app` speaks HTTP, `launch` is the command.
"""
