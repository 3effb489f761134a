"""The STAND-IN Flamenco Worker's modules, beside its ``flamenco-worker`` command and
shipped with it: ``output`` (its log lines), ``config`` (flags, config file, data
dir, its waits), ``manager`` (the Manager's worker API: register, sign on and off)
and ``tasks`` (finding blender and ffmpeg, running a task). Standard library only,
Python 3.9: it runs on a node's bare python3."""
