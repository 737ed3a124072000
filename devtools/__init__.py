"""Development launchers, kept outside the app package: the supervisor `python3 dev.py` runs, the dev web server, the mail catcher, the local Redis and the preflight checks.

supervisor.py uses the standard library only, since dev.py imports it before the virtualenv
exists; the others run as `python -m devtools.<name>` from Procfile.dev, in the virtualenv.
"""
