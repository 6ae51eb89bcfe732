"""Run a WSGI app factory under gunicorn from Python (options as a dict, no config file), and the workers it uses."""

import logging
import os
import sys

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker


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


class KeepAliveThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, keeping connections alive between requests and still stopping at once.

    Keep-alive spares each call a TCP connect, accept and close (and a sync worker's wait for the client's FIN
    after each answer). gunicorn 26's gthread worker, though, waits at shutdown until every connection has
    closed, and an idle keep-alive connection only closes when its keep-alive timeout passes: its poller sleeps
    through the graceful timeout (30 s) when nothing else happens. On SIGTERM this worker closes its idle
    connections at once; requests in flight still finish.
    """

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        # A signal handler may interrupt the poller loop anywhere: hand the closing to the loop itself.
        self.method_queue.defer(self._close_idle_connections)

    def _close_idle_connections(self):
        for conn in (*self.keepalived_conns, *self.pending_conns):
            conn.timeout = 0
        self.murder_keepalived()
        self.murder_pending()


class OneRequestThreadWorker(KeepAliveThreadWorker):
    """A keep-alive worker that runs one request at a time (threads=1) and, like a sync worker, is replaced
    when one request runs longer than the worker timeout.

    A gthread worker's heartbeat comes from its poller loop, which goes on while a request thread hangs, so the
    master would never replace a worker stuck in a request. This one skips the heartbeat while a request runs.
    """

    _busy = False

    def handle_request(self, req, conn):
        self._busy = True
        try:
            return super().handle_request(req, conn)
        finally:
            self._busy = False

    def notify(self):
        if not self._busy:
            super().notify()


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
