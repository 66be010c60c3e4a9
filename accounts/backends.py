from axes.backends import AxesStandaloneBackend
from axes.handlers.database import AxesDatabaseHandler


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' lockout check for log-ins that come with a request.

    Every log-in over HTTP (the log-in page, the admin's) passes its request.
    An authenticate() without one comes from code (the test client's login(),
    a shell) and has no address to throttle: django-axes would raise; this
    leaves it to ModelBackend.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class RequestOptionalAxesHandler(AxesDatabaseHandler):
    """django-axes' database handler, for log-ins and log-outs that come without a request.

    Channels' login() and logout() send the auth signals with request=None,
    which the stock handler dereferences; there is no address to record then.
    """

    def user_logged_in(self, sender, request, user, **kwargs):
        if request is not None:
            super().user_logged_in(sender, request, user, **kwargs)

    def user_logged_out(self, sender, request, user, **kwargs):
        if request is not None:
            super().user_logged_out(sender, request, user, **kwargs)
