"""Run a Flask app factory under gunicorn from Python, with options given as a dict (no config file)."""

import logging
import os
import sys

from gunicorn.app.base import BaseApplication


class _FactoryApplication(BaseApplication):
    def __init__(self, app_factory, options):
        self._factory = app_factory
        self._options = options
        super().__init__()

    def load_config(self):
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        # Called in each worker after the fork (no preload), so each worker builds its own app and model.
        return self._factory()


def run_gunicorn(app_factory, options):
    """Start gunicorn's master; it forks the workers, replaces any that die and returns on SIGTERM/SIGINT."""
    # gunicorn 26's control socket has one default path per user: two servers would fight over it, and nothing
    # here uses it.
    _FactoryApplication(app_factory, {"control_socket_disable": True, **options}).run()


def exit_worker_now(server, worker):
    """gunicorn `worker_exit` hook: end the worker process without interpreter teardown.

    With torch loaded, Python's teardown takes seconds (measured 2-5 s on 2 busy cores) after the worker has
    already finished its requests, which is what made stopping the endpoint slow. The exit status gunicorn
    chose (3 = failed to boot, which stops the master from respawning forever) is kept.
    """
    pending = sys.exc_info()[1]
    if isinstance(pending, SystemExit):
        code = pending.code if isinstance(pending.code, int) else (0 if pending.code is None else 1)
    else:
        code = 0 if pending is None else 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_master_now(server):
    """gunicorn `on_exit` hook: the same for the master, which imported torch to share it with its workers.

    gunicorn calls it from halt(), inside the handler of what stopped the server; a HaltServer carries the
    exit status gunicorn would use.
    """
    pending = sys.exc_info()[1]
    code = getattr(pending, "exit_status", 0) or 0
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
