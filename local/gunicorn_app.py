"""Run a Flask app factory under gunicorn from Python, with options given as a dict (no config file)."""

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
